"""Every path and name of the output layout, in one place.

    DATA_DIR/
      imagenet2012/
        5.1.0/                       the published version (what TFDS reads)
          imagenet2012-<split>.<format>-NNNNN-of-MMMMM, dataset_info.json, features.json,
          imagenet2012-<split>.tfrecord-NNNNN-of-MMMMM.idx (with --tfrecord_index: DALI's),
          label.labels.txt, lineage.json, report.html, report.png, _COMPLETE (written last)
        .5.1.0.incomplete/           staging: shards are written here, then swapped in
          _work/                     per split its input record; index, plan, shard results
        5.1.0.replaced               the previous version, for the moment of the swap
        .5.1.0.lease                 who is writing the version (one writer at a time)
      imagenet2012_subset/1pct/5.0.0/, imagenet2012_subset/10pct/5.0.0/, imagenet2012_real/1.0.0/
                                     TFDS's datasets from the same archives, laid out alike
      imagenet2012_classic/1.0.0/    the classic TF/TPU format: train-NNNNN-of-01024,
                                     validation-NNNNN-of-00128, lineage.json, report, _COMPLETE
      .imagenet2012-work/            kept between runs: archive-check cache, merged test tar,
        unpacked/                    uncompressed copies of .tar.gz inputs, with their reports
        bboxes/<split>/              the bounding boxes, one file per train class (classic)

Standard library only: the DAG names Assets and paths at parse time.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re

from imagenet_beam import dataset

STAGING_SUFFIX = ".incomplete"
REPLACED_SUFFIX = ".replaced"
LEASE_SUFFIX = ".lease"
STAGING_WORK = "_work"
INDEX_DIR = "index"  # one file of member descriptors per work item
PLAN_DIR = "plan"  # one file per shard: its members in key order; per split its totals
RESULTS_DIR = "shards"  # one file per written shard: count, bytes, sha256, notes
ERRORS_DIR = "errors"  # one file per step that met bad input: its message
RUN_WORK_DIR = "." + dataset.DATASET_NAME + "-work"
ARCHIVE_CHECKS_DIR = "archive-checks"
MERGED_TEST_ARCHIVE = "ILSVRC2012_img_test_merged.tar"
BOXES_DIR = "bboxes"  # the box archives' annotations, per split and group
UNPACKED_DIR = "unpacked"  # a .tar.gz input's images, per split, as an uncompressed tar

LINEAGE_FILE = "lineage.json"
DATASET_INFO_FILE = "dataset_info.json"
# Written last when a version is published: a version directory without it is not (yet, or
# no longer) a complete publication, and everything of ours that reads one ignores it.
COMPLETE_MARKER = "_COMPLETE"
# The version at a glance (`report.py`): one self-contained page and one picture.
REPORT_HTML = "report.html"
REPORT_PNG = "report.png"
REPORT_FILES = (REPORT_HTML, REPORT_PNG)


def is_remote(path: str) -> bool:
    return "://" in path


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


@dataclasses.dataclass(frozen=True)
class Output:
    """What a run publishes: a dataset's name, config and version (its directory under
    DATA_DIR), the splits it has, and how its shards are named.

    TFDS's datasets name shards `<name>-<split>.<format>-NNNNN-of-MMMMM`; the classic
    TF/TPU format names them `<split>-NNNNN-of-MMMMM` (what its readers glob for).
    """

    name: str
    version: str
    config: str | None = None
    splits: tuple[str, ...] = dataset.SPLITS
    classic_names: bool = False

    @property
    def key(self) -> str:
        """The `dataset` setting's value for it (imagenet2012, imagenet2012_subset/1pct)."""
        return f"{self.name}/{self.config}" if self.config else self.name

    @property
    def directory(self) -> tuple[str, ...]:
        """Its version directory's parts below DATA_DIR."""
        return tuple(p for p in (self.name, self.config, self.version) if p)

    def shard_prefix(self, split: str) -> str:
        """What every shard file of a split starts with, and what its Asset URI ends with."""
        return split if self.classic_names else f"{self.name}-{split}"

    def shard_file_name(self, split: str, file_format: str, index: int, num_shards: int) -> str:
        if self.classic_names:
            return f"{split}-{index:05d}-of-{num_shards:05d}"
        return f"{self.shard_prefix(split)}.{file_format}-{index:05d}-of-{num_shards:05d}"


IMAGENET2012 = Output(dataset.DATASET_NAME, dataset.VERSION)
CLASSIC = Output(
    "imagenet2012_classic", "1.0.0", splits=(dataset.TRAIN, dataset.VALIDATION),
    classic_names=True,
)
# TFDS's datasets from the same archives (their names, configs and versions as in TFDS).
SIBLINGS = (
    Output("imagenet2012_subset", "5.0.0", "1pct", (dataset.TRAIN, dataset.VALIDATION)),
    Output("imagenet2012_subset", "5.0.0", "10pct", (dataset.TRAIN, dataset.VALIDATION)),
    Output("imagenet2012_real", "1.0.0", splits=(dataset.VALIDATION,)),
)
TFDS_OUTPUTS = {o.key: o for o in (IMAGENET2012, *SIBLINGS)}
OUTPUTS = (*TFDS_OUTPUTS.values(), CLASSIC)
_TFDS_SHARD = re.compile(
    "(" + "|".join(sorted({re.escape(o.name) for o in OUTPUTS if not o.classic_names}))
    + r")-([a-z]+)\.([a-z_]+)-\d{5}-of-\d{5}"
)
_CLASSIC_SHARD = re.compile(r"([a-z]+)-\d{5}-of-\d{5}")


def output_for(dataset_key: str, schema: str) -> Output:
    """The output of the `dataset` and `schema` settings (checked by `settings`)."""
    return CLASSIC if schema == "classic" else TFDS_OUTPUTS[dataset_key]


def shard_prefix(split: str) -> str:
    """imagenet2012's shard prefix (see `Output.shard_prefix`)."""
    return IMAGENET2012.shard_prefix(split)


def shard_file_name(
    split: str, file_format: str, index: int, num_shards: int, output: Output = IMAGENET2012
) -> str:
    """TFDS's shard name: imagenet2012-train.tfrecord-00000-of-01024."""
    return output.shard_file_name(split, file_format, index, num_shards)


def shard_file_format(name: str) -> str | None:
    """The file format a shard's name says (imagenet2012-train.tfrecord-00000-of-01024;
    a classic shard, train-00000-of-01024, is TFRecord)."""
    match = _TFDS_SHARD.fullmatch(name)
    if match:
        return match.group(3)
    return "tfrecord" if _CLASSIC_SHARD.fullmatch(name) else None


# A TFRecord shard's record index for NVIDIA DALI (`formats.tfrecord_index`), beside it.
INDEX_SUFFIX = ".idx"


def index_file_name(shard_name: str) -> str:
    """imagenet2012-train.tfrecord-00000-of-01024.idx: DALI's tfrecord2idx naming."""
    return shard_name + INDEX_SUFFIX


def is_index_file(name: str) -> bool:
    return name.endswith(INDEX_SUFFIX) and shard_file_format(name[: -len(INDEX_SUFFIX)]) is not None


def is_shard_file(name: str) -> bool:
    """A shard, or a shard's index file: published with the shards, before the metadata."""
    if name.endswith(INDEX_SUFFIX):
        name = name[: -len(INDEX_SUFFIX)]
    return shard_file_format(name) is not None


# What a version directory holds besides its shards (TFDS's files and ours).
VERSION_FILES = frozenset(
    {DATASET_INFO_FILE, "features.json", "label.labels.txt", LINEAGE_FILE, COMPLETE_MARKER,
     *REPORT_FILES}
)


def is_version_file(name: str) -> bool:
    """A file name a version directory of TFDS's or ours holds (a shard, a shard's index
    file, or metadata)."""
    return name in VERSION_FILES or "/" not in name and (
        is_shard_file(name) or name.endswith(".labels.txt")  # imagenet2012_real has two
    )


def is_split_shard(name: str, split: str) -> bool:
    """A shard of this split (or its index file), of any output."""
    if name.endswith(INDEX_SUFFIX):
        name = name[: -len(INDEX_SUFFIX)]
    tfds_match = _TFDS_SHARD.fullmatch(name)
    if tfds_match:
        return tfds_match.group(2) == split
    classic_match = _CLASSIC_SHARD.fullmatch(name)
    return bool(classic_match) and classic_match.group(1) == split


@dataclasses.dataclass(frozen=True)
class OutputLayout:
    """The paths of one output (imagenet2012 unless told) in one data_dir (local or gs://)."""

    data_dir: str
    output: Output = IMAGENET2012

    @property
    def dataset_dir(self) -> str:
        """The folder holding the version folder (for a config: the config's folder)."""
        return join(self.data_dir, *self.output.directory[:-1])

    @property
    def version_dir(self) -> str:
        return join(self.dataset_dir, self.output.version)

    @property
    def staging_dir(self) -> str:
        return join(self.dataset_dir, "." + self.output.version + STAGING_SUFFIX)

    @property
    def replaced_dir(self) -> str:
        return self.version_dir + REPLACED_SUFFIX

    @property
    def lease_file(self) -> str:
        """The version's lease record (see `lease`): beside it, never inside."""
        return join(self.dataset_dir, "." + self.output.version + LEASE_SUFFIX)

    @property
    def run_work_dir(self) -> str:
        """Kept between runs (beside imagenet2012/): caches and the merged test tar."""
        return join(self.data_dir, RUN_WORK_DIR)

    @property
    def archive_checks_dir(self) -> str:
        return join(self.run_work_dir, ARCHIVE_CHECKS_DIR)

    @property
    def merged_test_archive(self) -> str:
        """Where the merged test tar goes (not the manual dir: it is our product)."""
        return join(self.run_work_dir, MERGED_TEST_ARCHIVE)

    def boxes_dir(self, split: str) -> str:
        """The split's bounding boxes, read from its box archive (`sources.bboxes`) for the
        classic schema: one small file per train class; kept between runs."""
        return join(self.run_work_dir, BOXES_DIR, split)

    @property
    def unpacked_dir(self) -> str:
        """Where .tar.gz inputs are unpacked to (see `sources.packed`): our product too."""
        return join(self.run_work_dir, UNPACKED_DIR)


@dataclasses.dataclass(frozen=True)
class StagingLayout:
    """The paths inside one staging directory."""

    staging_dir: str

    @property
    def work_dir(self) -> str:
        return join(self.staging_dir, STAGING_WORK)

    @property
    def index_dir(self) -> str:
        return join(self.work_dir, INDEX_DIR)

    @property
    def plan_dir(self) -> str:
        return join(self.work_dir, PLAN_DIR)

    @property
    def results_dir(self) -> str:
        return join(self.work_dir, RESULTS_DIR)

    @property
    def errors_dir(self) -> str:
        return join(self.work_dir, ERRORS_DIR)

    @property
    def space_reserve(self) -> str:
        """Space held back on a local disk for the error records of a run that fills it."""
        return join(self.work_dir, "space-reserve")

    def error_file(self, name: str) -> str:
        return join(self.errors_dir, f"{name}.json")

    def split_record(self, split: str) -> str:
        """The split's input and settings, written when its conversion starts."""
        return join(self.work_dir, f"split-{split}.json")

    def is_split_record(self, path: str) -> bool:
        return basename(path).startswith("split-") and path.startswith(self.work_dir)

    def index_file(self, split: str, ident: str) -> str:
        return join(self.index_dir, f"{split}-{ident}.arrow")

    def plan_file(self, split: str, index: int, num_shards: int) -> str:
        return join(self.plan_dir, f"{split}-{index:05d}-of-{num_shards:05d}.arrow")

    def planned_file(self, split: str) -> str:
        """The split's totals (shards, images), written once every shard is planned."""
        return join(self.plan_dir, f"{split}-planned.json")

    def result_file(self, split: str, index: int) -> str:
        return join(self.results_dir, f"{split}-{index:05d}.json")

    def shard_path(self, file_name: str) -> str:
        return join(self.staging_dir, file_name)

    def belongs_to_split(self, path: str, split: str) -> bool:
        """A staged file of this split: a shard, its input record or one of its work files."""
        name = basename(path)
        if is_split_shard(name, split) and path == self.shard_path(name):
            return True
        if path == self.split_record(split):
            return True
        return name.startswith(f"{split}-") and any(
            path == join(d, name)
            for d in (self.index_dir, self.plan_dir, self.results_dir, self.errors_dir)
        )
