"""The example schema of TFDS's imagenet2012: `tf.train.Example`s without TensorFlow.

(TFRecord framing is the TFRecord format's, `formats/tfrecord.py`.)

The wire format is small and fixed (three features), so encoding it directly is both
faster than building protos through TensorFlow and deterministic: the features are always
written in FEATURE_ORDER, the order TFDS's writer hands them to protobuf, so the records
are byte for byte those of `tfds build imagenet2012` (see FEATURE_ORDER for when TFDS
itself keeps that order). TFDS/tf.data parse the result as any other Example.
"""

from __future__ import annotations

import functools
import struct

FEATURE_IMAGE = "image"
FEATURE_LABEL = "label"
FEATURE_FILE_NAME = "file_name"

FEATURE_ORDER = (FEATURE_IMAGE, FEATURE_LABEL, FEATURE_FILE_NAME)
"""The order of the entries of `Example.features.feature` in every record we write.

It is the order TFDS gives them: `tfds.features.FeaturesDict` keeps its features in the
order of the dict literal in `Imagenet2012._info()` (image, label, file_name);
`example_serializer.ExampleSerializer` flattens `features.get_serialized_info()` in that
order and `_dict_to_tf_example` builds the `feature` map from a dict in that order, then
calls `SerializeToString()` (not deterministic=True, which would sort the keys). The
order in features.json does not govern it: TFDS writes that file with sorted keys
(`json.dumps(..., sort_keys=True)` in `FeatureConnector.save_config`).

Whether protobuf keeps the dict's order is up to its runtime. The pure-Python runtime
(PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python) writes map entries in insertion order, so
TFDS's records come out in exactly this order, every run. The default upb runtime writes a
map in its hash table's order, with a hash seeded by the address of a static variable
(upb/hash/common.c, `_upb_Seed`), so under ASLR each process picks one of the six orders
of these three keys: measured over 370 processes, all six occur, this one in 91 (about one
in four); within a process the order is fixed and independent of insertion order. So TFDS
under upb does not reproduce its own bytes from run to run; we write the order TFDS asks
for, which is what it writes whenever protobuf keeps it. tests/beam/test_examples.py
checks this tuple against TFDS's own FeaturesDict.
"""

_LENGTH_DELIMITED = 2


_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]  # tags and short lengths: most calls
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


@functools.lru_cache(maxsize=4096)  # one per label
def _int64_entry(key: str, value: int) -> bytes:
    feature = _field(3, _field(1, _varint(value)))  # Feature.int64_list { packed value }
    return _field(1, _field(1, key.encode("utf-8")) + _field(2, feature))


@functools.lru_cache(maxsize=256)  # file names come in a few lengths
def _file_name_head(length: int) -> bytes:
    return _bytes_entry_head(FEATURE_FILE_NAME, length)


if sorted(FEATURE_ORDER) != sorted((FEATURE_IMAGE, FEATURE_LABEL, FEATURE_FILE_NAME)):
    raise AssertionError(f"FEATURE_ORDER must order the three features: {FEATURE_ORDER}")
_BEFORE_IMAGE = FEATURE_ORDER[: FEATURE_ORDER.index(FEATURE_IMAGE)]
_AFTER_IMAGE = FEATURE_ORDER[FEATURE_ORDER.index(FEATURE_IMAGE) + 1 :]


def example_parts(image: bytes, label: int, file_name: str) -> tuple[bytes, bytes, bytes]:
    """A serialized `tf.train.Example` with TFDS imagenet2012's features, in three pieces:
    everything before the image bytes, the image bytes themselves, everything after.

    The features are in FEATURE_ORDER. Writers that take pieces (TFRecord here) never copy
    the image into a record buffer.
    """
    name = file_name.encode("utf-8")
    entries = {
        FEATURE_LABEL: _int64_entry(FEATURE_LABEL, label),
        FEATURE_FILE_NAME: _file_name_head(len(name)) + name,
    }
    return pieces(
        [entries[key] for key in _BEFORE_IMAGE], FEATURE_IMAGE, image,
        [entries[key] for key in _AFTER_IMAGE],
    )


def pieces(
    before: list[bytes], image_key: str, image: bytes, after: list[bytes]
) -> tuple[bytes, bytes, bytes]:
    """A serialized `tf.train.Example` of these `features` map entries (see `bytes_entry`,
    `int64_entry`, `float_entry`) with the image's entry between them, in three pieces:
    everything before the image bytes, the image bytes, everything after."""
    head = b"".join([*before, _bytes_entry_head(image_key, len(image))])
    tail = b"".join(after)
    features_length = len(head) + len(image) + len(tail)
    return _prefix(1, features_length) + head, image, tail


def bytes_entry(key: str, value: bytes) -> bytes:
    """A `features` map entry {key: bytes_list {value}}."""
    return _bytes_entry_head(key, len(value)) + value


def int64_entry(key: str, values: list[int] | tuple[int, ...]) -> bytes:
    """A `features` map entry {key: int64_list {values, packed}}; no values gives an empty
    int64_list, as protobuf writes one (a Sequence feature of length 0)."""
    packed = b"".join(_varint(v) for v in values)
    feature = _field(3, _field(1, packed) if values else b"")
    return _field(1, _field(1, key.encode("utf-8")) + _field(2, feature))


def float_entry(key: str, values: list[float] | tuple[float, ...]) -> bytes:
    """A `features` map entry {key: float_list {values, packed}} (32-bit floats)."""
    packed = struct.pack(f"<{len(values)}f", *values)
    feature = _field(2, _field(1, packed) if values else b"")
    return _field(1, _field(1, key.encode("utf-8")) + _field(2, feature))


def encode_example(image: bytes, label: int, file_name: str) -> bytes:
    """A serialized `tf.train.Example` with TFDS imagenet2012's features."""
    return b"".join(example_parts(image, label, file_name))


_VARINT, _FIXED64, _FIXED32 = 0, 1, 5


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes):
    """(field number, wire type, value) of each field of a serialized message."""
    pos = 0
    while pos < len(data):
        tag, pos = _read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            value, pos = _read_varint(data, pos)
        elif wire == _LENGTH_DELIMITED:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"not a tf.train.Example (wire type {wire})")
        yield number, wire, value


def parse_example(record: bytes) -> dict[str, bytes | int]:
    """The bytes and int64 features of a serialized `tf.train.Example` (first value each),
    in any feature order: what the report needs of a record, without TensorFlow."""
    out: dict[str, bytes | int] = {}
    for _, _, features in _fields(record):  # Example.features
        for _, _, entry in _fields(features):  # Features.feature map entries
            parts = {number: value for number, _, value in _fields(entry)}
            key, feature = parts.get(1, b"").decode("utf-8"), parts.get(2, b"")
            for kind, _, values in _fields(feature):
                if kind == 1:  # bytes_list
                    out[key] = next((v for n, _, v in _fields(values) if n == 1), b"")
                elif kind == 3:  # int64_list, packed or not
                    for n, wire, v in _fields(values):
                        if n == 1:
                            raw = v if wire == _VARINT else _read_varint(v, 0)[0]
                            out[key] = raw - (1 << 64) if raw >= 1 << 63 else raw
                            break
    return out
