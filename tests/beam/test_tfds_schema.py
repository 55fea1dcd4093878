"""Hand-encoded Examples and TFRecord frames must be what TFDS and TensorFlow write."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import tensorflow as tf

from imagenet_beam.formats import tfds_schema, tfrecord

LARGE_IMAGE = bytes(range(256)) * (9 * 1024 + 7)  # 2.25 MiB: a 4-byte length varint
assert len(LARGE_IMAGE) > 2 << 20

CASES = [
    (b"\xff\xd8\xff\xe0 tiny jpeg \xff\xd9", 0, "n01440764_10026.JPEG"),
    (b"\xff\xd8 image", -1, "ILSVRC2012_test_00000001.JPEG"),
    (b"\xff\xd8 image", 999, "n15075141_9999.JPEG"),
    (b"", 1, "empty_image.JPEG"),
    (b"x", 127, "a"),
    (b"y" * 200, 128, "b"),
    (b"z" * 16383, 7, "n01440764_16383.JPEG"),  # the largest 2-byte length varint
    (b"z" * 16384, 8, "n01440764_16384.JPEG"),  # the smallest 3-byte one
    (b"\xff\xd8" + bytes(range(256)) * 80, -1, "ILSVRC2012_test_00100000.JPEG"),  # 20 KiB
    (LARGE_IMAGE, 999, "ILSVRC2012_val_00050000.JPEG"),
    (LARGE_IMAGE, -1, "ünïcödé_猫_🐱.JPEG"),
    (b"y" * 300, -1, "ñ" * 100 + "_long_名前.JPEG"),  # file name over 127 UTF-8 bytes
    (b"y" * 129, 0, "n" * 200 + ".JPEG"),
    (b"\x00\x01\x02", 2**62, "big_label.JPEG"),
    (b"\x00", -(2**63), "most_negative_label.JPEG"),
    (b"\xff\xd8 image", 5, ""),
]
IDS = [f"label{label}-{len(image)}B-{i}" for i, (image, label, _) in enumerate(CASES)]


def tf_example(image: bytes, label: int, file_name: str) -> tf.train.Example:
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                "file_name": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[file_name.encode("utf-8")])
                ),
            }
        )
    )


@pytest.mark.parametrize(("image", "label", "file_name"), CASES, ids=IDS)
def test_encode_example_parses_to_the_same_features(
    image: bytes, label: int, file_name: str
) -> None:
    parsed = tf.train.Example.FromString(tfds_schema.encode_example(image, label, file_name))
    feature = parsed.features.feature
    assert sorted(feature) == ["file_name", "image", "label"]
    assert list(feature["image"].bytes_list.value) == [image]
    assert list(feature["label"].int64_list.value) == [label]
    assert list(feature["file_name"].bytes_list.value) == [file_name.encode("utf-8")]
    assert parsed == tf_example(image, label, file_name)


# TFDS's writer, as `tfds build` runs it: `features.encode_example` then
# `ExampleSerializer.serialize_example`, for the imagenet2012 builder's own features. It runs
# under the pure-Python protobuf runtime, which writes map entries in the order TFDS inserts
# them; the default upb runtime picks a random order per process (see
# tfds_schema.FEATURE_ORDER), so TFDS's bytes are only reproducible this way.
_TFDS_SERIALIZE = """
import pickle, sys
from google.protobuf.internal import api_implementation
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer

assert api_implementation.Type() == "python", api_implementation.Type()
features = tfds.builder("imagenet2012").info.features
serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
with open(sys.argv[1], "rb") as f:
    cases = pickle.load(f)
out = []
for image, label, file_name in cases:
    example = {"image": image, "label": label, "file_name": file_name}
    if -1 <= label < features["label"].num_classes:  # else ClassLabel refuses it
        example = features.encode_example(example)
    out.append(serializer.serialize_example(example))
with open(sys.argv[2], "wb") as f:
    pickle.dump(out, f)
"""

PURE_PYTHON_PROTOBUF = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}


@pytest.fixture(scope="module")
def tfds_serialized(tmp_path_factory) -> list[bytes]:
    """TFDS's serialized Example for each of CASES, from its own serializer."""
    tmp = tmp_path_factory.mktemp("tfds_serialized")
    cases, out = tmp / "cases.pickle", tmp / "out.pickle"
    cases.write_bytes(pickle.dumps(CASES))
    subprocess.run(
        [sys.executable, "-c", _TFDS_SERIALIZE, str(cases), str(out)],
        check=True,
        env={**os.environ, **PURE_PYTHON_PROTOBUF},
        timeout=300,
    )
    return pickle.loads(out.read_bytes())


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_encode_example_is_tfds_serializer_bytes(case: int, tfds_serialized) -> None:
    image, label, file_name = CASES[case]
    assert tfds_schema.encode_example(image, label, file_name) == tfds_serialized[case]


def test_feature_order_is_the_order_tfds_serializes() -> None:
    """FEATURE_ORDER is the order of TFDS's imagenet2012 FeaturesDict, flattened as
    ExampleSerializer flattens it (the order its feature dict is built in)."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import utils

    features = tfds.builder("imagenet2012").info.features
    assert list(utils.flatten_nest_dict(features.get_serialized_info())) == list(
        tfds_schema.FEATURE_ORDER
    )
    assert list(features.keys()) == list(tfds_schema.FEATURE_ORDER)


def _fields(buf: bytes) -> list[tuple[int, bytes]]:
    """(field number, payload) of each length-delimited field of a message, in wire order."""

    def varint(i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = buf[i]
            value |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if byte < 0x80:
                return value, i

    out, i = [], 0
    while i < len(buf):
        tag, i = varint(i)
        assert tag & 7 == 2, tag
        length, i = varint(i)
        out.append((tag >> 3, buf[i : i + length]))
        i += length
    return out


def wire_feature_order(serialized: bytes) -> list[str]:
    """The keys of Example.features.feature in the order their entries are written."""
    [(number, features)] = _fields(serialized)
    assert number == 1  # Example.features
    return [dict(_fields(entry))[1].decode() for _, entry in _fields(features)]


@pytest.mark.parametrize(("image", "label", "file_name"), CASES, ids=IDS)
def test_encode_example_writes_features_in_feature_order(
    image: bytes, label: int, file_name: str
) -> None:
    serialized = tfds_schema.encode_example(image, label, file_name)
    assert wire_feature_order(serialized) == list(tfds_schema.FEATURE_ORDER)
    assert tfds_schema.FEATURE_ORDER == ("image", "label", "file_name")


def test_encode_example_parses_with_tf_io_like_tfds() -> None:
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "file_name": tf.io.FixedLenFeature([], tf.string),
    }
    for image, label, file_name in CASES:
        record = tfds_schema.encode_example(image, label, file_name)
        parsed = tf.io.parse_single_example(record, spec)
        assert parsed["image"].numpy() == image
        assert int(parsed["label"].numpy()) == label
        assert parsed["file_name"].numpy().decode("utf-8") == file_name


def write_frames(path: str, records: list[bytes]) -> None:
    with open(path, "wb") as f:
        for record in records:
            f.write(tfrecord.tfrecord_frame(record))


RECORDS = [tfds_schema.encode_example(image, label, name) for image, label, name in CASES] + [
    b"",
    b"raw bytes, not an Example",
]


def test_tfrecord_frames_read_back_intact(tmp_path) -> None:
    path = str(tmp_path / "shard.tfrecord")
    write_frames(path, RECORDS)
    read = [t.numpy() for t in tf.data.TFRecordDataset(path)]
    assert read == RECORDS


def test_tfrecord_frames_are_the_bytes_tensorflow_writes(tmp_path) -> None:
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    write_frames(ours, RECORDS)
    with tf.io.TFRecordWriter(theirs) as writer:
        for record in RECORDS:
            writer.write(record)
    with open(ours, "rb") as a, open(theirs, "rb") as b:
        assert a.read() == b.read()


def test_tfrecord_frame_layout() -> None:
    record = b"hello"
    frame = tfrecord.tfrecord_frame(record)
    assert len(frame) == 8 + 4 + len(record) + 4
    assert frame[:8] == len(record).to_bytes(8, "little")
    assert frame[12:-4] == record


def test_frame_pieces_are_the_frame_without_copying_the_image() -> None:
    """Shards are written as pieces: the same bytes as framing the joined record, with the
    image object passed through untouched (never copied into a record buffer)."""
    for image, label, name in CASES:
        parts = tfds_schema.example_parts(image, label, name)
        assert b"".join(parts) == tfds_schema.encode_example(image, label, name)
        pieces = tfrecord.tfrecord_frame_parts(parts)
        assert b"".join(pieces) == tfrecord.tfrecord_frame(b"".join(parts))
        assert pieces[1] is image
    assert tfrecord.tfrecord_frame_parts((b"solo",)) == (
        tfrecord.tfrecord_frame(b"solo")[:12], b"solo", tfrecord.tfrecord_frame(b"solo")[-4:]
    )


@pytest.mark.parametrize("where", ["length_crc", "data", "data_crc"])
def test_tf_rejects_a_frame_with_a_bad_checksum(tmp_path, where: str) -> None:
    """Proves the read-back test above really checks our CRCs."""
    record = tfds_schema.encode_example(b"\xff\xd8 image", 3, "x.JPEG")
    frame = bytearray(tfrecord.tfrecord_frame(record))
    position = {"length_crc": 9, "data": 20, "data_crc": len(frame) - 1}[where]
    frame[position] ^= 0x01
    path = os.path.join(str(tmp_path), "bad.tfrecord")
    with open(path, "wb") as f:
        f.write(bytes(frame))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(path))
