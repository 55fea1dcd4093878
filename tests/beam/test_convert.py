"""The conversion CLI end to end on generated inputs, read back with TFDS and tf.data."""

from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from imagenet_beam import dataset, synthetic, verify
from tests.conftest import convert, read_tfrecord_examples, version_dir

SPLITS = ("train", "validation", "test")


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def _is_rgb_jpeg(data: bytes) -> bool:
    image = Image.open(io.BytesIO(data))
    return image.format == "JPEG" and image.mode == "RGB"


@pytest.fixture(scope="session")
def tfds_output(awkward_input, tmp_path_factory):
    """TFDS's own imagenet2012 builder on the same input."""
    import tensorflow_datasets as tfds

    data_dir = str(tmp_path_factory.mktemp("tfds_out"))
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=awkward_input.manual_dir)
    )
    return version_dir(data_dir)


@pytest.mark.parametrize("split", SPLITS)
def test_same_examples_as_tfds(split, awkward_input, tfds_output, tfrecord_output):
    ours = read_tfrecord_examples(tfrecord_output[0], split)
    theirs = read_tfrecord_examples(tfds_output, split)
    generated = awkward_input.by_name(split)

    assert set(ours) == set(theirs) == set(generated)
    for name, (label, image) in ours.items():
        their_label, their_image = theirs[name]
        member = generated[name]
        assert label == their_label == member.label, name
        tfds_fixes = split == "train" and (
            name in dataset.TFDS_CMYK_NAMES or name in dataset.TFDS_PNG_NAMES
        )
        if tfds_fixes:
            assert _is_rgb_jpeg(image) and _is_rgb_jpeg(their_image), name
            diff = np.abs(_pixels(image) - _pixels(their_image)).mean()
            assert diff < 8, f"{name}: mean pixel difference {diff} from TFDS's fix"
        elif member.kind.startswith(("cmyk", "png")):
            # TFDS does not know this name and stores the raw CMYK/PNG bytes.
            assert their_image == member.data, name
            assert _is_rgb_jpeg(image), name
            diff = np.abs(_pixels(image) - _pixels(member.data)).mean()
            assert diff < 8, f"{name}: mean pixel difference {diff} from the original"
        else:
            assert image == their_image == member.data, name


def test_every_awkward_kind_was_generated(awkward_input):
    kinds = {m.kind for m in awkward_input.members}
    assert set(synthetic.AWKWARD_KINDS) <= kinds


def test_lineage_lists_the_fixed_images(awkward_input, tfrecord_output):
    with open(os.path.join(tfrecord_output[0], "lineage.json")) as f:
        lineage = json.load(f)
    fixed = {(f["split"], f["file_name"]) for f in lineage["fixed_images"]}
    expected = {
        (m.split, m.file_name) for m in awkward_input.members if m.kind.startswith(("cmyk", "png"))
    }
    assert fixed == expected
    assert lineage["skipped_images"] == []
    assert lineage["inputs"]["train"]["path"].endswith(dataset.TRAIN_ARCHIVE)
    assert lineage["options"]["file_format"] == "tfrecord"


def test_shards_and_lineage_agree_with_disk(tfrecord_output):
    path, proc = tfrecord_output
    with open(os.path.join(path, "lineage.json")) as f:
        lineage = json.load(f)
    for split in SPLITS:
        info = lineage["splits"][split]
        assert info["num_shards"] == 3
        for shard in info["shards"]:
            with open(os.path.join(path, shard["file"]), "rb") as f:
                data = f.read()
            assert hashlib.sha256(data).hexdigest() == shard["sha256"]
            assert len(data) == shard["num_bytes"]
        assert sum(s["num_examples"] for s in info["shards"]) == info["num_examples"]
    summary = verify.verify_output(path)
    assert summary["splits"]["train"]["num_shards"] == 3
    assert f"wrote {path}" in proc.stdout


def test_loads_through_tfds_and_decodes_every_image(awkward_input, tfrecord_output):
    import tensorflow_datasets as tfds

    data_dir = os.path.dirname(os.path.dirname(tfrecord_output[0]))
    for split in SPLITS:
        ds = tfds.load("imagenet2012", data_dir=data_dir, split=split)
        count = 0
        for example in ds:
            assert example["image"].shape[-1] == 3
            count += 1
        assert count == len(awkward_input.split(split))
    builder = tfds.builder_from_directory(tfrecord_output[0])
    assert builder.info.splits["train"].num_examples == len(awkward_input.split("train"))
    assert builder.info.features["label"].names == list(dataset.class_names())


def test_array_record_loads_as_data_source(awkward_input, tfrecord_output, tmp_path):
    import tensorflow_datasets as tfds

    convert(awkward_input.manual_dir, tmp_path, "--file_format=array_record",
            "--direct_running_mode=in_memory")
    path = version_dir(tmp_path)
    assert any(name.startswith("imagenet2012-train.array_record-") for name in os.listdir(path))
    builder = tfds.builder_from_directory(path)
    for split in SPLITS:
        source = builder.as_data_source(split=split)
        assert len(source) == len(awkward_input.split(split))
        expected = read_tfrecord_examples(tfrecord_output[0], split)
        for i in range(len(source)):
            example = source[i]
            name = example["file_name"].decode() if isinstance(example["file_name"], bytes) \
                else str(example["file_name"])
            assert example["image"].ndim == 3 and example["image"].shape[-1] == 3
            assert int(example["label"]) == expected[name][0]
    verify.verify_output(path)


def test_two_runs_give_identical_shards(awkward_input, tfrecord_output, tmp_path):
    # A different running mode and worker count must not change a byte.
    convert(awkward_input.manual_dir, tmp_path, "--file_format=tfrecord", "--num_shards=3",
            "--direct_running_mode=in_memory")
    first = json.load(open(os.path.join(tfrecord_output[0], "lineage.json")))
    second = json.load(open(os.path.join(version_dir(tmp_path), "lineage.json")))
    assert first["splits"] == second["splits"]
    for split in SPLITS:
        for shard in first["splits"][split]["shards"]:
            a = open(os.path.join(tfrecord_output[0], shard["file"]), "rb").read()
            b = open(os.path.join(version_dir(tmp_path), shard["file"]), "rb").read()
            assert a == b, shard["file"]
