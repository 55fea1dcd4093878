"""The tarballs as image-net.org hands them out.

Train is one tar of 1000 class tars (`<wnid>.tar`, the label), each walked in place inside
the outer tar, one work item per class; validation and test are flat tars of images, one
work item each. Which archives a split needs: train the train tar; validation the
validation tar; test either the 2019-patched test tar, or the 2012 test tar together with
the patch tar (merged before conversion), or — as TFDS assumes when no patch is named —
the 2012 test tar alone, taken to be patched already.
"""

from __future__ import annotations

import functools
import json
import posixpath
from collections.abc import Iterator, Sequence

from imagenet_beam import dataset, layout, storage
from imagenet_beam.sources.base import MemberRef, Source, SplitInput, WorkItem
from imagenet_beam.sources.tar import ArchiveError, TarEntry, walk_tar

# ~140 MB apart: small reads, or GCS would fetch 16 MiB for every 512-byte header.
HEADER_WALK_BUFFER = 64 << 10


def _alternatives(split: str, test_patch: str | None) -> list[tuple[str, str | None]]:
    """(archive name, patch name) alternatives for a split, in order of preference."""
    if split == dataset.TRAIN:
        return [(dataset.TRAIN_ARCHIVE, None)]
    if split == dataset.VALIDATION:
        return [(dataset.VALIDATION_ARCHIVE, None)]
    if test_patch:
        return [(dataset.TEST_ARCHIVE_PATCHED, None), (dataset.TEST_ARCHIVE_2012, test_patch)]
    return [(dataset.TEST_ARCHIVE_PATCHED, None), (dataset.TEST_ARCHIVE_2012, None)]


def _checked_names(archive: str, entries: list[TarEntry]) -> list[TarEntry]:
    """Member names must be UTF-8: TFDS stores them as text (its `file_name`) and keys
    examples by them, so it cannot hold one that is not either."""
    for e in entries:
        try:
            e.name.encode("utf-8")
        except UnicodeEncodeError:
            raw = e.name.encode("utf-8", "surrogateescape")
            raise ArchiveError(
                f"{archive}: member name {raw!r} is not UTF-8, so it cannot be stored as "
                "TFDS's file_name; is this the archive from image-net.org? Rename the member "
                "or download the archive again"
            ) from None
    return entries


def list_inner_tars(train_archive: str) -> list[TarEntry]:
    """The per-class tars inside the train archive, in archive order."""
    with storage.open_read(train_archive, buffer_size=HEADER_WALK_BUFFER) as f:
        return list(walk_tar(f, train_archive))


def index_inner_tar(train_archive: str, inner: TarEntry) -> list[MemberRef]:
    """The images of one class, with offsets into the outer train archive."""
    label = dataset.train_label(inner.name)
    with storage.open_read(train_archive) as f:
        view = storage.RangeReader(f, inner.offset, inner.size)
        entries = _checked_names(
            f"{train_archive} member {inner.name}",
            list(walk_tar(view, f"{train_archive} member {inner.name}")),
        )
    return [
        MemberRef(dataset.TRAIN, train_archive, inner.offset + e.offset, e.size, e.name, label)
        for e in entries
    ]


def index_flat_archive(split: str, archive: str) -> list[MemberRef]:
    """The images of the validation or test tar, labelled."""
    with storage.open_read(archive) as f:
        entries = _checked_names(archive, list(walk_tar(f, archive)))
    refs = []
    for e in entries:
        if split == dataset.VALIDATION:
            try:
                label = dataset.validation_label(e.name)
            except ValueError as err:
                raise ArchiveError(f"{archive}: {err}") from None
        else:
            label = dataset.TEST_LABEL
        refs.append(MemberRef(split, archive, e.offset, e.size, e.name, label))
    return refs


@functools.lru_cache(maxsize=8)
def _merge_report(merged_archive: str) -> dict | None:
    """The patch merge's report beside a merged test tar (see `patch_merge`)."""
    from imagenet_beam.sources import patch_merge

    sidecar = merged_archive + patch_merge.SIDECAR_SUFFIX
    try:
        return json.loads(storage.read_bytes(sidecar))["report"]
    except (OSError, ValueError, KeyError):
        return None


class TarballSource(Source):
    name = "tarballs"
    title = "the tarballs from image-net.org"
    instructions = dataset.DOWNLOAD_INSTRUCTIONS

    def present(self, manual_dir: str) -> bool:
        names = (dataset.TRAIN_ARCHIVE, dataset.VALIDATION_ARCHIVE,
                 *dataset.test_archive_candidates())
        return any(storage.exists(storage.join(manual_dir, n)) for n in names)

    def origin(self, ref: MemberRef) -> str:
        """For the merged test tar (our copy): the patch for the images it replaced or
        added, the 2012 test tar for the others."""
        if storage.basename(ref.archive) != layout.MERGED_TEST_ARCHIVE:
            return ref.archive
        report = _merge_report(ref.archive)
        if report is None:
            return ref.archive
        from_patch = {posixpath.normpath(n) for n in report["replaced"] + report["added"]}
        if posixpath.normpath(ref.file_name) in from_patch:
            return f"the test patch {report['patch_archive']} (merged into {ref.archive})"
        return report["test_archive"]

    def find(
        self,
        manual_dir: str,
        splits: Sequence[str],
        test_patch: str | None = None,
        test_archive: str | None = None,
    ) -> tuple[dict[str, SplitInput], list[str]]:
        """test_archive: a file name in manual_dir, or a full path, used for the test
        split instead of the default choice (no patch is merged into it)."""
        found, missing = {}, []
        for split in splits:
            if split == dataset.TEST and test_archive:
                is_path = "/" in test_archive or storage.is_remote(test_archive)
                path = test_archive if is_path else storage.join(manual_dir, test_archive)
                if storage.exists(path):
                    found[split] = SplitInput(split, path)
                else:
                    missing.append(f"test: {test_archive}")
                continue
            alternatives = _alternatives(split, test_patch)
            for archive, patch in alternatives:
                paths = [storage.join(manual_dir, n) for n in (archive, patch) if n]
                if all(storage.exists(p) for p in paths):
                    found[split] = SplitInput(split, paths[0], paths[1] if patch else None)
                    break
            else:
                wanted = " or ".join(
                    " + ".join(n for n in (archive, patch) if n) for archive, patch in alternatives
                )
                missing.append(f"{split}: {wanted}")
        return found, missing

    def work_items(self, split: str, path: str) -> Iterator[WorkItem]:
        """One work item per class tar for train (the train tar is a tar of class tars),
        one for a flat validation or test tar."""
        if split == dataset.TRAIN:
            for inner in list_inner_tars(path):
                yield split, path, tuple(inner)
        else:
            yield split, path, None

    def index(self, item: WorkItem) -> list[MemberRef]:
        split, path, inner = item
        if inner is not None:
            return index_inner_tar(path, TarEntry(*inner))
        return index_flat_archive(split, path)
