"""What a conversion writes beside the shards: TFDS's metadata files, lineage.json and the
completion marker, checked on one small CLI conversion against TFDS's own build of the same
input and against the files on disk."""

from __future__ import annotations

import glob
import hashlib
import json
import os

import pytest

from imagenet_beam import synthetic
from tests.conftest import convert, version_dir

SPLITS = ("train", "validation", "test")
NUM_SHARDS = 2


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("metadata_manual")),
        num_classes=2,
        train_per_class=3,
        num_validation=5,
        num_test=4,
        test_archives=("2012",),
    )


@pytest.fixture(scope="module")
def ours(generated, tmp_path_factory) -> str:
    data_dir = tmp_path_factory.mktemp("metadata_out")
    convert(generated.manual_dir, data_dir, f"--num_shards={NUM_SHARDS}",
            "--direct_running_mode=in_memory")
    return version_dir(data_dir)


@pytest.fixture(scope="module")
def theirs(generated, tmp_path_factory) -> str:
    """TFDS's own imagenet2012 builder on the same input: the reference for its files."""
    import tensorflow_datasets as tfds

    data_dir = str(tmp_path_factory.mktemp("metadata_tfds"))
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=generated.manual_dir)
    )
    return version_dir(data_dir)


def _read(path: str, name: str) -> bytes:
    with open(os.path.join(path, name), "rb") as f:
        return f.read()


def _lineage(path: str) -> dict:
    return json.loads(_read(path, "lineage.json"))


def test_features_and_label_files_are_the_ones_tfds_writes(ours, theirs):
    assert json.loads(_read(ours, "features.json")) == json.loads(_read(theirs, "features.json"))
    assert _read(ours, "label.labels.txt") == _read(theirs, "label.labels.txt")


def test_dataset_info_is_tfds_own_but_for_the_splits(ours, theirs):
    mine = json.loads(_read(ours, "dataset_info.json"))
    reference = json.loads(_read(theirs, "dataset_info.json"))
    assert {s["name"] for s in mine.pop("splits")} == {s["name"] for s in reference.pop("splits")}
    assert mine == reference


def test_tfds_reads_the_shards_lineage_records(ours, generated):
    import tensorflow_datasets as tfds

    lineage = _lineage(ours)
    builder = tfds.builder_from_directory(ours)
    assert (builder.info.name, str(builder.info.version)) == ("imagenet2012", "5.1.0")
    assert builder.info.file_format.value == "tfrecord"
    assert set(builder.info.splits) == set(SPLITS)
    for split in SPLITS:
        info, recorded = builder.info.splits[split], lineage["splits"][split]
        assert info.shard_lengths == [s["num_examples"] for s in recorded["shards"]]
        assert len(info.shard_lengths) == NUM_SHARDS
        assert info.num_examples == len(generated.split(split))
        assert info.num_bytes == recorded["num_bytes"]
        assert [os.path.basename(f) for f in info.filenames] == [
            s["file"] for s in recorded["shards"]
        ]


def _records_in(path: str) -> int:
    import tensorflow as tf

    return sum(1 for _ in tf.data.TFRecordDataset(path))


def test_lineage_describes_the_run_and_every_shard(ours, generated):
    import tensorflow_datasets as tfds

    lineage = _lineage(ours)
    assert (lineage["schema"], lineage["dataset"], lineage["version"]) == (
        1, "imagenet2012", "5.1.0"
    )
    assert lineage["producer"]["name"] == "imagenet-beam"
    assert lineage["producer"]["tensorflow_datasets"] == tfds.__version__
    assert lineage["options"]["num_shards"] == NUM_SHARDS
    assert lineage["options"]["splits"] == list(SPLITS)
    assert sorted(lineage["splits"]) == sorted(SPLITS)
    for split in SPLITS:
        info = lineage["splits"][split]
        files = sorted(glob.glob(os.path.join(ours, f"imagenet2012-{split}.tfrecord-*")))
        assert [s["file"] for s in info["shards"]] == [os.path.basename(f) for f in files]
        assert info["num_shards"] == len(files) == NUM_SHARDS
        assert [s["num_examples"] for s in info["shards"]] == [_records_in(f) for f in files]
        assert info["num_examples"] == len(generated.split(split))
        assert info["num_bytes"] == sum(os.path.getsize(f) for f in files)
        assert info["full_imagenet_examples"] == {
            "train": 1_281_167, "validation": 50_000, "test": 100_000
        }[split]
        source = lineage["inputs"][split]
        assert source["size"] == os.path.getsize(source["path"])


def test_completion_marker_lists_every_file_with_its_size(ours):
    marker = json.loads(_read(ours, "_COMPLETE"))
    assert (marker["dataset"], marker["version"]) == ("imagenet2012", "5.1.0")
    on_disk = {
        name: os.path.getsize(os.path.join(ours, name))
        for name in os.listdir(ours)
        if name != "_COMPLETE"
    }
    assert marker["files"] == on_disk
    assert {"dataset_info.json", "features.json", "label.labels.txt", "lineage.json"} <= set(
        on_disk
    )
    assert len([n for n in on_disk if ".tfrecord-" in n]) == NUM_SHARDS * len(SPLITS)
    assert marker["lineage_sha256"] == hashlib.sha256(_read(ours, "lineage.json")).hexdigest()
