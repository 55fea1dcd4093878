"""Our shards are byte for byte the shards TFDS's own imagenet2012 builder writes.

TFDS runs in a subprocess under the pure-Python protobuf runtime, which writes the entries
of each Example's feature map in the order TFDS inserts them. Under the default upb runtime
that order is drawn per process from a hash seeded by a memory address (see
`imagenet_beam.formats.tfds_schema.FEATURE_ORDER`), so TFDS's own shards change from run to run and
nothing could match them reliably; under the pure-Python runtime they are reproducible, and
they are what upb writes in the runs that keep TFDS's order.

GOLDEN_INPUT_KWARGS and GOLDEN_SHARD_SHA256 are imported by other tests (the Airflow DAG's):
generate the input with `synthetic.generate_manual_dir(dir, **GOLDEN_INPUT_KWARGS)`, convert
it with GOLDEN_NUM_SHARDS shards, and the shards must have these digests.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys

import pytest

from imagenet_beam import dataset, synthetic
from tests.conftest import convert, version_dir

# Every argument spelled out, so a change of the generator's defaults cannot move the input.
# No awkward members: nothing is CMYK or PNG, so neither TFDS nor we re-encode an image.
GOLDEN_INPUT_KWARGS = {
    "num_classes": 4,
    "train_per_class": 6,
    "num_validation": 12,
    "num_test": 12,
    "num_patched": 3,
    "awkward": False,
    "broken": (),
    "test_archives": ("2012",),
    "splits": (dataset.TRAIN, dataset.VALIDATION, dataset.TEST),
    "image_size": (64, 48),
    "seed": 0,
}
GOLDEN_NUM_SHARDS = 1  # what TFDS chooses for a split this small (checked below)

# sha256 of each shard of the golden input. Obtained by running TFDS 4.9.10's builder,
# `tfds.builder("imagenet2012").download_and_prepare(download_config=DownloadConfig(
# manual_dir=...))`, under PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, and equal to what
# `python -m imagenet_beam convert --num_shards=1 --file_format=tfrecord` writes; the tests
# below re-derive both every run.
GOLDEN_SHARD_SHA256 = {
    "imagenet2012-train.tfrecord-00000-of-00001":
        "f572f060f81c5558abe2cd44dc83379ffa632960a1c6fd052f6d3113663f3c13",
    "imagenet2012-validation.tfrecord-00000-of-00001":
        "f6da63b76ed3eb4075cb226dfdeb6cda5a40c908eab4c942302f24cff54f92c6",
    "imagenet2012-test.tfrecord-00000-of-00001":
        "8a07ff450d54abbd890f3f5cdb1a925101be6219ebc41782f5338349f3695401",
}

PURE_PYTHON_PROTOBUF = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}

_TFDS_BUILD = """
import sys
from google.protobuf.internal import api_implementation
import tensorflow_datasets as tfds

assert api_implementation.Type() == "python", api_implementation.Type()
builder = tfds.builder("imagenet2012", data_dir=sys.argv[2])
builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=sys.argv[1]))
"""

SPLITS = (dataset.TRAIN, dataset.VALIDATION, dataset.TEST)


def shard_sha256(version_path: str, dataset_name: str = "imagenet2012") -> dict[str, str]:
    """File name → sha256 of every shard in a version directory."""
    out = {}
    for path in sorted(glob.glob(os.path.join(version_path, f"{dataset_name}-*.tfrecord-*"))):
        with open(path, "rb") as f:
            out[os.path.basename(path)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def golden_input(tmp_path_factory):
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("golden_manual")), **GOLDEN_INPUT_KWARGS
    )


@pytest.fixture(scope="module")
def tfds_golden(golden_input, tmp_path_factory) -> str:
    """TFDS's own builder on the golden input; its version directory."""
    data_dir = str(tmp_path_factory.mktemp("tfds_golden"))
    proc = subprocess.run(
        [sys.executable, "-c", _TFDS_BUILD, golden_input.manual_dir, data_dir],
        capture_output=True,
        text=True,
        env={**os.environ, **PURE_PYTHON_PROTOBUF},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return version_dir(data_dir)


def tfds_num_shards(version_path: str) -> dict[str, int]:
    with open(os.path.join(version_path, "dataset_info.json")) as f:
        info = json.load(f)
    return {split["name"]: len(split["shardLengths"]) for split in info["splits"]}


@pytest.fixture(scope="module")
def ours_golden(golden_input, tfds_golden, tmp_path_factory) -> str:
    """Our CLI on the golden input, with as many shards as TFDS chose."""
    counts = set(tfds_num_shards(tfds_golden).values())
    assert len(counts) == 1, f"TFDS chose different shard counts per split: {counts}"
    data_dir = tmp_path_factory.mktemp("ours_golden")
    convert(
        golden_input.manual_dir,
        data_dir,
        "--file_format=tfrecord",
        f"--num_shards={counts.pop()}",
    )
    return version_dir(data_dir)


def test_golden_input_has_nothing_to_re_encode(golden_input):
    assert {m.kind for m in golden_input.members} == {synthetic.PLAIN}
    assert {m.split for m in golden_input.members} == set(SPLITS)


def test_tfds_chose_one_shard_per_split(tfds_golden):
    assert tfds_num_shards(tfds_golden) == {split: GOLDEN_NUM_SHARDS for split in SPLITS}


@pytest.mark.parametrize("split", SPLITS)
def test_every_shard_is_byte_identical_to_tfds(split, tfds_golden, ours_golden):
    theirs = {k: v for k, v in shard_sha256(tfds_golden).items() if f"-{split}." in k}
    ours = {k: v for k, v in shard_sha256(ours_golden).items() if f"-{split}." in k}
    assert theirs, f"TFDS wrote no {split} shards"
    assert ours == theirs


def test_no_image_was_re_encoded(ours_golden):
    with open(os.path.join(ours_golden, "lineage.json")) as f:
        lineage = json.load(f)
    assert lineage["fixed_images"] == []


def test_shards_have_the_golden_sha256(tfds_golden, ours_golden):
    assert shard_sha256(ours_golden) == GOLDEN_SHARD_SHA256
    assert shard_sha256(tfds_golden) == GOLDEN_SHARD_SHA256
