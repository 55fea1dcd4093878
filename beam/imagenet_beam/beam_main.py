"""The conversion as a plain Beam main program: `python -m imagenet_beam.beam_main --flags`.

What Airflow's BeamRunPythonPipelineOperator (and Dataflow tooling) run: flags only, the
same flags as `python -m imagenet_beam convert`.
"""

import sys

from imagenet_beam.cli import configure_logging, convert_main, limit_malloc_arenas

if __name__ == "__main__":
    configure_logging()
    limit_malloc_arenas()
    sys.exit(convert_main(sys.argv[1:]))
