"""One conversion, step by step: the API both front doors call.

    find_inputs → check_archives → merge_test_patch → unpack_archives → up_to_date → stage
    → publish → verify

(on a first run, with nothing cached or published, check_archives runs beside the steps
from merge_test_patch to stage, and publish waits for it)

The command line's `convert` runs every step (`convert`); the Airflow DAG runs them in a few
tasks (retries, the graph and the UI show them apart: the checks beside the merge, the
unpacking and the plan), with the Beam job (`stage`) launched by the Beam operator, for
every split at once on the DirectRunner, per split on a cluster. Each step takes the run's
`Settings` and what the steps before it returned; what crosses a task boundary has
`to_dict`/`from_dict`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from imagenet_beam import dataset, layout, sources, storage
from imagenet_beam import lease as leases
from imagenet_beam import publish as publication
from imagenet_beam.errors import DataError, from_os_error
from imagenet_beam.layout import Output, OutputLayout, StagingLayout, shard_file_format
from imagenet_beam.settings import Settings, SettingsError
from imagenet_beam.sources import SplitInput
from imagenet_beam.sources.archive_checks import ArchiveCheck

log = logging.getLogger(__name__)


class ConvertError(ValueError):
    """Bad input or settings; the message says what is wrong and what to do."""


# --- where the output goes ------------------------------------------------------------


def output_of(settings: Settings) -> Output:
    """What the run publishes: its `dataset` in its `schema` (see `layout.OUTPUTS`)."""
    return layout.output_for(settings.dataset, settings.schema)


def output_layout(settings: Settings) -> OutputLayout:
    return OutputLayout(settings.data_dir, output_of(settings))


# --- refuse before any work ------------------------------------------------------------


def _within(path: str, directory: str) -> bool:
    """Whether `path` is `directory` or below it (local paths resolved, links followed)."""
    if storage.is_remote(path) or storage.is_remote(directory):
        return (path.rstrip("/") + "/").startswith(directory.rstrip("/") + "/")
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def check_paths(settings: Settings) -> None:
    """Refuses, before anything is read or written, folders whose output would land on or
    replace the inputs, and a version directory holding files no conversion wrote."""
    output = output_layout(settings)
    written = {
        "version directory": output.version_dir,
        "staging directory": output.staging_dir,
        "replaced version": output.replaced_dir,
        "work directory": output.run_work_dir,
    }
    manual = settings.manual_dir
    for what, path in written.items():
        if _within(manual, path):
            raise ConvertError(
                f"manual_dir {manual} is inside the output's {what} {path}, which a "
                "conversion writes and replaces: keep the archives in a folder of their own, "
                "outside DATA_DIR/imagenet2012 and DATA_DIR/.imagenet2012-work"
            )
        if _within(path, manual):
            raise ConvertError(
                f"data_dir {settings.data_dir} puts the output's {what} {path} inside "
                f"manual_dir {manual}, where it would be mixed with the inputs: choose a "
                "data_dir outside the manual directory"
            )
    try:  # with overwrite, only files that no conversion wrote are refused
        publication.refuse_to_replace(output.version_dir, overwrite=True)
    except publication.PublishError as e:
        raise ConvertError(str(e)) from None


def check_runner(settings: Settings, beam_args: Sequence[str]) -> str:
    """The runner's name (a supported one as `runners` spells it), refused before any work
    when it names no runner, when it runs on remote workers and a folder is a local path,
    or, for a running Dask cluster, when its scheduler does not answer (a RunnerError) or
    its workers do not see manual_dir."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from imagenet_beam import runners

    options = PipelineOptions(list(beam_args))
    given = options.view_as(StandardOptions).runner or runners.DEFAULT.name
    try:
        runner = runners.check(given, tuple(StandardOptions.KNOWN_RUNNER_NAMES))
    except runners.UnknownRunner as e:
        raise ConvertError(str(e)) from None
    if runner is None:
        log.info("--runner=%s is none of the runners this conversion is tested on (%s)",
                 given, ", ".join(runners.NAMES))
    name = runner.name if runner else given
    if runner is runners.DATAFLOW or "dataflow" in name.lower():
        local = [f"--{k}={v}" for k, v in (("manual_dir", settings.manual_dir),
                                           ("data_dir", settings.data_dir))
                 if not storage.is_remote(v)]
        if local:
            raise ConvertError(
                f"--runner={name} reads and writes on Dataflow's workers: "
                f"{' and '.join(local)} must be gs:// paths"
            )
    if runner is runners.DASK:
        _check_dask_cluster(options, [settings.manual_dir])
    return name


def _check_dask_cluster(options, folders: Sequence[str], say: bool = True) -> None:
    """A running Dask cluster answers and its workers see the local `folders`."""
    from imagenet_beam import dask_runner

    local = [f for f in folders if not storage.is_remote(f)]
    try:
        said = dask_runner.check_cluster(options, local)
    except ValueError as e:
        raise ConvertError(str(e)) from None
    if said and say:
        log.info("converting on %s", said)


# --- one writer per version ------------------------------------------------------------


def new_run_id() -> str:
    """A command line run's id (a DAG run has its own)."""
    return f"cli-{os.getpid()}-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def holding_lease(
    output: OutputLayout, run_id: str, *, process_bound: bool, ttl: float | None = None
) -> Iterator[Any]:
    """The version's lease (see `lease`) for a block of work: refused at once, naming the
    holder, when another run has it. A process-bound lease (a command line run) is released
    at the end; a DAG run's task only stops renewing it (the run's last task releases it,
    `release_lease`)."""
    lease = leases.Lease(
        output.lease_file, run_id, process_bound=process_bound, ttl=ttl
    )
    try:
        lease.acquire()
    except DataError as e:  # held by another run; an output place that cannot be written
        raise ConvertError(str(e)) from None
    try:
        yield lease
    finally:
        if process_bound:
            lease.release()
        else:
            lease.stop_renewing()


def release_lease(settings: Settings, run_id: str) -> str:
    """A DAG run's end: removes its staging directory (gone already when it published: a
    failed conversion leaves nothing behind) and the version its publication replaced,
    then releases its lease. What it did, as a line; nothing when the lease is no longer
    the run's (it expired and was taken over)."""
    lease = leases.Lease(output_layout(settings).lease_file, run_id, process_bound=False)
    try:
        lease.acquire()
    except leases.LeaseHeld as e:
        return f"not releasing the lease, it is no longer this run's: {e}"
    lease.stop_renewing()
    said = f"released {lease.path}"
    staging = staging_dir(settings)
    if storage.list_files(staging):
        storage.delete_tree(staging)
        said = f"removed this run's unpublished staging directory {staging}; " + said
    replaced = output_layout(settings).replaced_dir
    if not storage.is_remote(replaced) and os.path.isdir(replaced):
        storage.delete_tree(replaced)
        said = f"removed the version this run's publication replaced ({replaced}); " + said
    lease.release()
    return said


# --- find the inputs -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What each requested split is converted from, each in its input layout."""

    manual_dir: str
    splits: dict[str, SplitInput]
    devkit: str | None = None  # the ILSVRC devkit, when manual_dir has it (optional)

    @property
    def paths(self) -> list[str]:
        """Every archive the run reads, once each: what the archive checks cover."""
        paths = {p for split_input in self.splits.values() for p in split_input.paths}
        return sorted(paths | ({self.devkit} if self.devkit else set()))

    @property
    def layouts(self) -> dict[str, str]:
        """split → the name of its input layout."""
        return {split: s.layout for split, s in self.splits.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "manual_dir": self.manual_dir,
            "splits": {split: s.to_dict() for split, s in self.splits.items()},
            "devkit": self.devkit,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Inputs:
        splits = {split: SplitInput.from_dict(s) for split, s in d["splits"].items()}
        return cls(d["manual_dir"], splits, d.get("devkit"))


def look_for_inputs(settings: Settings) -> tuple[Inputs, str | None]:
    """(what was found, None) when every requested split's input is there, else (what
    was found, a message listing everything missing with the instructions of the layouts
    manual_dir looks like). Each split is looked for in every layout (or in `layout`);
    one split in two layouts is refused."""
    try:
        found, missing = sources.find(
            settings.manual_dir, settings.splits, layout=settings.layout,
            test_patch=settings.test_patch, test_archive=settings.test_archive,
        )
    except ValueError as e:  # sources.LayoutError, a tree that cannot be a split
        raise ConvertError(str(e)) from None
    from imagenet_beam.formats import schemas
    from imagenet_beam.sources import devkit

    extra = schemas.missing_files(
        schemas.for_output(output_of(settings)), settings.manual_dir, settings.splits
    )
    if extra:
        missing = f"{missing} {extra}" if missing else extra
    return Inputs(settings.manual_dir, found, devkit.devkit_path(settings.manual_dir)), missing


def found_text(inputs: Inputs) -> str:
    """What was found, for a log line: `train: imagefolder …/train`."""
    found = [
        f"{split}: {sources.get(s.layout).title} ({', '.join(s.paths) or s.archive})"
        for split, s in inputs.splits.items()
    ]
    found.append(
        f"the devkit {inputs.devkit} (validation labels are checked against its ground truth)"
        if inputs.devkit else
        f"no devkit (optional: with {dataset.DEVKIT_ARCHIVE} in manual_dir, validation "
        "labels are checked against its ground truth and lineage gets the class names)"
    )
    return "; ".join(found)


def configured_schema(settings: Settings):
    """The output's schema (`formats.schemas`) with what manual_dir gives it: a subset's
    list, ReaL's labels, the classic schema's class texts; a ConvertError when one of
    those is missing or wrong."""
    from imagenet_beam.formats import schemas

    try:
        return schemas.for_output(output_of(settings)).configured(settings)
    except DataError as e:  # a missing or bad list, label file, devkit or box archive
        raise ConvertError(str(e)) from None


def read_devkit(settings: Settings):
    """The ILSVRC devkit (`sources.devkit.Devkit`) when manual_dir has it (it is optional),
    else None; a ConvertError when it is there but cannot be read."""
    from imagenet_beam.sources import devkit

    path = devkit.devkit_path(settings.manual_dir)
    if path is None:
        return None
    try:
        return devkit.read_devkit(path)
    except devkit.DevkitError as e:
        raise ConvertError(str(e)) from None


def find_inputs(settings: Settings) -> Inputs:
    inputs, missing = look_for_inputs(settings)
    if missing:
        raise ConvertError(missing + " Or ask only for the splits you have (--splits).")
    return inputs


# --- check the archives ----------------------------------------------------------------


def check_archives(
    settings: Settings, inputs: Inputs, *, cached_only: bool = False
) -> list[ArchiveCheck] | None:
    """Size, sha256 (against the published values when `verify_checksums`) and
    readability to the end of every archive; cached by path, size and modification time,
    so a re-run does not read 155 GB again. An extracted folder is counted and every file
    hashed instead (`sources.tree`), cached the same way. All failures in one error.

    cached_only: the same answer when it is known without reading an archive (a re-run:
    every archive's check cached for its current state, every extracted folder hashed
    before, so that checking it again compares file sizes and times with its manifest);
    None when an archive or folder must still be read. The DAG then converts beside the
    checks, and publishing waits for them."""
    from imagenet_beam.sources import archive_checks

    cache_dir = OutputLayout(settings.data_dir).archive_checks_dir
    split_sources = [
        (split_input, sources.get(split_input.layout).configured(settings))
        for split_input in inputs.splits.values()
    ]
    if cached_only and not all(
        source.checked_before(split_input, settings, cache_dir)
        for split_input, source in split_sources
    ):
        return None
    checks: list[ArchiveCheck] = []
    problems: list[str] = []
    try:
        if cached_only:
            archives = archive_checks.cached_checks(
                inputs.paths, verify_checksum=settings.verify_checksums, cache_dir=cache_dir
            )
            if archives is None:
                return None
        else:
            archives = archive_checks.check_archives(
                inputs.paths, verify_checksum=settings.verify_checksums, cache_dir=cache_dir
            )
        checks += archives
    except archive_checks.ArchiveCheckError as e:
        problems.append(str(e))
    for split_input, source in split_sources:
        try:
            checks += source.check(split_input, settings, cache_dir)
        except archive_checks.ArchiveCheckError as e:
            problems.append(str(e))
    if problems:
        raise ConvertError("\n".join(problems))
    return checks


# --- merge the test patch --------------------------------------------------------------


def merge_test_patch(settings: Settings, inputs: Inputs) -> dict[str, Any] | None:
    """Merges the 2012 test tar with the patch when the test split needs it; the merge's
    report (what it replaced), or None when there is nothing to merge."""
    from imagenet_beam.sources import patch_merge
    from imagenet_beam.sources.tar import ArchiveError

    test = inputs.splits.get(dataset.TEST)
    if not test or not test.patch:
        return None
    try:
        report = patch_merge.merge_test_patch(
            test.archive, test.patch, OutputLayout(settings.data_dir).merged_test_archive,
            allow_additions=settings.patch_additions,
        )
    except (patch_merge.UnsafeMemberError, ArchiveError) as e:
        raise ConvertError(str(e)) from None
    return report.to_dict()


def conversion_inputs(
    inputs: Inputs, merged: Mapping[str, Any] | None
) -> dict[str, SplitInput]:
    """split → what its Beam job reads (the merged test tar in place of the 2012 one)."""
    converted = dict(inputs.splits)
    if merged:
        converted[dataset.TEST] = SplitInput(dataset.TEST, merged["output"])
    return converted


# --- unpack the .tar.gz inputs ---------------------------------------------------------


def unpack_archives(settings: Settings, inputs: Inputs) -> list[ArchiveCheck]:
    """Unpacks each .tar.gz a split is read from (Hugging Face's archives, the Kaggle
    copy's) into an uncompressed copy in the run work dir, once per archive (see
    `sources.packed`), and checks what it holds as an extracted tree is checked: its
    labels, strays and, when `verify_checksums`, its counts. One row per packed split,
    for lineage and the fingerprint (beside `check_archives`'); [] when none is packed.
    The Beam job finds the copies itself (its sources know the data_dir)."""
    from imagenet_beam.sources import packed
    from imagenet_beam.sources.tar import ArchiveError
    from imagenet_beam.sources.tree import LabelMismatch

    try:
        return packed.unpack_inputs(settings, list(inputs.splits.values()))
    except (ArchiveError, LabelMismatch) as e:
        raise ConvertError(str(e)) from None


# --- up to date? -----------------------------------------------------------------------


def fingerprint(settings: Settings, checks: Sequence[ArchiveCheck | Mapping[str, Any]]) -> str:
    """Identifies a conversion: the archives' content and every setting that shapes output
    (`Setting.shapes_output`), and the producer's version."""
    from imagenet_beam import metadata
    from imagenet_beam.formats import schemas

    rows = [c if isinstance(c, Mapping) else c.to_dict() for c in checks]
    archives = sorted((a["name"], a["size"], a["sha256"]) for a in rows)
    identity = {
        "archives": archives,
        "settings": settings.fingerprint_fields(),
        "producer": metadata.producer()["version"],
    }
    files = schemas.files_identity(
        schemas.for_output(output_of(settings)), settings.manual_dir, settings.splits
    )
    if files:  # a subset's list, ReaL's labels
        identity["output_files"] = files
    text = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def up_to_date(settings: Settings, wanted: str) -> str | None:
    """Why the published version can be kept, or None when it must be converted (again):
    it must be complete, made with this fingerprint, and still match its lineage (marker,
    files, shard sizes; a full re-read is `verify`'s)."""
    from imagenet_beam import metadata, verify

    final = output_layout(settings).version_dir
    if not publication.is_published(final):
        if storage.list_files(final):
            log.info("%s has no completion marker (an unfinished publication): converting", final)
        return None
    if metadata.read_lineage(final).fingerprint != wanted:
        log.info("published %s was made from other inputs or settings: converting", final)
        return None
    try:
        verify.verify_output(final, decode=False, checksums=False)
    except verify.VerificationError as e:
        log.warning("published %s no longer matches its lineage (%s): converting", final, e)
        return None
    return (
        f"{final} is up to date: published from the same archives and settings, nothing to do"
    )


def refuse_other_version(settings: Settings, wanted: str | None) -> None:
    """Without --overwrite, publishing replaces only nothing, a killed publication of ours,
    or ours with this fingerprint (converted again with --force, or no longer verifying);
    anything else is refused before any work. wanted: None while the archives are still
    being checked, when nothing is published."""
    from imagenet_beam import metadata

    final = output_layout(settings).version_dir
    if publication.is_published(final) and metadata.read_lineage(final).fingerprint == wanted:
        return
    try:
        publication.refuse_to_replace(final, overwrite=settings.overwrite)
    except publication.PublishError as e:
        raise ConvertError(str(e)) from None


# --- stage (the Beam job) --------------------------------------------------------------


# Below this much input the DirectRunner's default is threads: on so few images its worker
# processes' start (~3 s on 2 cores: a tiny input converts in 5.5-6.4 s in processes, 2.5-3.2
# s in threads) costs more than they gain (at most ~30 µs an image, for tiny images: the
# full-count rehearsal, ~1.5 KB an image in its tars; realistic images gain nothing).
THREADS_BELOW_BYTES = 100 * 10**6


def direct_running_mode(workers: int, input_bytes: int | None = None) -> str:
    """The DirectRunner's mode for `workers` and, when known, the size of the archives it
    converts (see `_with_runner_defaults`)."""
    if workers <= 1:
        return "in_memory"
    if input_bytes is not None and input_bytes < THREADS_BELOW_BYTES:
        return "multi_threading"
    return "multi_processing"


def archive_sizes(converted: Mapping[str, SplitInput]) -> dict[str, int | None]:
    """Per split, the size of its archives; None for an extracted folder (not counted)."""
    return {
        split: sum(storage.size(p) for p in s.paths) if s.paths else None
        for split, s in converted.items()
    }


def archives_bytes(sizes: Mapping[str, int | None]) -> int | None:
    """All the archives' size (`archive_sizes`), or None when a split is a folder."""
    return None if None in sizes.values() else sum(sizes.values())


def _with_runner_defaults(argv: Sequence[str], input_bytes: int | None = None):
    """Pipeline options with the runner named explicitly (recent Beam may otherwise pick
    one that downloads), and the DirectRunner on every core unless told otherwise.

    Processes, not threads, by default, one a core: at ImageNet's 1.43 million images the
    Python work of each (its key, its Example, its place in a shard) holds the GIL, and
    threads leave cores idle (`make bench`'s full count on 2 cores: 65 s in processes,
    108 s in threads; on 40k realistic images the two are even: see the README). Threads
    for an input under THREADS_BELOW_BYTES (input_bytes: the archives' size, when known).
    The DaskRunner is ours (`dask_runner`), each input its own first partition.
    """
    from apache_beam.options.pipeline_options import (
        DirectOptions,
        PipelineOptions,
        StandardOptions,
    )

    from imagenet_beam import runners

    options = PipelineOptions(list(argv))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = runners.DEFAULT.name
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    runner = runners.find(standard.runner)
    if runner is runners.DIRECT and "--direct_running_mode" not in given:
        direct = options.view_as(DirectOptions)
        if "--direct_num_workers" not in given:
            direct.direct_num_workers = os.cpu_count() or 1
        direct.direct_running_mode = direct_running_mode(direct.direct_num_workers,
                                                         input_bytes)
    if runner is runners.DASK:
        from apache_beam.runners.dask.dask_runner import DaskOptions

        standard.runner = runner.class_path
        if not given & {"--dask_npartitions", "--dask_partition_size"}:
            options.view_as(DaskOptions).partition_size = 1
    return options


SPACE_RESERVE_BYTES = 1 << 20


def staging_dir(settings: Settings) -> str:
    return settings.staging_dir or output_layout(settings).staging_dir


def prepare_staging(settings: Settings) -> str:
    """Clears what a killed run left in the staging directory; returns its path."""
    path = staging_dir(settings)
    storage.delete_tree(path)
    return path


def _raise_recorded_errors(staged: StagingLayout, splits: Sequence[str]) -> None:
    """The data errors the splits' steps recorded (see `step_errors.RecordedErrors`), as
    one ConvertError."""
    from imagenet_beam import step_errors

    problems = step_errors.recorded_errors(staged, splits)
    if not problems:
        return
    full = [p for p in problems if p.no_space]
    if full:
        needed = sum(
            r["input"]["size"] or 0 for r in _staged_records(staged) if r["split"] in splits
        )
        raise _full_disk(full[0], needed, staged)
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    raise ConvertError(f"{problems[0]}{more}")


def _full_disk(error: DataError, needed: int, staged: StagingLayout) -> ConvertError:
    """A full output device's error, with how much this conversion needs."""
    return ConvertError(
        f"{error} (this conversion needs about {size_text(needed)} free in "
        f"{staged.staging_dir}'s file system)"
    )


def size_text(num_bytes: float) -> str:
    """1,234,567,890 → '1.2 GB'."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if num_bytes < 1000 or unit == "GB":
            return f"{num_bytes:,.0f} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    raise AssertionError


def input_size(split_input: SplitInput) -> int:
    """The bytes a split is converted from: its archives, or an extracted folder's files
    (the whole folder: one listing per class folder)."""
    if split_input.paths:
        return sum(storage.size(p) for p in split_input.paths)
    return sources.get(split_input.layout).input_size(split_input)


def check_space(settings: Settings, inputs: Inputs) -> None:
    """Refuses, before the archives are read, a local output place with less free space
    than the conversion needs: about the archives' size (shards hold the same JPEG bytes; a
    merged test tar takes about what the test tar and its patch do), and that again for
    the unpacked copies of .tar.gz inputs not unpacked yet. Not for gs://, nor when images
    are resized (the output is then smaller by an unknown amount)."""
    from imagenet_beam.sources import packed

    where = staging_dir(settings)
    if storage.is_remote(where) or settings.resize:
        return
    needed = sum(input_size(s) for s in inputs.splits.values())
    unpacking = packed.unpack_size(settings, inputs.splits.values())
    needed += unpacking
    existing = where
    while not os.path.exists(existing):
        existing = os.path.dirname(existing) or "."
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise ConvertError(
            f"not enough space for the output: {existing} has {size_text(free)} free, and the "
            f"conversion needs about {size_text(needed)} (as much as the archives take"
            f"{', and again for their unpacked copies' if unpacking else ''}). Free "
            "that much, or choose a data_dir on another disk, then run again"
        )


def _check_results(results, splits: Sequence[str]) -> None:
    for split in splits:
        mine = [r for r in results if r.split == split]
        if not mine or sorted(r.index for r in mine) != list(range(mine[0].num_shards)):
            raise ConvertError(
                f"the pipeline finished without writing every shard of {split!r} "
                f"(wrote {len(mine)}); run again"
            )


def stage(
    settings: Settings, converted: Mapping[str, SplitInput], beam_args: Sequence[str] = ()
) -> str:
    """Runs the Beam job for the requested splits into the staging directory, replacing
    those splits' earlier attempts there. Nothing is visible until `publish`.

    converted: split → what it is read from (`conversion_inputs`); beam_args: Beam's own
    pipeline options (runner, workers, Dataflow's project...). Returns the staging dir.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions

    from imagenet_beam import pipeline, progress, runners, shards

    sizes = archive_sizes(converted)
    options = _with_runner_defaults([*beam_args, *settings.to_flags()], archives_bytes(sizes))
    no_wait = options.view_as(StandardOptions).no_wait_until_finish
    if no_wait and not settings.stage_only:
        raise ConvertError(
            "--no_wait_until_finish needs --stage_only: publish once the job has finished "
            "(python -m imagenet_beam publish)"
        )
    runner = runners.find(options.view_as(StandardOptions).runner)
    if no_wait and runner is runners.DASK:
        raise ConvertError(
            "--no_wait_until_finish cannot be used with the DaskRunner: a Dask job ends "
            "with the process that submitted it"
        )
    staged = StagingLayout(staging_dir(settings))
    for split in settings.splits:
        publication.clear_staged_split(staged, split)
    runner_name = runner.name if runner else options.view_as(StandardOptions).runner
    with _full_disk_said(sum(size or 0 for size in sizes.values()), staged):
        _stage_records(settings, converted, sizes, staged, runner_name)
    if runner is runners.DASK:
        _check_dask_cluster(options, [staged.results_dir], say=False)
    paths = {split: s.archive for split, s in converted.items()}
    log.info("converting %s from %s into %s", list(paths), settings.manual_dir, staged.staging_dir)
    schema = configured_schema(settings)
    with progress.reporting(staged, list(paths), enabled=not no_wait):
        with beam.Pipeline(options=options) as p:
            by_split = {
                split: sources.get(s.layout).configured(settings) for split, s in converted.items()
            }
            pipeline.build_pipeline(
                p, sources.BySplit(by_split), sorted(paths.items()), settings, staged,
                devkit=read_devkit(settings) if dataset.VALIDATION in paths else None,
                schema=schema,
            )
    _raise_recorded_errors(staged, list(paths))
    if no_wait:
        # Submitted (a Dataflow job under Airflow: the convert task follows the job, not
        # this launcher). `publish` checks that every shard was written.
        log.info("submitted the pipeline for %s; not waiting for it to finish", list(paths))
        return staged.staging_dir
    _check_results(list(shards.iter_results(staged.results_dir)), list(paths))
    return staged.staging_dir


@contextlib.contextmanager
def _full_disk_said(needed: int, staged: StagingLayout) -> Iterator[None]:
    """The launcher's own writes into staging (not a step's, which record their errors):
    a full device is said as a step's is, with how much the conversion needs."""
    try:
        yield
    except OSError as e:
        error = from_os_error(e, staged.staging_dir)
        if error is None or not error.no_space:
            raise
        raise _full_disk(error, needed, staged) from None


def _stage_records(
    settings: Settings, converted: Mapping[str, SplitInput], sizes: Mapping[str, int | None],
    staged: StagingLayout, runner_name: str,
) -> None:
    """The staging directory, the space held back for a full disk's error records, and
    each split's record of what it is converted from and how (read by `publish`)."""
    storage.makedirs(staged.staging_dir)
    storage.makedirs(staged.results_dir)
    if not storage.is_remote(staged.staging_dir):  # room for the error records of a full disk
        storage.write_bytes(staged.space_reserve, bytes(SPACE_RESERVE_BYTES))
    for split, split_input in converted.items():
        record = {
            "split": split,
            "input": {
                "path": split_input.archive,
                "layout": split_input.layout,
                "size": sizes[split] or None,
            },
            "settings": settings.lineage(),
            "runner": runner_name,
            "run_id": settings.run_id,
        }
        storage.write_bytes(
            staged.split_record(split), json.dumps(record, sort_keys=True).encode()
        )


# --- publish ---------------------------------------------------------------------------


def _warnings(results) -> list[str]:
    notes = []
    for split in dataset.SPLITS:
        count = sum(r.num_examples for r in results if r.split == split)
        full = dataset.FULL_SPLIT_SIZES[split]
        if count and count != full:
            notes.append(f"{split}: {count} examples, full ILSVRC 2012 has {full}")
    return notes


def _staged_records(staged: StagingLayout) -> list[dict]:
    return [
        json.loads(storage.read_bytes(path))
        for path in storage.list_files(staged.work_dir)
        if staged.is_split_record(path)
    ]


def publish(
    data_dir: str,
    staging: str | None = None,
    *,
    output: Output = layout.IMAGENET2012,
    overwrite: bool = False,
    splits: Sequence[str] | None = None,
    run_id: str | None = None,
    read_back: bool = False,
    keep_replaced: bool = False,
    **provenance: Any,
):
    """Writes TFDS metadata and lineage.json for what is staged, then makes it visible in
    one step (see `publish.swap_in`). Returns the `metadata.Lineage` written.

    read_back: the staged shards are read back and hashed against the lineage beside the
    metadata and report, and a shard that does not read back as written is not published
    (the DAG's publish: its validate_and_record then need not hash them again).
    keep_replaced: the version it replaces is left for `release_lease` to remove (see
    `publish.swap_in`), after the run's last task on its way.

    splits, run_id: publish exactly these splits, staged by this run, or refuse (another
    conversion into the same data_dir must not be mixed in). provenance: fingerprint,
    archives (the checks), test_patch (the merge's report), airflow (the DAG run) —
    recorded in lineage.json. output: what was staged (imagenet2012 unless told).
    """
    from imagenet_beam import metadata, report, shards
    from imagenet_beam import verify as verification
    from imagenet_beam.formats import schemas

    published = output
    output = OutputLayout(data_dir, published)
    staged = StagingLayout(staging or output.staging_dir)
    records = _staged_records(staged)
    if not records:
        raise ConvertError(f"nothing is staged in {staged.staging_dir}: run the conversion first")
    for r in records:
        given = layout.output_for(
            r["settings"].get("dataset", dataset.DATASET_NAME),
            r["settings"].get("schema", "tfds"),
        )
        if given != published:
            raise ConvertError(
                f"{staged.staging_dir} holds {r['split']} of {given.key} "
                f"({r['settings'].get('schema', 'tfds')} schema), not {published.key}: "
                "publish it with the same --dataset and --schema it was converted with"
            )
    if run_id is not None:
        others = sorted({r["split"] for r in records if r.get("run_id") != run_id})
        if others:
            raise ConvertError(
                f"{staged.staging_dir} holds {', '.join(others)} staged by another conversion "
                f"into the same data_dir, not by this run ({run_id}): run one conversion per "
                "data_dir at a time, then convert again"
            )
    staged_splits = [s for s in dataset.SPLITS if s in {r["split"] for r in records}]
    if splits is not None and set(splits) != set(staged_splits):
        missing = [s for s in splits if s not in staged_splits]
        raise ConvertError(
            f"this run asked for {', '.join(splits)} but {staged.staging_dir} holds "
            f"{', '.join(staged_splits) or 'no split'}"
            + (f" (missing: {', '.join(missing)})" if missing else "")
            + "; another conversion may have cleared it: convert again"
        )
    splits = staged_splits

    def same_output(record: dict) -> str:
        shaping = {k: v for k, v in record["settings"].items() if k not in ("splits",)}
        return json.dumps([shaping, record["runner"]], sort_keys=True)

    if len({same_output(r) for r in records}) != 1:
        raise ConvertError(
            f"the splits staged in {staged.staging_dir} were converted with different "
            f"settings ({sorted(same_output(r) for r in records)}); convert them again with "
            "the same settings"
        )
    _raise_recorded_errors(staged, splits)  # a job that ended without raising (Dataflow, no wait)
    options = {**records[0]["settings"], "splits": splits, "runner": records[0]["runner"]}
    results = list(shards.iter_results(staged.results_dir))
    _check_results(results, splits)
    try:
        publication.refuse_to_replace(output.version_dir, overwrite)
    except publication.PublishError as e:
        raise ConvertError(str(e)) from None

    written = sorted({str(shard_file_format(r.file)) for r in results})
    if written != [options["file_format"]]:
        raise ConvertError(
            f"the shards staged in {staged.staging_dir} are {', '.join(written)}, not the "
            f"{options['file_format']} their records say: another conversion wrote into the "
            "same staging directory; run one conversion per data_dir at a time, then convert "
            "again"
        )
    extra = {}
    if published.classic_names:
        extra = classic_record(options, staged, splits)
    storage.delete_tree(staged.work_dir)
    record = metadata.lineage_record(
        results,
        inputs={r["split"]: r["input"] for r in records},
        options=options,
        warnings=_warnings(results),
        classes=class_record(options.get("manual_dir"), results, **extra.pop("classes", {})),
        dataset=published.key,
        **extra,
        version=published.version,
        **provenance,
    )
    metadata.write_lineage(staged.staging_dir, record)
    # The read-back beside the metadata and the report's charts (on gs:// in a thread:
    # its waits are the network's).
    reading = None
    if read_back and storage.is_remote(staged.staging_dir):
        reading = _beside(verification.read_back_staged, staged.staging_dir, record).result
    elif read_back:
        reading = verification.read_back_in_a_process(staged.staging_dir)
    if schemas.for_output(published).tfds_metadata:
        metadata.write_tfds_metadata(
            staged.staging_dir, options["file_format"], results, published
        )
    # listed in the marker like the rest
    report.write_report(staged.staging_dir, record, published_as=output.version_dir)
    if reading is not None:
        try:
            reading()
        except verification.VerificationError as e:
            raise ConvertError(str(e)) from None
        shards_read = [shard for info in record.splits.values() for shard in info.shards]
        log.info("read back %d shards (%s): each as it was written (sha256, records)",
                 len(shards_read), size_text(sum(s.num_bytes for s in shards_read)))
    publication.swap_in(staged.staging_dir, output, keep_replaced=keep_replaced)
    log.info("published %s", output.version_dir)
    return record


def classic_record(options: Mapping[str, Any], staged: StagingLayout, splits) -> dict:
    """What lineage records of a classic output beyond the rest: where image/class/text
    came from, and per split with a box archive its counts and the XML files whose boxes
    went to no image (read from the staged index before it is removed)."""
    from imagenet_beam import pipeline
    from imagenet_beam.formats import classic_schema
    from imagenet_beam.sources import bboxes, devkit

    manual_dir = options["manual_dir"]
    text_from = (
        classic_schema.TEXT_FROM_DEVKIT if devkit.devkit_path(manual_dir)
        else classic_schema.TEXT_FROM_WNID
    )
    boxes = {}
    for split in splits:
        # prepared by the conversion: read from its cache
        summary = bboxes.prepare_split(manual_dir, options["data_dir"], split)
        if summary is None:
            continue
        names = pipeline.indexed_file_names(staged, split)
        counts = dataclasses.asdict(summary.splits[split])
        boxes[split] = {
            **counts,
            "archive": storage.basename(counts["archive"]),
            "orphans": [dataclasses.asdict(o) for o in bboxes.orphans(summary, split, names)],
        }
    return {"classes": {"text_from": text_from}, "boxes": boxes}


def class_record(
    manual_dir: str | None, results, **more: Any
) -> dict[str, Any] | None:
    """What lineage records of the classes when manual_dir has the ILSVRC devkit: their
    names (`words`, in label order) and, for a published train split, each class whose
    count differs from the devkit's num_train_images. None without the devkit (and
    without `more`, which a classic output adds: where its class texts came from)."""
    from imagenet_beam import stats
    from imagenet_beam.sources import devkit

    path = devkit.devkit_path(manual_dir) if manual_dir else None
    if path is None:
        return dict(more) or None
    try:
        kit = devkit.read_devkit(path)
    except devkit.DevkitError as e:
        raise ConvertError(str(e)) from None
    record: dict[str, Any] = {
        "names_from": path, "names": list(kit.words_by_label()), **more
    }
    train = [r.stats for r in results if r.split == dataset.TRAIN]
    if train:
        counts = stats.ImageStats.total(train).labels
        record["train_count_differences"] = [
            {"wnid": wnid, "examples": counted, "devkit_num_train_images": expected}
            for wnid, counted, expected in kit.train_count_differences(dict(counts))
        ]
    return record


# --- verify ----------------------------------------------------------------------------


def verify(
    settings: Settings, *, decode: bool = True, checksums: bool = True, tensorflow: bool = True
) -> dict:
    """Reads the published version back (see `verify.verify_output`)."""
    from imagenet_beam import verify as verification

    try:
        return verification.verify_output(
            output_layout(settings).version_dir, decode=decode, checksums=checksums,
            tensorflow=tensorflow,
        )
    except verification.VerificationError as e:
        raise ConvertError(str(e)) from None


# --- every step ------------------------------------------------------------------------


def _beside(fn, *args) -> concurrent.futures.Future:
    """fn(*args) in a thread of its own while the caller goes on; its Future. A daemon
    thread (not an executor's, which the interpreter waits for at exit): a run that fails
    before asking for the result does not wait for it to end."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # given to the caller by result()
            future.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return future


def _logged_checks(checks: list[ArchiveCheck]) -> list[ArchiveCheck]:
    for check in checks:
        log.info(
            "%s: %s bytes, sha256 %s%s", check.name, f"{check.size:,}", check.sha256,
            " (matches the published checksum)" if check.verified_against else "",
        )
    return checks


def _start_checks(
    settings: Settings, inputs: Inputs
) -> tuple[list[ArchiveCheck] | None, concurrent.futures.Future | None]:
    """The archives' checks, (checks, None); or on a first run (nothing cached, nothing
    published to compare the archives with) (None, the checks running beside): the
    conversion need not wait for a first run's longest read, publishing does (as the
    DAG's tasks do)."""
    checks = check_archives(settings, inputs, cached_only=True)
    if checks is not None:
        return _logged_checks(checks), None
    if publication.is_published(output_layout(settings).version_dir):
        return _logged_checks(check_archives(settings, inputs)), None
    # Nothing published: what a refusal depends on is not the archives, and it comes
    # before any work (not once the checks beside the conversion have ended).
    refuse_other_version(settings, None)
    log.info("checking the archives beside the conversion; publishing waits for their checks")
    return None, _beside(check_archives, settings, inputs)


@contextlib.contextmanager
def _archives_blamed_first(beside: concurrent.futures.Future | None) -> Iterator[None]:
    """When the work beside the checks fails on its input (a truncated tar, not a tar),
    the checks' error if they fail too: it names every broken archive at once, and what to
    do, as a run that checked them first says."""
    try:
        yield
    except (ConvertError, DataError, OSError):
        if beside is not None:
            beside.result()
        raise


@dataclasses.dataclass
class Outcome:
    version_dir: str
    up_to_date: bool
    reason: str | None = None
    lineage: Any = None  # metadata.Lineage, when this run published
    verified: dict | None = None


def convert(settings: Settings, beam_args: Sequence[str] = ()) -> Outcome:
    """Every step: the command line's `convert`, under the version's lease from the
    first read of an archive to the end of publishing. A first run (the archives' checks
    not cached, nothing published) checks the archives beside the conversion, and
    publishes only once they have passed."""
    version_dir = output_layout(settings).version_dir
    check_paths(settings)
    check_runner(settings, beam_args)
    inputs = find_inputs(settings)
    run_id = settings.run_id or new_run_id()
    with holding_lease(output_layout(settings), run_id, process_bound=True) as lease:
        log.info("found %s", found_text(inputs))  # (a refused lease is the whole output)
        check_space(settings, inputs)
        checks, beside = _start_checks(settings, inputs)
        with _archives_blamed_first(beside):
            merged = merge_test_patch(settings, inputs)
            unpacked = unpack_archives(settings, inputs)
            if beside is None:
                wanted = fingerprint(settings, [*checks, *unpacked])
                reason = up_to_date(settings, wanted)
                if reason and not settings.force:
                    return Outcome(version_dir, up_to_date=True, reason=reason)
                refuse_other_version(settings, wanted)
            staging = prepare_staging(settings)
            try:
                staged = stage(
                    settings.replace(staging_dir=staging, run_id=run_id),
                    conversion_inputs(inputs, merged),
                    beam_args,
                )
                if beside is not None:
                    checks = _logged_checks(beside.result())
                    wanted = fingerprint(settings, [*checks, *unpacked])
                lease.check()
            except BaseException:
                storage.delete_tree(staging)  # only this run's: nothing of it was published
                raise
        checks += unpacked
        record = publish(
            settings.data_dir,
            staged,
            output=output_of(settings),
            overwrite=True,
            splits=settings.splits,
            run_id=run_id,
            fingerprint=wanted,
            archives=[c.to_dict() for c in checks],
            test_patch=merged,
        )
    # What was published is what lineage says (marker, files, sizes); the shards' sha256
    # were taken as they were written. Decoding through TFDS costs TensorFlow's import
    # (~3 s, ~400 MiB): that is `python -m imagenet_beam verify`'s, and the DAG's.
    verified = verify(settings, decode=False, checksums=False)
    return Outcome(version_dir, up_to_date=False, lineage=record, verified=verified)


def settings_from(values: Mapping[str, Any]) -> Settings:
    """Settings from a DAG run's params (or any mapping), as a ConvertError when bad."""
    try:
        return Settings.from_mapping(values)
    except SettingsError as e:
        raise ConvertError(str(e)) from None
