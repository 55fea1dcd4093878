"""What sits beside the shards: TFDS's metadata files and our `lineage.json`.

The TFDS files are produced by TFDS itself from the `imagenet2012` builder's own
`DatasetInfo`, with the split and shard facts of this run, so `tfds.load` and
`tfds.builder_from_directory` read the output as if `tfds build` had written it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

from imagenet_beam import dataset, storage
from imagenet_beam.shards import ShardResult

LINEAGE_FILE = "lineage.json"
DATASET_INFO_FILE = "dataset_info.json"
# Written last when a version is published: a version directory without it is not (yet, or
# no longer) a complete publication, and everything of ours that reads one ignores it.
COMPLETE_MARKER = "_COMPLETE"
LINEAGE_SCHEMA = 1


def _split_shards(results: Iterable[ShardResult]) -> dict[str, list[ShardResult]]:
    by_split: dict[str, list[ShardResult]] = {}
    for r in sorted(results, key=lambda r: (r.split, r.index)):
        by_split.setdefault(r.split, []).append(r)
    return by_split


def write_tfds_metadata(
    version_dir: str, file_format: str, results: Iterable[ShardResult]
) -> list[str]:
    """Writes dataset_info.json, features.json and label.labels.txt; returns their names."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.datasets.imagenet2012 import imagenet2012_dataset_builder

    with storage.scratch_dir() as scratch:
        builder = imagenet2012_dataset_builder.Builder(
            data_dir=os.path.join(scratch, "builder"), file_format=file_format
        )
        info = builder.info
        split_infos = [
            tfds.core.SplitInfo(
                name=split,
                shard_lengths=[s.num_examples for s in shards],
                num_bytes=sum(s.num_bytes for s in shards),
                filename_template=tfds.core.ShardedFileTemplate(
                    data_dir=builder.data_dir,
                    dataset_name=dataset.DATASET_NAME,
                    split=split,
                    filetype_suffix=file_format,
                ),
            )
            for split, shards in _split_shards(results).items()
        ]
        info.set_splits(tfds.core.SplitDict(split_infos))
        out = os.path.join(scratch, "metadata")
        os.makedirs(out)
        info.write_to_directory(out)
        names = sorted(os.listdir(out))
        for name in names:
            storage.upload_file(os.path.join(out, name), storage.join(version_dir, name))
    return names


def lineage_record(
    results: Iterable[ShardResult],
    inputs: Mapping[str, Mapping],
    options: Mapping,
    warnings: Iterable[str] = (),
    extra: Mapping | None = None,
) -> dict:
    """The run's account: inputs, options, and per split its shards with checksums."""
    splits, fixed, skipped = {}, [], []
    for split, shards in _split_shards(results).items():
        count = sum(s.num_examples for s in shards)
        splits[split] = {
            "num_examples": count,
            "full_imagenet_examples": dataset.FULL_SPLIT_SIZES[split],
            "num_shards": len(shards),
            "num_bytes": sum(s.num_bytes for s in shards),
            "shards": [
                {
                    "file": s.file,
                    "num_examples": s.num_examples,
                    "num_bytes": s.num_bytes,
                    "sha256": s.sha256,
                }
                for s in shards
            ],
        }
        fixed += [dict(split=split, **f) for s in shards for f in s.fixed]
        skipped += [dict(split=split, **f) for s in shards for f in s.skipped]
    record = {
        "schema": LINEAGE_SCHEMA,
        "dataset": dataset.DATASET_NAME,
        "version": dataset.VERSION,
        "producer": producer(),
        "inputs": {k: dict(v) for k, v in sorted(inputs.items())},
        "options": dict(options),
        "splits": splits,
        "fixed_images": sorted(fixed, key=lambda f: (f["split"], f["file_name"])),
        "skipped_images": sorted(skipped, key=lambda f: (f["split"], f["file_name"])),
        "warnings": list(warnings),
    }
    if extra:
        record.update(extra)
    return record


def producer() -> dict:
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "name": "imagenet-beam",
        "version": version("imagenet-beam"),
        "apache_beam": version("apache-beam"),
        "tensorflow_datasets": version("tensorflow-datasets"),
    }


def write_lineage(version_dir: str, record: Mapping) -> None:
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    storage.write_bytes(storage.join(version_dir, LINEAGE_FILE), text.encode("utf-8"))


def completion_record(version_dir: str) -> dict:
    """What the marker holds: every file of the version (but itself) with its size, and the
    lineage's sha256, so a reader can tell the marker belongs to the files beside it."""
    prefix = version_dir.rstrip("/") + "/"
    files = {
        path[len(prefix):]: storage.size(path)
        for path in storage.list_files(version_dir)
        if storage.basename(path) != COMPLETE_MARKER
    }
    return {
        "dataset": dataset.DATASET_NAME,
        "version": dataset.VERSION,
        "lineage_sha256": storage.sha256_of(storage.join(version_dir, LINEAGE_FILE)),
        "files": files,
    }


def write_completion_marker(version_dir: str, record: Mapping) -> None:
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    storage.write_bytes(storage.join(version_dir, COMPLETE_MARKER), text.encode("utf-8"))


def is_published(version_dir: str) -> bool:
    """True when the version's publication finished (its completion marker is there)."""
    return storage.exists(storage.join(version_dir, COMPLETE_MARKER))


def read_completion_marker(version_dir: str) -> dict:
    return json.loads(storage.read_bytes(storage.join(version_dir, COMPLETE_MARKER)))


def read_lineage(version_dir: str) -> dict:
    return json.loads(storage.read_bytes(storage.join(version_dir, LINEAGE_FILE)))
