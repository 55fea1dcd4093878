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


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:
    return _field(1, _field(1, value))  # Feature.bytes_list { value }


def _int64_feature(value: int) -> bytes:
    return _field(3, _field(1, _varint(value)))  # Feature.int64_list { packed value }


def _map_entry(key: str, feature: bytes) -> bytes:
    return _field(1, _field(1, key.encode("utf-8")) + _field(2, feature))


def encode_example(image: bytes, label: int, file_name: str) -> bytes:
    """A serialized `tf.train.Example` with TFDS imagenet2012's features."""
    features = b"".join(
        (
            _map_entry(FEATURE_FILE_NAME, _bytes_feature(file_name.encode("utf-8"))),
            _map_entry(FEATURE_IMAGE, _bytes_feature(image)),
            _map_entry(FEATURE_LABEL, _int64_feature(label)),
        )
    )
    return _field(1, features)


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
