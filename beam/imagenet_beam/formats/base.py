"""What a shard file format does: write a shard, count its records, read one back."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

# A serialized example in pieces (see `tfds_schema.example_parts`): writers that take pieces
# never copy the image bytes into a joined record.
RecordPieces = tuple[bytes, ...]


class WriteResult(NamedTuple):
    num_records: int
    num_bytes: int
    sha256: str
    # where each record starts in the file, for formats read by offset (TFRecord); None
    # where the format has its own index (ArrayRecord)
    offsets: tuple[int, ...] | None = None


class ShardFormat(abc.ABC):
    name: str  # TFDS's file-format name, also the shard file suffix

    @abc.abstractmethod
    def write(self, path: str, records: Iterable[RecordPieces]) -> WriteResult:
        """Writes the records, in order, to `path` (local or gs://)."""

    @abc.abstractmethod
    def count_records(self, path: str) -> int:
        """How many records the shard at `path` holds (reads headers or the index only)."""

    @abc.abstractmethod
    def read_records(
        self, path: str, indices: list[int], offsets: Mapping[int, int] | None = None
    ) -> list[bytes]:
        """The records at these 0-based positions of the shard (sorted, distinct), read
        by offset or index: never the whole shard. offsets: index → byte offset, where
        `write` gave it (`WriteResult.offsets`)."""

    @abc.abstractmethod
    def first_example(self, builder: Any, split: str) -> dict[str, Any]:
        """The split's first example, decoded through TFDS (`builder_from_directory`)."""
