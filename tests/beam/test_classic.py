"""The classic TF/TPU schema (--schema=classic), read back as its consumers declare it.

The feature spec below is written here from the documented keys (tensorflow/tpu's
imagenet_input.py and the inception converter), not taken from our code: it is what the
TPU ResNet, the Model Garden and MLPerf's reference parse.
"""

from __future__ import annotations

import glob
import json
import os

import pytest

from imagenet_beam import dataset, synthetic, synthetic_bboxes, synthetic_devkit
from imagenet_beam.formats import classic_schema
from tests.conftest import convert, run_cli

CLASSIC = os.path.join("imagenet2012_classic", "1.0.0")


def consumer_spec():
    import tensorflow as tf

    fixed = tf.io.FixedLenFeature
    var = tf.io.VarLenFeature
    return {
        "image/encoded": fixed((), tf.string),
        "image/format": fixed((), tf.string),
        "image/filename": fixed((), tf.string),
        "image/height": fixed((), tf.int64),
        "image/width": fixed((), tf.int64),
        "image/colorspace": fixed((), tf.string),
        "image/channels": fixed((), tf.int64),
        "image/class/label": fixed([], tf.int64),
        "image/class/synset": fixed([], tf.string),
        "image/class/text": fixed([], tf.string),
        "image/object/bbox/xmin": var(tf.float32),
        "image/object/bbox/ymin": var(tf.float32),
        "image/object/bbox/xmax": var(tf.float32),
        "image/object/bbox/ymax": var(tf.float32),
        "image/object/bbox/label": var(tf.int64),
    }


def read_classic(version_path: str, split: str) -> dict[str, dict]:
    """file name → its parsed features (tf.data over the split's shards, as a TPU input
    function reads them: the `<split>-*` glob), each image decoded by tf.io.decode_jpeg."""
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(version_path, f"{split}-*")))
    out = {}
    for record in tf.data.TFRecordDataset(files):
        e = tf.io.parse_single_example(record, consumer_spec())
        image = tf.io.decode_jpeg(e["image/encoded"], channels=3)
        name = e["image/filename"].numpy().decode()
        assert name not in out
        out[name] = {
            "decoded_shape": tuple(image.shape),
            **{k: (v.values.numpy().tolist() if hasattr(v, "values") else v.numpy())
               for k, v in e.items() if k != "image/encoded"},
        }
    return out


@pytest.fixture(scope="module")
def classic_input(tmp_path_factory):
    manual = str(tmp_path_factory.mktemp("classic_manual"))
    generated = synthetic.generate_manual_dir(
        manual, num_classes=4, train_per_class=5, num_validation=10, num_test=3,
        awkward=True, splits=(dataset.TRAIN, dataset.VALIDATION), seed=3,
    )
    kit = synthetic_devkit.write_devkit(manual, generated=generated, seed=3)
    boxes = synthetic_bboxes.write_bboxes(manual, generated, seed=3)
    return generated, kit, boxes


@pytest.fixture(scope="module")
def classic_output(classic_input, tmp_path_factory):
    generated, _, _ = classic_input
    data = tmp_path_factory.mktemp("classic_data")
    convert(generated.manual_dir, data, "--schema=classic", "--num_shards=3")
    return str(data)


def test_files_are_named_as_the_classic_readers_glob_them(classic_output):
    names = sorted(os.listdir(os.path.join(classic_output, CLASSIC)))
    assert names == sorted([
        *(f"train-{i:05d}-of-00003" for i in range(3)),
        *(f"validation-{i:05d}-of-00003" for i in range(3)),
        "lineage.json", "report.html", "report.png", "_COMPLETE",
    ])
    assert not os.path.exists(os.path.join(classic_output, "imagenet2012"))


def test_every_example_reads_back_with_the_consumers_spec(classic_input, classic_output):
    generated, kit, expected_boxes = classic_input
    words = kit_words(generated)
    wnids = dataset.class_names()
    for split in (dataset.TRAIN, dataset.VALIDATION):
        examples = read_classic(os.path.join(classic_output, CLASSIC), split)
        members = {m.file_name: m for m in generated.members if m.split == split}
        assert set(examples) == set(members)
        for name, e in examples.items():
            label = members[name].label
            assert e["image/class/label"] == label + 1  # 0 is background
            assert e["image/class/synset"].decode() == wnids[label]
            assert e["image/class/text"].decode() == words[label]
            assert e["image/format"] == b"JPEG" and e["image/colorspace"] == b"RGB"
            assert e["image/channels"] == 3
            assert e["decoded_shape"] == (e["image/height"], e["image/width"], 3)
            boxes = expected_boxes.expected[split].get(name, ())
            got = list(zip(*(e[f"image/object/bbox/{k}"]
                             for k in ("xmin", "ymin", "xmax", "ymax")), strict=True))
            want = [v for b in boxes for v in b[:4]]
            assert [v for box in got for v in box] == pytest.approx(want, abs=1e-6)
            assert all(0.0 <= v <= 1.0 for box in got for v in box)
            assert e["image/object/bbox/label"] == [label + 1] * len(boxes)
    assert any(expected_boxes.expected[dataset.TRAIN].values())


def kit_words(generated):
    from imagenet_beam.sources import devkit

    return devkit.read_devkit(
        os.path.join(generated.manual_dir, dataset.DEVKIT_ARCHIVE)
    ).words_by_label()


def test_cmyk_and_png_members_are_stored_as_rgb_jpeg(classic_input, classic_output):
    with open(os.path.join(classic_output, CLASSIC, "lineage.json")) as f:
        lineage = json.load(f)
    fixed = {f["file_name"] for f in lineage["fixed_images"]}
    awkward = {m.file_name for m in classic_input[0].members
               if m.kind.startswith(("cmyk", "png"))}
    assert awkward and awkward <= fixed


def test_lineage_says_where_texts_and_boxes_came_from(classic_input, classic_output):
    _, _, boxes = classic_input
    with open(os.path.join(classic_output, CLASSIC, "lineage.json")) as f:
        lineage = json.load(f)
    assert (lineage["dataset"], lineage["version"]) == ("imagenet2012_classic", "1.0.0")
    assert lineage["options"]["schema"] == "classic"
    assert lineage["classes"]["text_from"] == classic_schema.TEXT_FROM_DEVKIT
    for split in (dataset.TRAIN, dataset.VALIDATION):
        record = lineage["boxes"][split]
        assert record["boxes"] == boxes.num_boxes(split)
        assert [o["file_name"] for o in record["orphans"]] == list(boxes.orphans[split])
    with open(os.path.join(classic_output, CLASSIC, "_COMPLETE")) as f:
        marker = json.load(f)
    assert marker["dataset"] == "imagenet2012_classic"
    assert "train-00000-of-00003" in marker["files"]
    with open(os.path.join(classic_output, CLASSIC, "report.html")) as f:
        page = f.read()
    assert "imagenet2012_classic 1.0.0" in page and "Bounding boxes" in page


def test_verify_reads_the_classic_output_back(classic_output):
    """`verify` decodes each split's first image without TFDS metadata, and catches a
    changed shard."""
    version = os.path.join(classic_output, CLASSIC)
    run_cli("verify", version)
    shard = os.path.join(version, "validation-00001-of-00003")
    with open(shard, "r+b") as f:
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 0xFF]))
    try:
        proc = run_cli("verify", version, check=False)
        assert proc.returncode != 0 and "validation-00001-of-00003: sha256" in proc.stderr
    finally:
        with open(shard, "r+b") as f:
            f.seek(40)
            f.write(byte)


def test_a_re_run_gives_the_same_bytes_and_without_devkit_the_text_is_the_wnid(
    classic_input, classic_output, tmp_path
):
    generated, _, _ = classic_input
    manual = tmp_path / "manual"
    manual.mkdir()
    for name in os.listdir(generated.manual_dir):
        if name != dataset.DEVKIT_ARCHIVE:
            os.symlink(os.path.join(generated.manual_dir, name), manual / name)
    again = tmp_path / "again"
    convert(generated.manual_dir, again, "--schema=classic", "--num_shards=3")
    with open(os.path.join(classic_output, CLASSIC, "lineage.json")) as f:
        first = json.load(f)
    with open(os.path.join(again, CLASSIC, "lineage.json")) as f:
        second = json.load(f)
    assert {s: [x["sha256"] for x in i["shards"]] for s, i in first["splits"].items()} == {
        s: [x["sha256"] for x in i["shards"]] for s, i in second["splits"].items()
    }
    plain = tmp_path / "plain"
    convert(str(manual), plain, "--schema=classic", "--splits=validation")
    examples = read_classic(os.path.join(plain, CLASSIC), dataset.VALIDATION)
    wnids = dataset.class_names()
    assert all(e["image/class/text"].decode() == wnids[e["image/class/label"] - 1]
               for e in examples.values())
    with open(os.path.join(plain, CLASSIC, "lineage.json")) as f:
        assert json.load(f)["classes"] == {"text_from": classic_schema.TEXT_FROM_WNID}


def test_classic_shard_counts():
    schema = classic_schema.ClassicSchema()
    assert schema.default_num_shards(dataset.TRAIN, 1_281_167) == 1024
    assert schema.default_num_shards(dataset.VALIDATION, 50_000) == 128
    assert schema.default_num_shards(dataset.VALIDATION, 10) == 10


@pytest.mark.parametrize("flags,message", [
    (("--file_format=array_record",),
     "--schema=classic is TFRecord (what its readers read): drop --file_format=array_record"),
    (("--dataset=imagenet2012_real",),
     "--schema=classic writes imagenet2012 only, not --dataset=imagenet2012_real: drop one "
     "of the two"),
])
def test_settings_classic_cannot_have_are_refused(flags, message, tmp_path):
    proc = run_cli("convert", f"--manual_dir={tmp_path}", f"--data_dir={tmp_path / 'out'}",
                   "--schema=classic", *flags, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"error: {message}"
