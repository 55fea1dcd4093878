"""What every input layout supplies, and what the rest of the pipeline knows of an image.

A source answers five questions (TFX's example_gen and Grain's sources have the same
shape): which files each split needs and which are missing (`find`), how to check them
before hours are spent (`check`), how a split's input divides into work items
(`work_items`), which images one work item holds (`index`, headers or listings only), and
how to read those images' bytes (`read_shard`). Splitting into shards, fixing images and
writing are shared by every source.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from imagenet_beam import storage
from imagenet_beam.sources.tar import ArchiveError


class MemberRef(NamedTuple):
    """Where one image lives: enough to read it back without touching anything else."""

    split: str
    archive: str  # path of the file holding it (for a train class tar: the outer tar)
    offset: int  # absolute offset of the image's bytes in `archive`
    size: int
    file_name: str  # as TFDS names it
    label: int
    # what the output's schema attaches at index time (`formats.base.Schema.select`):
    # ReaL labels, bounding boxes; None for most outputs
    extra: Any = None


@dataclasses.dataclass(frozen=True)
class SplitInput:
    """What one split is converted from, in which input layout (`Source.name`)."""

    split: str
    archive: str  # the archive or folder to convert (for a test split to merge: the 2012 tar)
    patch: str | None = None  # a patch tar to merge into `archive` first
    layout: str = "tarballs"
    # The archives read, when they are several or not `archive` itself (Hugging Face's five
    # train archives; `archive` is then their folder); empty for an extracted folder.
    files: tuple[str, ...] | None = None

    @property
    def paths(self) -> list[str]:
        """Every archive the split reads: what the archive checks cover (none for a folder
        of extracted images: `Source.check` counts and hashes those instead)."""
        if self.files is not None:
            return list(self.files)
        return [self.archive] + ([self.patch] if self.patch else [])

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["files"] = list(self.files) if self.files is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitInput:
        files = d.get("files")
        return cls(**{**d, "files": tuple(files) if files is not None else None})


# A unit of indexing work: (split, path, detail), where `detail` is the source's own
# (e.g. one class tar inside the train tar) and must be JSON-serialisable.
WorkItem = tuple[str, str, Any]


class Source(abc.ABC):
    """One input layout."""

    name: str
    title: str  # what the user calls it, in messages ("the tarballs from image-net.org")
    instructions: str  # what to point manual_dir at, for the missing-files message

    def present(self, manual_dir: str) -> bool:
        """Whether manual_dir looks like this layout at all (so a message about what is
        missing can speak of it), found or not."""
        return False

    def configured(self, settings: Any) -> Source:
        """This source for one conversion's settings (a layout whose labels or unpacked
        copies depend on them returns a configured copy)."""
        return self

    def input_size(self, split_input: SplitInput) -> int:
        """The bytes of a split's input that is no archive (an extracted folder)."""
        return 0

    def check(self, split_input: SplitInput, settings: Any, cache_dir: str) -> list[Any]:
        """Checks of a split's input that is no archive (an extracted folder): rows shaped
        like `archive_checks.ArchiveCheck`, for lineage and the fingerprint. Archives are
        checked by `archive_checks` for every layout."""
        return []

    def checked_before(self, split_input: SplitInput, settings: Any, cache_dir: str) -> bool:
        """Whether `check` has run on this input before, so that running it again only
        compares what is cached with what is there (no image is read)."""
        return True

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

    def read_shard(self, refs: Sequence[MemberRef]) -> Iterator[tuple[MemberRef, bytes]]:
        """A shard's image bytes, in any order: each archive's members together."""
        by_archive: dict[str, list[MemberRef]] = {}
        for ref in refs:
            by_archive.setdefault(ref.archive, []).append(ref)
        for archive, mine in by_archive.items():
            yield from self.read_members(archive, mine)

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
        return f"missing in {manual_dir} ({self.title}):\n{lines}\n{self.instructions}"


class BySplit(Source):
    """One Beam job's sources, split by split (each split may be in its own layout)."""

    name = "by-split"
    title = "the layouts of each split"
    instructions = ""

    def __init__(self, by_split: dict[str, Source]):
        self._by_split = dict(by_split)

    def find(self, manual_dir, splits, test_patch=None, test_archive=None):
        raise NotImplementedError("find with sources.find")

    def work_items(self, split: str, path: str) -> Iterator[WorkItem]:
        return self._by_split[split].work_items(split, path)

    def index(self, item: WorkItem) -> list[MemberRef]:
        return self._by_split[item[0]].index(item)

    def read_shard(self, refs: Sequence[MemberRef]) -> Iterator[tuple[MemberRef, bytes]]:
        return self._by_split[refs[0].split].read_shard(refs) if refs else iter(())

    def origin(self, ref: MemberRef) -> str:
        return self._by_split[ref.split].origin(ref)
