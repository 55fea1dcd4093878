"""TFRecord shards: what `tfds.load` / `as_dataset` read."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import google_crc32c

from imagenet_beam import settings, storage
from imagenet_beam.formats.base import RecordPieces, ShardFormat, WriteResult

_HEADER = 12  # uint64 length + masked CRC32C of the length


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    return _mask(google_crc32c.value(data))


def tfrecord_frame(record: bytes) -> bytes:
    """One TFRecord: length, masked CRC32C of the length, data, masked CRC32C of the data."""
    return b"".join(tfrecord_frame_parts((record,)))


def tfrecord_frame_parts(parts: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The TFRecord of the record made of `parts`, as pieces to write one after another.

    The framing goes into the first and last pieces; what lies between (the image, in
    `example_parts`) is passed on as it is, never copied into a joined record.
    """
    crc = 0
    for part in parts:
        crc = google_crc32c.extend(crc, part)
    length = struct.pack("<Q", sum(len(part) for part in parts))
    header = length + struct.pack("<I", _masked_crc(length))
    footer = struct.pack("<I", _mask(crc))
    if len(parts) < 2:
        return (header, *parts, footer)
    return (header + parts[0], *parts[1:-1], parts[-1] + footer)


class ShardFormatError(ValueError):
    pass


def _read_exactly(f, length: int) -> bytes:
    """An unbuffered read may return less than asked."""
    parts, left = [], length
    while left:
        part = f.read(left)
        if not part:
            raise ShardFormatError(f"a record of {length} bytes ends early")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def count_and_hash_chunks(chunks: Iterable, path: str) -> tuple[int, str]:
    """The records in a file given as consecutive chunks of any sizes, and its sha256: each
    chunk hashed, the record headers within it walked in memory (not a 12-byte read and a
    seek a record: two system calls a record, each a wait for the GIL when another thread
    holds it). A chunk may be reused once the next is asked for: nothing of it is kept."""
    digest = hashlib.sha256()
    count = seen = next_at = 0  # records, bytes read, where the next header starts
    head = b""  # the start of a header that continues in the next chunk
    for chunk in chunks:
        digest.update(chunk)
        chunk_at, seen = seen, seen + len(chunk)
        while next_at < seen:
            start = next_at - chunk_at
            header = (head + chunk[:_HEADER - len(head)] if start < 0
                      else chunk[start:start + _HEADER])
            if len(header) < _HEADER:
                head = bytes(header)
                break
            head = b""
            next_at += _HEADER + struct.unpack_from("<Q", header)[0] + 4
            count += 1
    if head:
        raise ShardFormatError(f"{path} ends inside a record header")
    if next_at != seen:
        raise ShardFormatError(f"{path} ends inside a record")
    return count, digest.hexdigest()


class TFRecordFormat(ShardFormat):
    name = settings.TFRECORD

    def write(self, path: str, records: Iterable[RecordPieces]) -> WriteResult:
        digest, size, count, starts = hashlib.sha256(), 0, 0, []
        with storage.open_write_bulk(path) as f:
            for parts in records:
                starts.append(size)
                for piece in tfrecord_frame_parts(parts):
                    digest.update(piece)
                    size += len(piece)
                    f.write(piece)
                count += 1
        return WriteResult(count, size, digest.hexdigest(), tuple(starts))

    def count_and_hash(self, path: str) -> tuple[int, str]:
        """One pass in large reads (`count_and_hash_chunks`), past the page cache locally."""
        return count_and_hash_chunks(storage.read_chunks(path), path)

    def read_records(
        self, path: str, indices: list[int], offsets: Mapping[int, int] | None = None
    ) -> list[bytes]:
        """Each record at its known offset; the others by walking the record headers
        (12 bytes each) from the start up to the last of them."""
        offsets = offsets or {}
        found: dict[int, bytes] = {}
        # Unbuffered locally: a buffered reader would fetch a block per 12-byte header.
        local = not storage.is_remote(path)
        with open(path, "rb", buffering=0) if local else storage.open_read(path, 1 << 16) as f:
            for index in indices:
                if index in offsets:
                    f.seek(offsets[index])
                    found[index] = self._next(f, path, index)
            walk = sorted(set(indices) - set(found))
            if walk:
                f.seek(0)
            position = 0
            for index in walk:
                while position < index:
                    header = f.read(_HEADER)
                    if len(header) < _HEADER:
                        raise ShardFormatError(
                            f"{path} holds {position} records, fewer than its metadata says"
                        )
                    f.seek(struct.unpack("<Q", header[:8])[0] + 4, 1)
                    position += 1
                found[index] = self._next(f, path, index)
                position += 1
        return [found[index] for index in indices]

    @staticmethod
    def _next(f, path: str, index: int) -> bytes:
        """The record that starts where `f` is, leaving `f` after it."""
        header = f.read(_HEADER)
        if len(header) < _HEADER:
            raise ShardFormatError(f"{path} has no record {index}")
        (length,) = struct.unpack("<Q", header[:8])
        data = _read_exactly(f, length)
        f.seek(4, 1)
        return data

    def first_example(self, builder: Any, split: str) -> dict[str, Any]:
        example = next(iter(builder.as_dataset(split=f"{split}[:1]")))
        return {key: value.numpy() for key, value in example.items()}
