"""One conversion run: find the archives, run the pipeline into a staging directory,
write the metadata, then make the version directory visible in one step."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
)

from imagenet_beam import dataset, images, inputs, metadata, pipeline, shards, storage

log = logging.getLogger(__name__)

STAGING_SUFFIX = ".incomplete"
WORK_DIR = "_work"  # inside staging: per split its input and options, per shard its result
SHARD_RESULTS = "shards"
REPLACED_SUFFIX = ".replaced"


class ConvertError(ValueError):
    """Bad input or settings; the message says what is wrong and what to do."""


def parse_splits(text: str | Sequence[str]) -> list[str]:
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip() for n in names if n.strip()]
    unknown = sorted(set(names) - set(dataset.SPLITS))
    if unknown or not names:
        raise ConvertError(
            f"--splits={','.join(names)!s} is not a list of {', '.join(dataset.SPLITS)}"
        )
    return [s for s in dataset.SPLITS if s in names]


def resolve_inputs(
    manual_dir: str, splits: Sequence[str], test_archive: str | None = None
) -> dict[str, str]:
    """split → archive path; a ConvertError lists everything missing at once.

    test_archive: a file name in manual_dir, or a full path (e.g. a merged test tar).
    """
    wanted = [s for s in splits if not (s == dataset.TEST and test_archive)]
    found, missing = inputs.find_sources(manual_dir, wanted)
    archives = {split: source.archive for split, source in found.items()}
    if dataset.TEST in splits and test_archive:
        is_path = "/" in test_archive or storage.is_remote(test_archive)
        path = test_archive if is_path else storage.join(manual_dir, test_archive)
        if storage.exists(path):
            archives[dataset.TEST] = path
        else:
            missing.append(f"test: {test_archive}")
    if missing:
        raise ConvertError(
            inputs.missing_message(manual_dir, missing)
            + " Or ask only for the splits you have (--splits)."
        )
    return {split: archives[split] for split in splits}


def _with_runner_defaults(argv: Sequence[str]) -> PipelineOptions:
    """Options with the runner named explicitly (recent Beam may otherwise pick one that
    downloads), and the DirectRunner on every core unless told otherwise.

    Threads, not processes, by default: the heavy work (reading, hashing, CRCs, writing,
    JPEG decoding) runs in C with the GIL released, and threads start no interpreters.
    """
    options = PipelineOptions(argv)
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = "DirectRunner"
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    if standard.runner in ("DirectRunner", "direct") and "--direct_running_mode" not in given:
        direct = options.view_as(DirectOptions)
        direct.direct_running_mode = "multi_threading"
        if "--direct_num_workers" not in given:
            direct.direct_num_workers = os.cpu_count() or 1
    return options


def output_dirs(data_dir: str) -> tuple[str, str]:
    """(final version directory, its staging directory)."""
    dataset_dir = storage.join(data_dir, dataset.DATASET_NAME)
    return (
        storage.join(dataset_dir, dataset.VERSION),
        storage.join(dataset_dir, "." + dataset.VERSION + STAGING_SUFFIX),
    )


def _check_results(results: list[shards.ShardResult], splits: Sequence[str]) -> None:
    for split in splits:
        mine = [r for r in results if r.split == split]
        if not mine or sorted(r.index for r in mine) != list(range(mine[0].num_shards)):
            raise ConvertError(
                f"the pipeline finished without writing every shard of {split!r} "
                f"(wrote {len(mine)}); run again"
            )


def _warnings(results: list[shards.ShardResult]) -> list[str]:
    notes = []
    for split in dataset.SPLITS:
        count = sum(r.num_examples for r in results if r.split == split)
        full = dataset.FULL_SPLIT_SIZES[split]
        if count and count != full:
            notes.append(f"{split}: {count} examples, full ILSVRC 2012 has {full}")
    return notes


def _existing_version(final: str) -> str | None:
    """What is at the version directory: "published" (ours, complete), "foreign" (a
    dataset_info.json without our lineage, e.g. TFDS's own build) or None (nothing, or what
    a killed publication of ours left behind, which publishing replaces)."""
    if metadata.is_published(final):
        return "published"
    if storage.exists(storage.join(final, metadata.DATASET_INFO_FILE)) and not storage.exists(
        storage.join(final, metadata.LINEAGE_FILE)
    ):
        return "foreign"
    return None


def _refuse_to_replace(final: str, overwrite: bool) -> None:
    existing = _existing_version(final)
    if existing and not overwrite:
        made_by = "a finished conversion" if existing == "published" else "another tool"
        raise ConvertError(f"{final} already exists ({made_by}); pass --overwrite to replace it")


def _publication_order(paths: list[str]) -> list[list[str]]:
    """Shards first, then TFDS's metadata (dataset_info.json last of it), then lineage.json:
    a reader that looks for dataset_info.json never finds it before the shards."""
    shards_, tfds_meta, info, lineage = [], [], [], []
    for path in paths:
        name = storage.basename(path)
        if name == metadata.LINEAGE_FILE:
            lineage.append(path)
        elif name == metadata.DATASET_INFO_FILE:
            info.append(path)
        elif name.startswith(dataset.DATASET_NAME + "-"):
            shards_.append(path)
        else:
            tfds_meta.append(path)
    return [group for group in (shards_, tfds_meta, info, lineage) if group]


def _unpublish(final: str) -> None:
    """Removes a version: its marker first (readers ignore it from then on), then
    dataset_info.json (TFDS no longer finds it), then the rest."""
    for name in (metadata.COMPLETE_MARKER, metadata.DATASET_INFO_FILE):
        path = storage.join(final, name)
        if storage.exists(path):
            storage.delete_files([path])
    storage.delete_tree(final)


def _swap_in(staging: str, final: str) -> None:
    """Makes the staged version visible, replacing an older one or a killed publication.

    Local: the marker is written into staging, then one rename shows everything at once.
    GCS has no rename: the files are moved under the final prefix in publication order and
    the completion marker is written last.
    """
    marker = metadata.completion_record(staging)
    if not storage.is_remote(final):
        metadata.write_completion_marker(staging, marker)
        replaced = final + REPLACED_SUFFIX
        if storage.exists(final):
            storage.delete_tree(replaced)
            storage.rename_tree(final, replaced)
        storage.rename_tree(staging, final)
        storage.delete_tree(replaced)
        return
    _unpublish(final)
    prefix = staging.rstrip("/") + "/"
    for group in _publication_order(storage.list_files(staging)):
        storage.rename_files(group, [storage.join(final, p[len(prefix):]) for p in group])
    metadata.write_completion_marker(final, marker)
    storage.delete_tree(staging)


def _split_record_path(staging: str, split: str) -> str:
    return storage.join(staging, WORK_DIR, f"split-{split}.json")


def _clear_split(staging: str, split: str) -> None:
    """Removes one split's staged files (a previous attempt's), leaving other splits alone."""
    shard_prefix = f"{dataset.DATASET_NAME}-{split}."
    per_split_dirs = {
        storage.join(staging, WORK_DIR, name)
        for name in (SHARD_RESULTS, pipeline.INDEX_DIR, pipeline.PLAN_DIR)
    }

    def belongs_to_split(path: str) -> bool:
        name = storage.basename(path)
        if name.startswith(shard_prefix) or path == _split_record_path(staging, split):
            return True
        return name.startswith(f"{split}-") and any(
            storage.join(d, name) == path for d in per_split_dirs
        )

    storage.delete_files([p for p in storage.list_files(staging) if belongs_to_split(p)])


def stage(argv: Sequence[str] | None = None) -> tuple[str, list[str]]:
    """Runs the pipeline for the requested splits into the staging directory.

    Returns (staging directory, splits). Nothing is visible until `publish`.
    """
    argv = list(argv or [])
    options = _with_runner_defaults(argv)
    opts = options.view_as(pipeline.ConvertOptions)
    if not opts.manual_dir or not opts.data_dir:
        raise ConvertError("both --manual_dir and --data_dir are required")
    if opts.num_shards is not None and opts.num_shards < 1:
        raise ConvertError(f"--num_shards={opts.num_shards}: give a positive number of shards")
    if not 0 < opts.max_pixels <= images.MAX_PIXELS_CEILING:
        raise ConvertError(
            f"--max_pixels={opts.max_pixels}: give a number from 1 to {images.MAX_PIXELS_CEILING}"
        )
    try:
        images.Resize.parse(opts.resize)
    except ValueError as e:
        raise ConvertError(f"--{e}") from None
    splits = parse_splits(opts.splits)
    no_wait = options.view_as(StandardOptions).no_wait_until_finish
    if no_wait and not opts.stage_only:
        raise ConvertError(
            "--no_wait_until_finish needs --stage_only: publish once the job has finished "
            "(python -m imagenet_beam publish)"
        )
    inputs = resolve_inputs(opts.manual_dir, splits, opts.test_archive)

    final, staging = output_dirs(opts.data_dir)
    staging = opts.staging_dir or staging
    if opts.stage_only:
        for split in splits:
            _clear_split(staging, split)
    else:
        _refuse_to_replace(final, opts.overwrite)
        storage.delete_tree(staging)  # whatever a killed run left behind
    storage.makedirs(staging)
    storage.makedirs(storage.join(staging, WORK_DIR, SHARD_RESULTS))

    run_options = {
        "file_format": opts.file_format,
        "num_shards": opts.num_shards,
        "on_corrupt": opts.on_corrupt,
        "validate": opts.validate,
        "resize": opts.resize,
        "max_pixels": opts.max_pixels,
        "runner": options.view_as(StandardOptions).runner,
    }
    for split, path in inputs.items():
        record = {"split": split, "input": {"path": path, "size": storage.size(path)},
                  "options": run_options}
        storage.write_bytes(
            _split_record_path(staging, split), json.dumps(record, sort_keys=True).encode()
        )

    settings = shards.WriteSettings(
        output_dir=staging,
        file_format=opts.file_format,
        on_corrupt=opts.on_corrupt,
        validate=opts.validate,
        resize=opts.resize,
        max_pixels=opts.max_pixels,
    )
    log.info("converting %s from %s into %s", splits, opts.manual_dir, staging)
    with beam.Pipeline(options=options) as p:
        pipeline.build_pipeline(
            p, sorted(inputs.items()), settings, opts.num_shards,
            storage.join(staging, WORK_DIR, SHARD_RESULTS),
            storage.join(staging, WORK_DIR),
        )
    if no_wait:
        # Submitted (a Dataflow job under Airflow: the convert task follows the job, not
        # this launcher). `publish` checks that every shard was written.
        log.info("submitted the pipeline for %s; not waiting for it to finish", splits)
        return staging, splits
    results = list(shards.iter_results(storage.join(staging, WORK_DIR, SHARD_RESULTS)))
    _check_results(results, splits)
    return staging, splits


def publish(
    data_dir: str,
    staging: str | None = None,
    extra: dict | None = None,
    overwrite: bool = True,
) -> dict:
    """Writes TFDS metadata and lineage.json for what is staged, then makes it visible.

    extra: more top-level lineage fields (e.g. the orchestrator's run id, verified checksums).
    """
    final, default_staging = output_dirs(data_dir)
    staging = staging or default_staging
    work = storage.join(staging, WORK_DIR)
    split_records = [
        json.loads(storage.read_bytes(path))
        for path in storage.list_files(work)
        if storage.basename(path).startswith("split-")
    ]
    if not split_records:
        raise ConvertError(f"nothing is staged in {staging}: run the conversion first")
    splits = [s for s in dataset.SPLITS if s in {r["split"] for r in split_records}]
    option_sets = {json.dumps(r["options"], sort_keys=True) for r in split_records}
    if len(option_sets) != 1:
        raise ConvertError(
            f"the splits staged in {staging} were converted with different options "
            f"({sorted(option_sets)}); convert them again with the same options"
        )
    options = {"splits": splits, **split_records[0]["options"]}
    results = list(shards.iter_results(storage.join(work, SHARD_RESULTS)))
    _check_results(results, splits)
    _refuse_to_replace(final, overwrite)

    storage.delete_tree(work)
    metadata.write_tfds_metadata(staging, options["file_format"], results)
    record = metadata.lineage_record(
        results,
        inputs={r["split"]: r["input"] for r in split_records},
        options=options,
        warnings=_warnings(results),
        extra=extra,
    )
    metadata.write_lineage(staging, record)
    _swap_in(staging, final)
    log.info("published %s", final)
    return record


def run(argv: Sequence[str] | None = None) -> dict:
    """Converts the requested splits and publishes them; returns the lineage record."""
    argv = list(argv or [])
    opts = PipelineOptions(argv).view_as(pipeline.ConvertOptions)
    staging, _ = stage(argv)
    if opts.stage_only:
        return {}
    return publish(opts.data_dir, staging, overwrite=opts.overwrite)
