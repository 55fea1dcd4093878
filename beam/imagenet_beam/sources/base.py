"""What every input layout supplies, and what the rest of the pipeline knows of an image.

A source answers four questions (TFX's example_gen and Grain's sources have the same
shape): which files each split needs and which are missing (`find`), how a split's input
divides into work items (`work_items`), which images one work item holds (`index`, headers
only), and how to read those images' bytes (`read_members`). Splitting into shards, fixing
images and writing are shared by every source.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from imagenet_beam import dataset, storage
from imagenet_beam.sources.tar import ArchiveError


class MemberRef(NamedTuple):
    """Where one image lives: enough to read it back without touching anything else."""

    split: str
    archive: str  # path of the file holding it (for a train class tar: the outer tar)
    offset: int  # absolute offset of the image's bytes in `archive`
    size: int
    file_name: str  # as TFDS names it
    label: int


@dataclasses.dataclass(frozen=True)
class SplitInput:
    """What one split is converted from."""

    split: str
    archive: str  # path of the input to convert (for a test split to merge: the 2012 tar)
    patch: str | None = None  # a patch tar to merge into `archive` first

    @property
    def paths(self) -> list[str]:
        """Every file the split reads: what the archive checks cover."""
        return [self.archive] + ([self.patch] if self.patch else [])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# A unit of indexing work: (split, path, detail), where `detail` is the source's own
# (e.g. one class tar inside the train tar) and must be JSON-serialisable.
WorkItem = tuple[str, str, Any]


class Source(abc.ABC):
    """One input layout."""

    name: str

    @abc.abstractmethod
    def find(
        self,
        manual_dir: str,
        splits: Sequence[str],
        test_patch: str | None = None,
        test_archive: str | None = None,
    ) -> tuple[dict[str, SplitInput], list[str]]:
        """(split → its input, one line per split that is missing something)."""

    @abc.abstractmethod
    def work_items(self, split: str, path: str) -> Iterator[WorkItem]:
        """The independent pieces of one split's input, to index in parallel."""

    @abc.abstractmethod
    def index(self, item: WorkItem) -> list[MemberRef]:
        """The images of one work item, labelled, without reading their bytes."""

    def read_members(
        self, archive: str, refs: Sequence[MemberRef]
    ) -> Iterator[tuple[MemberRef, bytes]]:
        """Image bytes, read in offset order (sequential on disk; on GCS, ranged requests
        for about the members' bytes only)."""
        ordered = sorted(refs, key=lambda r: r.offset)
        ranges = [(ref.offset, ref.size) for ref in ordered]
        for ref, data in zip(ordered, storage.read_ranges(archive, ranges), strict=True):
            if len(data) != ref.size:
                raise ArchiveError(
                    f"{archive} ends inside member {ref.file_name}: the download is "
                    "incomplete, download it again"
                )
            yield ref, data

    def origin(self, ref: MemberRef) -> str:
        """The user's file an image came from, to name in an error (ours may be a copy)."""
        return ref.archive

    def missing_message(self, manual_dir: str, missing: Sequence[str]) -> str:
        lines = "\n".join(f"  {line}" for line in missing)
        return f"missing in {manual_dir}:\n{lines}\n{dataset.DOWNLOAD_INSTRUCTIONS}"
