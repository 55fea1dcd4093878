"""`python -m imagenet_beam {convert,generate}`: the command line other tools rely on."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TextIO

from imagenet_beam import dataset
from imagenet_beam.errors import (
    DATA_ERROR_EXIT,
    RUNNER_ERROR_EXIT,
    DataError,
    RunnerError,
    from_os_error,
)

_debug = False  # --debug: tracebacks as they are
_errors: TextIO | None = None  # where the `error:` line goes (`output_to_stdout`)

USAGE = """usage: python -m imagenet_beam COMMAND [flags]

commands:
  convert   ILSVRC 2012 tarballs → DATA_DIR/imagenet2012/5.1.0/ (TFRecord or ArrayRecord):
            checks the archives, merges the test patch, converts, publishes, verifies;
            says so and does nothing when the published version is up to date
            python -m imagenet_beam convert --manual_dir=DIR --data_dir=OUT \\
                --splits=train,validation,test --file_format=tfrecord|array_record \\
                [--verify_checksums=true|false] [--test_patch=NAME] [--num_shards=N] \\
                [--on_corrupt=fail|skip] [--force] [--overwrite] \\
                [--runner=DirectRunner --direct_running_mode=multi_processing \\
                 --direct_num_workers=2 ...]
            (`convert --help` lists every flag; standard Beam options pass through)
  publish   --data_dir=OUT [--staging_dir=DIR]: make splits converted with --stage_only
            visible (every shard read back and hashed, TFDS metadata, lineage.json,
            then one rename)
  verify    VERSION_DIR: check shards against lineage.json, load and decode through TFDS
  report    VERSION_DIR [--output=DIR]: write report.html and report.png (samples, class
            histogram, sizes, fixed/skipped images, archives) for a published version,
            ours or TFDS's own build; every conversion writes one
  submission  --predictions=FILE --output=FILE --data_dir=OUT [--split=test|validation]
            [--devkit=ILSVRC2012_devkit_t12.tar.gz] [--numbering=devkit|tfds]: the test
            server's file (five 1-indexed class ids per image, in file-number order) from
            predictions (.csv file_name,p1..p5 / .jsonl / .npz; TFDS labels or wnids)
  score     FILE --data_dir=OUT --split=validation [--devkit=PATH]: top-1 and top-5 error
            of a validation submission, to check its numbering before a test submission
  check-submission  FILE [--data_dir=OUT] [--split=test|validation]: a submission's shape
  generate  write a small ImageNet-shaped manual dir: image-net.org's tarballs, or with
            --layout=imagefolder|kaggle|kaggle-packed|huggingface another copy's layout
            (`generate --help`; --devkit adds ILSVRC2012_devkit_t12.tar.gz, --bboxes the
            bounding-box archives ILSVRC2012_bbox_train_v2.tar.gz, ILSVRC2012_bbox_val_v3.tgz)
"""

DEBUG_FLAG = "--debug"


def _summary(record) -> str:
    lines = []
    for split, info in sorted(record.splits.items(), key=lambda kv: dataset.SPLITS.index(kv[0])):
        lines.append(
            f"{split}: {info.num_examples} examples in {info.num_shards} shard(s), "
            f"{info.num_bytes} bytes"
        )
    lines.append(f"fixed images: {len(record.fixed_images)}, "
                 f"skipped images: {len(record.skipped_images)}")
    return "\n".join(lines)


def split_args(argv: Sequence[str]) -> tuple[dict, list[str]]:
    """(our settings' flags as given, everything else: Beam's own pipeline options)."""
    import argparse

    from imagenet_beam import settings

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    settings.add_arguments(parser)
    ours, rest = parser.parse_known_args(list(argv))
    return {k: v for k, v in vars(ours).items() if v is not None}, rest


DASK_FLAG_PREFIX = "--dask_"


def beam_option_names(dask: bool = False) -> set[str]:
    """Every flag of Beam's own pipeline options (runner, Dataflow, workers...); dask: the
    DaskRunner's too (their module costs most of a second to import, so only when asked)."""
    import argparse

    from apache_beam.options.pipeline_options import PipelineOptions

    if dask:
        import imagenet_beam.dask_runner  # noqa: F401 - its options and Beam's DaskOptions

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    parser = argparse.ArgumentParser(add_help=False, conflict_handler="resolve")
    for options in set(subclasses(PipelineOptions)):
        options._add_argparse_args(parser)
    return {name for action in parser._actions for name in action.option_strings}


def unknown_flags(beam_args: Sequence[str]) -> str | None:
    """A message naming each flag that is neither ours nor Beam's (Beam would drop it
    silently), with the nearest known name; None when all are known."""
    import difflib

    from imagenet_beam import settings

    dask = [a for a in beam_args if a.startswith(DASK_FLAG_PREFIX)]
    try:
        known = beam_option_names(dask=bool(dask))
    except ImportError as e:
        return (f"{dask[0].split('=', 1)[0]} is the DaskRunner's, whose packages are not "
                f"installed ({e}): pip install 'imagenet-beam[dask]'")
    ours = {f"--{name}" for s in settings.SETTINGS for name in (s.name, *s.aliases)}
    problems = []
    for arg in beam_args:
        name = arg.split("=", 1)[0]
        if not name.startswith("--") or name in known:
            continue
        close = difflib.get_close_matches(name, sorted(ours | known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"unknown flag {name}{hint}")
    if not problems:
        return None
    return "; ".join(problems) + ". `python -m imagenet_beam convert --help` lists the flags."


def convert_main(argv: Sequence[str]) -> int:
    from imagenet_beam import pipeline, run

    if "--help" in argv or "-h" in argv:
        pipeline.ConvertOptions(["--help"])
        return 0
    try:
        given, beam_args = split_args(argv)
        unknown = unknown_flags(beam_args)
        if unknown:
            raise run.ConvertError(unknown)
        settings = run.settings_from(given)
        if settings.stage_only:
            # A DAG run's convert task names its run (the lease is the run's, across its
            # tasks); alone, staging holds the lease for this process only.
            from imagenet_beam import lease

            runner = run.check_runner(settings, beam_args)
            inputs = run.find_inputs(settings)
            run_id = settings.run_id or run.new_run_id()
            with run.holding_lease(
                run.output_layout(settings), run_id, process_bound=not settings.run_id,
                ttl=lease.DATAFLOW_TTL_SECONDS if "dataflow" in runner.lower() else None,
            ):
                staging = run.stage(
                    settings.replace(run_id=run_id), run.conversion_inputs(inputs, None),
                    beam_args,
                )
            print(f"staged {','.join(settings.splits)} in {staging}")
            return 0
        outcome = run.convert(settings, beam_args)
    except RunnerError as e:  # a retry may mend it: not DATA_ERROR_EXIT
        if _debug:
            raise
        print(f"error: {e}", file=_errors or sys.stderr)
        return RUNNER_ERROR_EXIT
    except (run.ConvertError, DataError, OSError) as e:
        error = from_os_error(e, "the output") if isinstance(e, OSError) else e
        if _debug or error is None:
            raise
        print(f"error: {error}", file=_errors or sys.stderr)
        return DATA_ERROR_EXIT
    if outcome.up_to_date:
        print(outcome.reason)
        return 0
    print(f"wrote {outcome.version_dir}")
    print(_summary(outcome.lineage))
    for note in outcome.lineage.warnings:
        print(f"note: {note}")
    return 0


def publish_main(argv: Sequence[str]) -> int:
    import argparse

    from imagenet_beam import layout, run, settings
    from imagenet_beam.layout import OutputLayout

    parser = argparse.ArgumentParser(prog="python -m imagenet_beam publish")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--staging_dir", default=None)
    for name in ("dataset", "schema"):  # which output was staged
        setting = settings.BY_NAME[name]
        parser.add_argument(f"--{name}", default=setting.default, choices=setting.choices,
                            help=setting.help)
    args = parser.parse_args(argv)
    output = OutputLayout(args.data_dir, layout.output_for(args.dataset, args.schema))
    try:
        with run.holding_lease(output, run.new_run_id(), process_bound=True):
            record = run.publish(
                args.data_dir, args.staging_dir, output=output.output, overwrite=True,
                read_back=True,
            )
    except run.ConvertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {output.version_dir}")
    print(_summary(record))
    return 0


def verify_main(argv: Sequence[str]) -> int:
    from imagenet_beam import metadata, verify

    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m imagenet_beam verify DATA_DIR/imagenet2012/5.1.0", file=sys.stderr)
        return 2
    try:
        summary = verify.verify_output(argv[0])
    except (verify.VerificationError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"verified {summary['version_dir']}: every shard matches lineage.json, TFDS loads it")
    by_split = sorted(summary["splits"].items(), key=lambda kv: dataset.SPLITS.index(kv[0]))
    for split, facts in by_split:
        print(f"  {split}: {facts['num_examples']} examples, {facts['num_shards']} shard(s), "
              f"first image {facts.get('first_image_shape')}")
    print(f"  fixed images: {summary['fixed_images']}, skipped: {summary['skipped_images']}")
    lineage = metadata.read_lineage(argv[0])
    for split, source in sorted(lineage.inputs.items()):
        print(f"  input {split}: {source['path']} ({source['size']:,} bytes)")
    for archive in lineage.archives:
        print(f"  archive {archive['name']}: sha256 {archive['sha256']}")
    if lineage.test_patch:
        replaced = lineage.test_patch["replaced"]
        print(f"  test patch: {len(replaced)} image(s) replaced: {', '.join(replaced)}")
    if lineage.airflow:
        print(f"  Airflow run: {lineage.airflow['dag_id']} {lineage.airflow['run_id']}")
    return 0


def _submission_command(name: str, argv: Sequence[str]) -> int:
    """submission, score, check-submission (`imagenet_beam.submission`): one `error:` line
    and DATA_ERROR_EXIT on bad input."""
    import argparse

    from imagenet_beam import submission

    parser = argparse.ArgumentParser(prog=f"python -m imagenet_beam {name}")
    if name == "submission":
        parser.add_argument("--predictions", required=True,
                            help=".csv (file_name,p1,...,p5), .jsonl or .npz predictions")
        parser.add_argument("--output", required=True, help="the submission file to write")
    else:
        parser.add_argument("file", help="a submission file (five class ids per line)")
    parser.add_argument("--data_dir", required=name != "check-submission",
                        help="the TFDS data_dir holding the published version")
    splits = [dataset.VALIDATION] if name == "score" else list(submission.SUBMISSION_SPLITS)
    parser.add_argument("--split", choices=splits, default=splits[0])
    if name != "check-submission":
        parser.add_argument("--devkit", default=None,
                            help="ILSVRC2012_devkit_t12.tar.gz (local or gs://)")
    if name == "submission":
        parser.add_argument("--numbering", choices=submission.NUMBERINGS, default=None,
                            help="devkit (ILSVRC2012_ID; the default with --devkit) or tfds "
                            "(1 + TFDS label), never guessed")
    args = parser.parse_args(argv)
    try:
        if name == "submission":
            written = submission.make_submission(
                args.predictions, args.output, args.data_dir, args.split, args.devkit,
                args.numbering,
            )
            print(f"wrote {written.path}: {written.num_lines} lines, one per {written.split} "
                  f"image in file-number order; {written.described}")
        elif name == "score":
            result = submission.score(args.file, args.data_dir, args.split, args.devkit)
            print(f"scored {result.num_images} {args.split} images against {result.ground_truth}")
            print(f"top-1 error: {submission.percent(result.top1_error)}")
            print(f"top-5 error: {submission.percent(result.top5_error)}")
        else:
            lines = submission.check_submission(args.file, args.data_dir, args.split)
            print(f"{args.file}: {lines} lines of five distinct class ids in 1..1000, one per "
                  f"{args.split} image (which numbering it uses cannot be seen from it: score "
                  "a validation submission made the same way)")
    except (DataError, OSError) as e:
        if _debug:
            raise
        print(f"error: {e}", file=_errors or sys.stderr)
        return DATA_ERROR_EXIT
    return 0


M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Keeps memory flat as shards go by.

    glibc gives each writer thread its own heap, and the ~110 KB image buffers freed there
    are kept: peak memory then grows with the number of shards (measured: +110 MiB from 10k
    to 40k images, +57 MiB with two arenas). No effect where the C library is not glibc.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass


def output_to_stdout() -> None:
    """Every line of this process on stdout but the `error:` line and a traceback.

    Airflow's Beam operator logs the launcher's stdout as INFO and its stderr as WARNING,
    and reads whichever stream has output first to its end before the other: lines on
    both would show their levels wrong, and those on the second arrive only when the
    process exits. So stderr (fd 2, also what Beam's and TensorFlow's C++ write to) joins
    stdout, and what says the run failed goes to the original stderr, last.
    """
    global _errors
    sys.stdout.flush()
    sys.stderr.flush()
    _errors = os.fdopen(os.dup(2), "w", buffering=1)
    os.dup2(1, 2)
    sys.stdout.reconfigure(line_buffering=True)

    def report(kind, value, tb) -> None:
        traceback.print_exception(kind, value, tb, file=_errors)

    sys.excepthook = report


def configure_logging(debug: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stdout if _errors is not None else None,
    )
    for noisy in ("apache_beam", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Except what a Dataflow launch says: the job id ("Created job with id: [...]", which
    # Airflow's Beam operator reads from this output to follow the job) and the console URL.
    logging.getLogger("apache_beam.runners.dataflow").setLevel(logging.INFO)
    # Relays every worker process's own log lines in multi_processing mode.
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)


def take_debug_flag(argv: Sequence[str]) -> tuple[list[str], bool]:
    """(argv without --debug, whether it was given): --debug shows every traceback."""
    global _debug
    argv = list(argv)
    _debug = DEBUG_FLAG in argv
    return [a for a in argv if a != DEBUG_FLAG], _debug


def main(argv: Sequence[str] | None = None) -> int:
    argv, debug = take_debug_flag(sys.argv[1:] if argv is None else argv)
    configure_logging(debug)
    limit_malloc_arenas()
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "convert":
        return convert_main(rest)
    if command == "publish":
        return publish_main(rest)
    if command == "verify":
        return verify_main(rest)
    if command == "report":
        from imagenet_beam import report

        return report.main(rest)
    if command in ("submission", "score", "check-submission"):
        return _submission_command(command, rest)
    if command == "generate":
        from imagenet_beam import synthetic

        return synthetic.main(rest) or 0
    print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
