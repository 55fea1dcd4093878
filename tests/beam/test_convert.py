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


def _file_names_in_record_order(version_path: str, split: str) -> list[list[str]]:
    """Per shard file, in file name order: the examples' file names in record order."""
    import glob

    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(version_path, f"imagenet2012-{split}.tfrecord-*")))
    assert files, f"no {split} shards in {version_path}"
    spec = {"file_name": tf.io.FixedLenFeature([], tf.string)}
    return [
        [tf.io.parse_single_example(raw, spec)["file_name"].numpy().decode()
         for raw in tf.data.TFRecordDataset(path)]
        for path in files
    ]


def _tfds_key(split: str, file_name: str) -> int:
    return int(hashlib.md5(split.encode() + file_name.encode()).hexdigest(), 16)


@pytest.mark.parametrize("split", SPLITS)
def test_examples_are_written_in_tfds_key_order(split, tfrecord_output, tfds_output):
    shards = _file_names_in_record_order(tfrecord_output[0], split)
    assert len(shards) == 3 and all(shards), [len(s) for s in shards]
    names = [name for shard in shards for name in shard]
    keys = [_tfds_key(split, name) for name in names]
    # ascending within every shard, and each shard continues where the previous one ended
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    # the order TFDS itself writes (its shards read one after the other)
    theirs = [name for shard in _file_names_in_record_order(tfds_output, split) for name in shard]
    assert names == theirs


def _tfds_label_file(name: str) -> list[str]:
    """A label list shipped with the installed TFDS imagenet2012 builder."""
    import tensorflow_datasets

    folder = os.path.join(os.path.dirname(tensorflow_datasets.__file__), "datasets", "imagenet2012")
    with open(os.path.join(folder, name)) as f:
        return f.read().split()


def test_validation_labels_come_from_the_number_in_the_name(tmp_path):
    # A validation tar with gaps in its numbering: sorted position is not the number.
    generated = synthetic.generate_manual_dir(
        str(tmp_path / "manual"), splits=("validation",), num_validation=10,
        missing_validation=(2, 5, 6),
    )
    convert(generated.manual_dir, tmp_path / "out", "--splits=validation",
            "--direct_running_mode=in_memory")
    stored = read_tfrecord_examples(version_dir(tmp_path / "out"), "validation")
    class_ids = {wnid: i for i, wnid in enumerate(_tfds_label_file("labels.txt"))}
    line_of_number = _tfds_label_file("validation_labels.txt")
    assert set(stored) == set(generated.by_name("validation"))
    expected = {}
    for name in stored:
        number = int(name[len("ILSVRC2012_val_") : -len(".JPEG")])
        expected[name] = class_ids[line_of_number[number - 1]]
    assert {name: label for name, (label, _) in stored.items()} == expected
    # the gaps make labelling by sorted position give other labels
    by_position = [class_ids[w] for w in line_of_number[: len(stored)]]
    assert [expected[n] for n in sorted(stored)] != by_position


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


@pytest.fixture(scope="module")
def broken_input(tmp_path_factory):
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("broken_manual")),
        splits=("train",),
        broken=synthetic.BROKEN_KINDS,
    )


def test_broken_member_fails_with_a_clear_error_and_publishes_nothing(broken_input, tmp_path):
    proc = convert(broken_input.manual_dir, tmp_path, "--splits=train",
                   "--direct_running_mode=in_memory", check=False)
    assert proc.returncode != 0
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: train image ")
    assert dataset.TRAIN_ARCHIVE in error and "--on_corrupt=skip" in error
    broken = {m.file_name: m.kind for m in broken_input.members if m.kind in synthetic.BROKEN_KINDS}
    assert any(name in error for name in broken), error
    assert not os.path.exists(version_dir(tmp_path))


def test_broken_members_are_skipped_and_listed(broken_input, tmp_path):
    convert(broken_input.manual_dir, tmp_path, "--splits=train", "--on_corrupt=skip",
            "--direct_running_mode=in_memory")
    lineage = json.load(open(os.path.join(version_dir(tmp_path), "lineage.json")))
    broken = {m.file_name: m.kind for m in broken_input.members if m.kind in synthetic.BROKEN_KINDS}
    skipped = {s["file_name"]: s["reason"] for s in lineage["skipped_images"]}
    assert set(skipped) == set(broken)
    assert "empty" in skipped[next(n for n, k in broken.items() if k == "empty")]
    assert "dimensions" in skipped[next(n for n, k in broken.items() if k == "huge_dimensions")]
    good = len(broken_input.split("train")) - len(broken)
    assert lineage["splits"]["train"]["num_examples"] == good
    assert set(read_tfrecord_examples(version_dir(tmp_path), "train")).isdisjoint(broken)


def test_missing_archives_are_listed_with_instructions(tmp_path):
    generated = synthetic.generate_manual_dir(str(tmp_path / "manual"), splits=("validation",))
    proc = convert(generated.manual_dir, tmp_path / "out", "--splits=train,validation,test",
                   check=False)
    assert proc.returncode == 2
    assert dataset.TRAIN_ARCHIVE in proc.stderr
    assert dataset.TEST_ARCHIVE_PATCHED in proc.stderr and dataset.TEST_ARCHIVE_2012 in proc.stderr
    assert dataset.VALIDATION_ARCHIVE not in proc.stderr
    assert "image-net.org" in proc.stderr
    assert not os.path.exists(tmp_path / "out" / "imagenet2012")

    # The split that is there converts without the others.
    convert(generated.manual_dir, tmp_path / "out", "--splits=validation",
            "--direct_running_mode=in_memory")
    lineage = json.load(open(os.path.join(version_dir(tmp_path / "out"), "lineage.json")))
    assert set(lineage["splits"]) == {"validation"}
    assert lineage["splits"]["validation"]["num_examples"] == len(generated.split("validation"))


def test_patched_test_archive_is_preferred(tmp_path):
    generated = synthetic.generate_manual_dir(
        str(tmp_path / "manual"), splits=("test",), test_archives=("2012", "patch", "patched")
    )
    assert generated.replaced_by_patch
    convert(generated.manual_dir, tmp_path / "default", "--splits=test",
            "--direct_running_mode=in_memory")
    default = read_tfrecord_examples(version_dir(tmp_path / "default"), "test")
    for member in generated.split("test"):
        assert default[member.file_name] == (-1, member.data)

    convert(generated.manual_dir, tmp_path / "named", "--splits=test",
            f"--test_archive={dataset.TEST_ARCHIVE_2012}", "--direct_running_mode=in_memory")
    named = read_tfrecord_examples(version_dir(tmp_path / "named"), "test")
    for name in generated.replaced_by_patch:
        assert named[name][1] != default[name][1]
    lineage = json.load(open(os.path.join(version_dir(tmp_path / "named"), "lineage.json")))
    assert lineage["inputs"]["test"]["path"].endswith(dataset.TEST_ARCHIVE_2012)


def test_existing_output_is_kept_unless_overwrite_and_leftovers_are_cleared(tmp_path):
    generated = synthetic.generate_manual_dir(str(tmp_path / "manual"), splits=("validation",))
    out = tmp_path / "out"
    convert(generated.manual_dir, out, "--splits=validation", "--direct_running_mode=in_memory")
    # Other settings: a different version, which is not replaced without --overwrite.
    again = convert(generated.manual_dir, out, "--splits=validation", "--num_shards=3",
                    "--direct_running_mode=in_memory", check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr

    # What a killed run leaves behind is never visible and is cleared by the next run.
    staging = out / "imagenet2012" / ".5.1.0.incomplete"
    staging.mkdir()
    (staging / "imagenet2012-validation.tfrecord-00000-of-00009").write_bytes(b"partial")
    convert(generated.manual_dir, out, "--splits=validation", "--num_shards=2", "--overwrite",
            "--direct_running_mode=in_memory")
    assert not staging.exists()
    names = sorted(os.listdir(version_dir(out)))
    assert [n for n in names if ".tfrecord-" in n] == [
        "imagenet2012-validation.tfrecord-00000-of-00002",
        "imagenet2012-validation.tfrecord-00001-of-00002",
    ]
    assert sorted(os.listdir(out / "imagenet2012")) == ["5.1.0"]
    verify.verify_output(version_dir(out))


def test_completion_marker_decides_what_counts_as_published(tmp_path):
    # What the marker holds: tests/beam/test_metadata.py; what verify makes of it:
    # tests/beam/test_verify.py.
    generated = synthetic.generate_manual_dir(str(tmp_path / "manual"), splits=("validation",))
    out = tmp_path / "out"
    convert(generated.manual_dir, out, "--splits=validation", "--direct_running_mode=in_memory")

    # Without its marker a version is an unfinished publication: replaced by the next run
    # without --overwrite.
    os.remove(os.path.join(version_dir(out), "_COMPLETE"))
    convert(generated.manual_dir, out, "--splits=validation", "--direct_running_mode=in_memory")
    verify.verify_output(version_dir(out), decode=False)

    # A version made by another tool (TFDS: dataset_info.json, no lineage) is not ours to
    # replace without --overwrite.
    other = tmp_path / "other"
    os.makedirs(version_dir(other))
    open(os.path.join(version_dir(other), "dataset_info.json"), "w").write("{}")
    refused = convert(generated.manual_dir, other, "--splits=validation", check=False)
    assert refused.returncode == 2 and "another tool" in refused.stderr
    # before any work: no archive read (a first run's checks would run beside the job)
    assert "hashing" not in refused.stderr and "converting" not in refused.stderr


def test_splits_staged_separately_are_published_together(tmp_path):
    from tests.conftest import run_cli

    generated = synthetic.generate_manual_dir(
        str(tmp_path / "manual"), splits=("validation", "test"), test_archives=("patched",)
    )
    out = tmp_path / "out"
    for split in ("validation", "test", "validation"):  # a retried split replaces its own files
        convert(generated.manual_dir, out, f"--splits={split}", "--stage_only",
                "--num_shards=2", "--direct_running_mode=in_memory")
    assert not os.path.exists(version_dir(out))  # staged, not visible

    proc = run_cli("publish", f"--data_dir={out}")
    assert f"wrote {version_dir(out)}" in proc.stdout
    lineage = json.load(open(os.path.join(version_dir(out), "lineage.json")))
    assert lineage["options"]["splits"] == ["validation", "test"]
    for split in ("validation", "test"):
        assert lineage["splits"][split]["num_examples"] == len(generated.split(split))
    assert lineage["inputs"]["test"]["path"].endswith(dataset.TEST_ARCHIVE_PATCHED)
    assert sorted(os.listdir(out / "imagenet2012")) == ["5.1.0"]
    summary = verify.verify_output(version_dir(out))
    assert summary["splits"]["test"]["num_shards"] == 2
