"""What a shard file format does (write a shard, count its records, read one back), and
what an example schema does (`formats.schemas`: which members, how encoded)."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from imagenet_beam import layout

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
    def count_and_hash(self, path: str) -> tuple[int, str]:
        """(how many records, the sha256 of the file) of the shard at `path`: a read-back's
        facts."""

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


class Schema(abc.ABC):
    """What one output's records hold (see the module docstring)."""

    output: layout.Output
    # TFDS's metadata files beside the shards (`metadata.write_tfds_metadata`, from the
    # output's own TFDS builder): TFDS reads the output
    tfds_metadata = True

    def configured(self, settings: Any) -> Schema:
        """This schema with what the run's inputs give it (lists, labels, class names)."""
        return self

    def select(self, split: str, refs: list) -> list:
        """The members of one work item this output keeps, with what it attaches to them
        (`MemberRef.extra`). Called at index time, so nothing per image crosses a shuffle
        beyond its descriptor."""
        return refs

    def needed_files(self, splits: Iterable[str]) -> dict[str, str]:
        """Files this output needs in manual_dir beside the images, for these splits:
        name → where to get it (none can be downloaded from here)."""
        return {}

    def optional_files(self, splits: Iterable[str]) -> list[str]:
        """Files of manual_dir the output reads when they are there (the box archives)."""
        return []

    def default_num_shards(self, split: str, num_images: int) -> int | None:
        """Shards for a split when --num_shards is not given; None: TFDS's rule."""
        return None

    @abc.abstractmethod
    def example_parts(self, ref: Any, image: Any) -> tuple[bytes, bytes, bytes]:
        """The example of one member (`MemberRef`) whose stored image is `image`
        (`images.PreparedImage`), in the three pieces of `tfds_schema.pieces`."""

    @abc.abstractmethod
    def fields(self, example: Mapping[str, Any]) -> tuple[bytes, str, int | None]:
        """(image bytes, file name, TFDS label) of an example as
        `tfds_schema.parse_example` reads it."""
