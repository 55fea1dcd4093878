"""The conversion as a plain Beam main program: `python -m imagenet_beam.beam_main --flags`.

What Airflow's BeamRunPythonPipelineOperator (and Dataflow tooling) run: flags only, the
same flags as `python -m imagenet_beam convert`. Everything but the `error:` line is
written to stdout (see `cli.output_to_stdout`). With `--setup_file` (Dataflow), the package
the workers install is built from a private copy of its directory (see `dataflow.py`).
"""

import sys

from imagenet_beam.cli import (
    configure_logging,
    convert_main,
    limit_malloc_arenas,
    output_to_stdout,
    take_debug_flag,
)
from imagenet_beam.dataflow import private_setup_file

if __name__ == "__main__":
    output_to_stdout()  # what the Beam operator logs as INFO, as it comes
    args, debug = take_debug_flag(sys.argv[1:])
    configure_logging(debug)
    limit_malloc_arenas()
    with private_setup_file(args) as argv:
        code = convert_main(argv)
    sys.exit(code)
