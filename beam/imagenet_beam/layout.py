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
      .imagenet2012-work/            kept between runs: archive-check cache, merged test tar,
        unpacked/                    uncompressed copies of .tar.gz inputs, with their reports

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


def shard_prefix(split: str) -> str:
    """What every shard file of a split starts with, and what its Asset URI ends with."""
    return f"{dataset.DATASET_NAME}-{split}"


def shard_file_name(split: str, file_format: str, index: int, num_shards: int) -> str:
    """TFDS's shard name: imagenet2012-train.tfrecord-00000-of-01024."""
    return f"{shard_prefix(split)}.{file_format}-{index:05d}-of-{num_shards:05d}"


def shard_file_format(name: str) -> str | None:
    """The file format a shard's name says (imagenet2012-train.tfrecord-00000-of-01024)."""
    match = re.fullmatch(
        re.escape(dataset.DATASET_NAME) + r"-[a-z]+\.([a-z_]+)-\d{5}-of-\d{5}", name
    )
    return match.group(1) if match else None


# A TFRecord shard's record index for NVIDIA DALI (`formats.tfrecord_index`), beside it.
INDEX_SUFFIX = ".idx"


def index_file_name(shard_name: str) -> str:
    """imagenet2012-train.tfrecord-00000-of-01024.idx: DALI's tfrecord2idx naming."""
    return shard_name + INDEX_SUFFIX


def is_index_file(name: str) -> bool:
    return name.endswith(INDEX_SUFFIX) and shard_file_format(name[: -len(INDEX_SUFFIX)]) is not None


def is_shard_file(name: str) -> bool:
    """A shard, or a shard's index file: published with the shards, before the metadata."""
    return name.startswith(dataset.DATASET_NAME + "-")


# What a version directory holds besides its shards (TFDS's files and ours).
VERSION_FILES = frozenset(
    {DATASET_INFO_FILE, "features.json", "label.labels.txt", LINEAGE_FILE, COMPLETE_MARKER,
     *REPORT_FILES}
)


def is_version_file(name: str) -> bool:
    """A file name a version directory of TFDS's or ours holds (a shard, a shard's index
    file, or metadata)."""
    return name in VERSION_FILES or ("/" not in name and is_shard_file(name))


def is_split_shard(name: str, split: str) -> bool:
    return name.startswith(shard_prefix(split) + ".")


@dataclasses.dataclass(frozen=True)
class OutputLayout:
    """The paths of one data_dir (local or gs://)."""

    data_dir: str

    @property
    def dataset_dir(self) -> str:
        return join(self.data_dir, dataset.DATASET_NAME)

    @property
    def version_dir(self) -> str:
        return join(self.dataset_dir, dataset.VERSION)

    @property
    def staging_dir(self) -> str:
        return join(self.dataset_dir, "." + dataset.VERSION + STAGING_SUFFIX)

    @property
    def replaced_dir(self) -> str:
        return self.version_dir + REPLACED_SUFFIX

    @property
    def lease_file(self) -> str:
        """The version's lease record (see `lease`): beside it, never inside."""
        return join(self.dataset_dir, "." + dataset.VERSION + LEASE_SUFFIX)

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
        return join(self.index_dir, f"{split}-{ident}.json")

    def plan_file(self, split: str, index: int, num_shards: int) -> str:
        return join(self.plan_dir, f"{split}-{index:05d}-of-{num_shards:05d}.json")

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
