"""What sits beside the shards: TFDS's metadata files and our `lineage.json`.

The TFDS files are produced by TFDS itself from the `imagenet2012` builder's own
`DatasetInfo`, with the split and shard facts of this run, so `tfds.load` and
`tfds.builder_from_directory` read the output as if `tfds build` had written it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from imagenet_beam import dataset, layout, stats, storage
from imagenet_beam.layout import LINEAGE_FILE

if TYPE_CHECKING:
    from imagenet_beam.shards import ShardResult

LINEAGE_SCHEMA = 1


def _split_shards(results: Iterable[ShardResult]) -> dict[str, list[ShardResult]]:
    by_split: dict[str, list[ShardResult]] = {}
    for r in sorted(results, key=lambda r: (r.split, r.index)):
        by_split.setdefault(r.split, []).append(r)
    return by_split


def _tfds_builder(output: layout.Output, data_dir: str, file_format: str):
    """TFDS's own builder of the output (never run: its DatasetInfo is what we need)."""
    import importlib

    module = importlib.import_module(
        f"tensorflow_datasets.datasets.{output.name}.{output.name}_dataset_builder"
    )
    kwargs = {"config": output.config} if output.config else {}
    return module.Builder(data_dir=data_dir, file_format=file_format, **kwargs)


def write_tfds_metadata(
    version_dir: str, file_format: str, results: Iterable[ShardResult],
    output: layout.Output = layout.IMAGENET2012,
) -> list[str]:
    """Writes dataset_info.json, features.json and label.labels.txt (or what the output's
    TFDS builder writes: its own DatasetInfo); returns their names."""
    import tensorflow_datasets as tfds

    with storage.scratch_dir() as scratch:
        builder = _tfds_builder(output, os.path.join(scratch, "builder"), file_format)
        info = builder.info
        split_infos = [
            tfds.core.SplitInfo(
                name=split,
                shard_lengths=[s.num_examples for s in shards],
                num_bytes=sum(s.num_bytes for s in shards),
                filename_template=tfds.core.ShardedFileTemplate(
                    data_dir=builder.data_dir,
                    dataset_name=output.name,
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


@dataclasses.dataclass(frozen=True)
class ShardLineage:
    file: str
    num_examples: int
    num_bytes: int
    sha256: str
    # with --tfrecord_index: DALI's index beside the shard, {file, num_bytes, sha256};
    # None without it, and in a lineage written before it existed
    index_file: dict | None = None


@dataclasses.dataclass(frozen=True)
class SplitLineage:
    num_examples: int
    full_imagenet_examples: int
    num_shards: int
    num_bytes: int
    shards: list[ShardLineage]
    # examples per class, file sizes and image dimensions (`stats.ImageStats.to_dict`);
    # empty in a lineage written before they were counted
    stats: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SplitLineage:
        return cls(**{**d, "shards": [ShardLineage(**s) for s in d["shards"]]})


@dataclasses.dataclass(frozen=True)
class Lineage:
    """What lineage.json says: what went in, with which settings, and what came out.

    inputs: split → {path, size} of what it was converted from; options: the settings
    (`Settings.lineage`) and the runner; archives: the archive checks (path, size, sha256,
    md5, whether they matched the published values); test_patch: the merge's report;
    fingerprint: identifies the archives and the settings that shape output; airflow: the
    DAG run that made it.
    """

    producer: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    options: dict[str, Any]
    splits: dict[str, SplitLineage]
    fixed_images: list[dict[str, Any]]
    skipped_images: list[dict[str, Any]]
    warnings: list[str]
    fingerprint: str | None = None
    archives: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    test_patch: dict[str, Any] | None = None
    airflow: dict[str, Any] | None = None
    # with the ILSVRC devkit: the class names (`words`, by label), and train classes whose
    # count differs from its num_train_images (see `run.class_record`)
    classes: dict[str, Any] | None = None
    # the classic schema with box archives: per split the boxes' counts and the XML files
    # that went to no image (`run.classic_record`)
    boxes: dict[str, Any] | None = None
    schema: int = LINEAGE_SCHEMA
    version: str = dataset.VERSION
    dataset: str = dataset.DATASET_NAME  # last: the field's name hides the module below it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Lineage:
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in d.items() if k in known}
        fields["splits"] = {k: SplitLineage.from_dict(v) for k, v in d["splits"].items()}
        return cls(**fields)


def lineage_record(
    results: Iterable[ShardResult],
    inputs: Mapping[str, Mapping],
    options: Mapping,
    warnings: Iterable[str] = (),
    **provenance: Any,
) -> Lineage:
    """The run's account: inputs, options, and per split its shards with checksums.

    provenance: fingerprint, archives, test_patch, airflow (see `Lineage`)."""
    splits, fixed, skipped = {}, [], []
    for split, shards in _split_shards(results).items():
        splits[split] = SplitLineage(
            num_examples=sum(s.num_examples for s in shards),
            full_imagenet_examples=dataset.FULL_SPLIT_SIZES[split],
            num_shards=len(shards),
            num_bytes=sum(s.num_bytes for s in shards),
            shards=[
                ShardLineage(s.file, s.num_examples, s.num_bytes, s.sha256, s.index_file)
                for s in shards
            ],
            stats=stats.ImageStats.total(s.stats for s in shards).to_dict(),
        )
        fixed += [dict(split=split, shard=s.file, **f) for s in shards for f in s.fixed]
        skipped += [dict(split=split, **f) for s in shards for f in s.skipped]
    return Lineage(
        producer=producer(),
        inputs={k: dict(v) for k, v in sorted(inputs.items())},
        options=dict(options),
        splits=splits,
        fixed_images=sorted(fixed, key=lambda f: (f["split"], f["file_name"])),
        skipped_images=sorted(skipped, key=lambda f: (f["split"], f["file_name"])),
        warnings=list(warnings),
        **provenance,
    )


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


def write_lineage(version_dir: str, record: Lineage) -> None:
    text = json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n"
    storage.write_bytes(storage.join(version_dir, LINEAGE_FILE), text.encode("utf-8"))


def read_lineage(version_dir: str) -> Lineage:
    text = storage.read_bytes(storage.join(version_dir, LINEAGE_FILE))
    return Lineage.from_dict(json.loads(text))
