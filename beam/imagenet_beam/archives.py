"""Reading the ILSVRC tarballs by their headers, and their members by offset.

Nothing here loads a whole archive: indexing walks tar headers only (tarfile seeks over
member data), and a train class's inner tar is walked in place inside the outer tar.
Member names are kept or dropped the way TFDS's tar iteration does, so `file_name`s match.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from imagenet_beam import dataset, storage


class ArchiveError(ValueError):
    """An archive that cannot be read as the ILSVRC tarball it should be."""


class TarEntry(NamedTuple):
    name: str  # as TFDS names it (normalised path)
    offset: int  # of the member's data, from the start of the file walked
    size: int


class MemberRef(NamedTuple):
    """Where one image lives: enough to read it back without touching anything else."""

    split: str
    archive: str  # path of the (outer) archive
    offset: int  # absolute offset of the member's data in `archive`
    size: int
    file_name: str
    label: int


def tfds_member_name(path: str) -> str | None:
    """The name TFDS gives a tar member, or None for members TFDS skips."""
    path = os.path.normpath(path)
    if (
        path.startswith(".")
        or os.path.isabs(path)
        or path.endswith("~")
        or os.path.basename(path).startswith(".")
    ):
        return None
    return path


def _check_end_marker(fileobj: BinaryIO, end: int, description: str) -> None:
    """A complete tar ends with two zero blocks; without them the file was cut short.

    (tarfile treats end of file at a header boundary as a normal end of archive.)
    """
    size = fileobj.seek(0, io.SEEK_END)
    if size < end + 2 * tarfile.BLOCKSIZE:
        raise ArchiveError(
            f"{description} ends after {size:,} bytes without the end-of-archive marker: "
            "the download is incomplete, download it again"
        )


def walk_tar(fileobj: BinaryIO, description: str) -> Iterator[TarEntry]:
    """Regular-file members of a tar, reading headers only."""
    try:
        tar = tarfile.open(fileobj=fileobj, mode="r:")
        while (info := tar.next()) is not None:
            tar.members.clear()  # headers only: nothing to keep per member
            if not info.isreg():
                continue
            name = tfds_member_name(info.name)
            if name is not None:
                yield TarEntry(name, info.offset_data, info.size)
        _check_end_marker(fileobj, tar.offset, description)
    except tarfile.TarError as e:
        raise ArchiveError(
            f"{description} is not a readable tar archive ({e}); the download may be "
            "incomplete or corrupt: download it again"
        ) from None


def list_inner_tars(train_archive: str) -> list[TarEntry]:
    """The per-class tars inside the train archive, in archive order."""
    with storage.open_read(train_archive) as f:
        return list(walk_tar(f, train_archive))


def index_inner_tar(train_archive: str, inner: TarEntry) -> list[MemberRef]:
    """The images of one class, with offsets into the outer train archive."""
    label = dataset.train_label(inner.name)
    with storage.open_read(train_archive) as f:
        view = storage.RangeReader(f, inner.offset, inner.size)
        entries = list(walk_tar(view, f"{train_archive} member {inner.name}"))
    return [
        MemberRef(dataset.TRAIN, train_archive, inner.offset + e.offset, e.size, e.name, label)
        for e in entries
    ]


def index_flat_archive(split: str, archive: str) -> list[MemberRef]:
    """The images of the validation or test tar, labelled."""
    with storage.open_read(archive) as f:
        entries = list(walk_tar(f, archive))
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


def read_members(archive: str, refs: list[MemberRef]) -> Iterator[tuple[MemberRef, bytes]]:
    """Member bytes, read in offset order (sequential on disk, few range requests on GCS)."""
    with storage.open_read(archive) as f:
        for ref in sorted(refs, key=lambda r: r.offset):
            f.seek(ref.offset)
            data = f.read(ref.size)
            if len(data) != ref.size:
                raise ArchiveError(
                    f"{archive} ends inside member {ref.file_name}: the download is "
                    "incomplete, download it again"
                )
            yield ref, data
