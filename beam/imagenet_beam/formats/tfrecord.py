"""TFRecord shards: what `tfds.load` / `as_dataset` read."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import Any

from imagenet_beam import examples, settings, storage
from imagenet_beam.formats.base import RecordPieces, ShardFormat, WriteResult

_HEADER = 12  # uint64 length + masked CRC32C of the length


class ShardFormatError(ValueError):
    pass


class TFRecordFormat(ShardFormat):
    name = settings.TFRECORD

    def write(self, path: str, records: Iterable[RecordPieces]) -> WriteResult:
        digest, size, count = hashlib.sha256(), 0, 0
        with storage.open_write(path) as f:
            for parts in records:
                for piece in examples.tfrecord_frame_parts(parts):
                    digest.update(piece)
                    size += len(piece)
                    f.write(piece)
                count += 1
        return WriteResult(count, size, digest.hexdigest())

    def count_records(self, path: str) -> int:
        count = 0
        with storage.open_read(path) as f:
            while header := f.read(_HEADER):
                if len(header) < _HEADER:
                    raise ShardFormatError(f"{path} ends inside a record header")
                (length,) = struct.unpack("<Q", header[:8])
                f.seek(length + 4, 1)
                count += 1
        return count

    def first_example(self, builder: Any, split: str) -> dict[str, Any]:
        example = next(iter(builder.as_dataset(split=f"{split}[:1]")))
        return {key: value.numpy() for key, value in example.items()}
