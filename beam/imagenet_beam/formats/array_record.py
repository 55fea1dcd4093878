"""ArrayRecord shards (`group_size:1`, uncompressed: JPEG bytes do not compress), read
with `as_data_source` (random access)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

from imagenet_beam import settings, storage
from imagenet_beam.formats.base import RecordPieces, ShardFormat, WriteResult

OPTIONS = "group_size:1,uncompressed"


def _local_sha256(path: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            digest.update(chunk)
    return os.path.getsize(path), digest.hexdigest()


def _write_local(path: str, records: Iterable[RecordPieces]) -> int:
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(path, OPTIONS)
    count = 0
    try:
        for parts in records:
            writer.write(b"".join(parts))
            count += 1
    finally:
        writer.close()
    return count


class ArrayRecordFormat(ShardFormat):
    name = settings.ARRAY_RECORD

    def write(self, path: str, records: Iterable[RecordPieces]) -> WriteResult:
        """ArrayRecord writes only local files: write one, then upload it when remote."""
        if not storage.is_remote(path):
            count = _write_local(path, records)
            return WriteResult(count, *_local_sha256(path))
        with storage.scratch_dir() as scratch:
            local = os.path.join(scratch, storage.basename(path))
            count = _write_local(local, records)
            result = WriteResult(count, *_local_sha256(local))
            storage.upload_file(local, path)
            return result

    def count_and_hash(self, path: str) -> tuple[int, str]:
        """The count from the shard's own index, then the file hashed."""
        return self._read(path, lambda reader: reader.num_records()), storage.sha256_of(path)

    def read_records(
        self, path: str, indices: list[int], offsets: Mapping[int, int] | None = None
    ) -> list[bytes]:
        """By index, through the shard's own index (a remote shard is copied first: the
        reader opens local files only)."""
        return self._read(path, lambda reader: list(reader.read(list(indices))))

    @staticmethod
    def _read(path: str, use: Any) -> Any:
        from array_record.python.array_record_module import ArrayRecordReader

        with storage.scratch_dir() as scratch:
            local = path
            if storage.is_remote(path):
                local = os.path.join(scratch, storage.basename(path))
                with storage.open_read(path) as src, open(local, "wb") as dst:
                    dst.write(src.read())
            reader = ArrayRecordReader(local)
            try:
                return use(reader)
            finally:
                reader.close()

    def first_example(self, builder: Any, split: str) -> dict[str, Any]:
        return dict(builder.as_data_source(split=f"{split}[:1]")[0])
