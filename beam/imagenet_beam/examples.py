"""TFDS-compatible `tf.train.Example`s and TFRecord framing, without TensorFlow.

The wire format is small and fixed (three features), so encoding it directly is both
faster than building protos through TensorFlow and deterministic: features are always
written in sorted key order. TFDS/tf.data parse the result as any other Example.
"""

from __future__ import annotations

import struct

import google_crc32c

FEATURE_IMAGE = "image"
FEATURE_LABEL = "label"
FEATURE_FILE_NAME = "file_name"

_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _prefix(number: int, length: int) -> bytes:
    """Tag and length of a length-delimited field whose payload is `length` bytes."""
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(length)


def _field(number: int, payload: bytes) -> bytes:
    return _prefix(number, len(payload)) + payload


def _bytes_entry_head(key: str, value_length: int) -> bytes:
    """Everything of a `features` map entry {key: bytes_list {value}} before the value.

    Lengths are computed, so a large value (the image) is copied once, not once per level.
    """
    bytes_list = _prefix(1, value_length)  # BytesList.value
    feature = _prefix(1, len(bytes_list) + value_length)  # Feature.bytes_list
    feature_length = len(feature) + len(bytes_list) + value_length
    key_field = _field(1, key.encode("utf-8"))
    value_field = _prefix(2, feature_length)
    entry_length = len(key_field) + len(value_field) + feature_length
    return _prefix(1, entry_length) + key_field + value_field + feature + bytes_list


def _int64_entry(key: str, value: int) -> bytes:
    feature = _field(3, _field(1, _varint(value)))  # Feature.int64_list { packed value }
    return _field(1, _field(1, key.encode("utf-8")) + _field(2, feature))


def encode_example(image: bytes, label: int, file_name: str) -> bytes:
    """A serialized `tf.train.Example` with TFDS imagenet2012's features."""
    name = file_name.encode("utf-8")
    parts = (
        _bytes_entry_head(FEATURE_FILE_NAME, len(name)),
        name,
        _bytes_entry_head(FEATURE_IMAGE, len(image)),
        image,
        _int64_entry(FEATURE_LABEL, label),
    )
    features_length = sum(len(p) for p in parts)
    return b"".join((_prefix(1, features_length), *parts))


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(record: bytes) -> bytes:
    """One TFRecord: length, masked CRC32C of the length, data, masked CRC32C of the data."""
    length = struct.pack("<Q", len(record))
    return b"".join(
        (
            length,
            struct.pack("<I", _masked_crc(length)),
            record,
            struct.pack("<I", _masked_crc(record)),
        )
    )
