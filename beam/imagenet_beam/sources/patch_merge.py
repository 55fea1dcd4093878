"""Merging the October 2019 test patch into the 2012 test tar, as one streaming pass.

The TFDS catalog asks users to do this by hand: extract the 2012 test tar, extract the
patch over it, tar it up again. Here the 2012 tar is copied member by member into a new
tar, with the bytes of each patched image taken from the patch, so nothing is extracted
(and nothing in a tar can write outside its folder). The output is written under a
temporary name and renamed into place, recorded in a sidecar so an unchanged re-run does
nothing, and byte-identical for the same inputs.

The merged tar is not named like image-net.org's patched tar (`ILSVRC2012_img_test_
v10102019.tar`): its bytes differ from the published file, so its checksum would not match.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import os
import posixpath
import tarfile
from typing import Any, BinaryIO

from imagenet_beam import storage
from imagenet_beam.sources.archive_checks import CheckedTarInfo, tar_end_problem
from imagenet_beam.sources.tar import ArchiveError

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".merge.json"
_SIDECAR_VERSION = 1
_TAR_FORMAT = tarfile.PAX_FORMAT
_TAR_BUFSIZE = 1 << 20
_SAFE_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.DIRTYPE})


class UnsafeMemberError(ValueError):
    """A tar member that could write outside its folder or is not a plain file or folder."""


@dataclasses.dataclass
class PatchReport:
    """What the merge did; stored next to the output and returned again on reuse."""

    output: str
    test_archive: str
    patch_archive: str
    replaced: list[str]
    added: list[str]
    num_members: int
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _unsafe_reason(info: tarfile.TarInfo) -> str | None:
    name = info.name
    if not name:
        return "has an empty name"
    if name.startswith("/"):
        return "has an absolute path"
    if ".." in name.split("/"):
        return "has a '..' path component, which points outside the archive's folder"
    if info.issym():
        return f"is a symbolic link (to {info.linkname!r})"
    if info.islnk():
        return f"is a hard link (to {info.linkname!r})"
    if info.ischr():
        return "is a character device"
    if info.isblk():
        return "is a block device"
    if info.isfifo():
        return "is a FIFO"
    if info.type not in _SAFE_TYPES:
        return f"has tar member type {info.type!r}, not a regular file or folder"
    return None


def _check_member(archive: str, info: tarfile.TarInfo) -> None:
    reason = _unsafe_reason(info)
    if reason:
        raise UnsafeMemberError(
            f"{archive}: member {info.name!r} {reason}; refusing to merge. The ImageNet "
            "test archives hold only image files, so this is not the file from "
            "image-net.org: download it again"
        )


def _normalize(name: str) -> str:
    return posixpath.normpath(name)


def _not_readable(path: str, reason: object) -> ArchiveError:
    return ArchiveError(
        f"{path} is not a complete tar archive ({reason}); the download may be incomplete "
        "or corrupt: download it again"
    )


def _read_patch(path: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    """Every regular member of the (small) patch with its bytes, all checked before writing."""
    members: list[tuple[tarfile.TarInfo, bytes]] = []
    seen: set[str] = set()
    with storage.open_read(path) as f:
        try:
            with tarfile.open(
                fileobj=f, mode="r|", bufsize=_TAR_BUFSIZE, tarinfo=CheckedTarInfo
            ) as tar:
                while (info := tar.next()) is not None:
                    tar.members.clear()
                    _check_member(path, info)
                    if info.isdir():
                        continue
                    name = _normalize(info.name)
                    if name in seen:
                        raise ArchiveError(
                            f"{path} holds {info.name!r} twice, so it is unclear which "
                            "version to use; this is not the patch from image-net.org"
                        )
                    seen.add(name)
                    reader = tar.extractfile(info)
                    data = reader.read() if reader is not None else b""
                    if len(data) != info.size:
                        raise _not_readable(path, f"it ends inside member {info.name!r}")
                    members.append((info, data))
                problem = tar_end_problem(tar)
        except tarfile.TarError as e:
            raise _not_readable(path, e) from None
    if problem:
        raise _not_readable(path, problem)
    return members


class _Patch:
    """Finds the patch member for a 2012 member: same path, else same file name."""

    def __init__(self, path: str, members: list[tuple[tarfile.TarInfo, bytes]]):
        self.path = path
        self.members = members
        self.by_name = {_normalize(info.name): i for i, (info, _) in enumerate(members)}
        self.by_basename: dict[str, list[int]] = {}
        for name, i in self.by_name.items():
            self.by_basename.setdefault(posixpath.basename(name), []).append(i)
        self.used: dict[int, str] = {}

    def match(self, member_name: str) -> int | None:
        name = _normalize(member_name)
        index = self.by_name.get(name)
        if index is None:
            candidates = self.by_basename.get(posixpath.basename(name), [])
            if len(candidates) > 1:
                names = [self.members[i][0].name for i in candidates]
                raise ArchiveError(
                    f"{self.path}: members {names} all have the file name of test image "
                    f"{member_name!r}; cannot tell which one replaces it"
                )
            index = candidates[0] if candidates else None
        if index is None:
            return None
        if index in self.used:
            raise ArchiveError(
                f"{self.path}: member {self.members[index][0].name!r} matches both "
                f"{self.used[index]!r} and {member_name!r} of the 2012 test tar; cannot "
                "tell which one it replaces"
            )
        self.used[index] = member_name
        return index


class _ExactReader:
    """A member's data from the 2012 stream; a short read is a truncated download."""

    def __init__(self, raw: BinaryIO, archive: str, member: str):
        self._raw = raw
        self._archive = archive
        self._member = member

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        while 0 <= size and len(data) < size:
            more = self._raw.read(size - len(data))
            if not more:
                raise _not_readable(self._archive, f"it ends inside member {self._member!r}")
            data += more
        return data


def _replacement_header(original: tarfile.TarInfo, size: int) -> tarfile.TarInfo:
    """The 2012 member's header (name, mode, times) with the patch's size."""
    header = copy.copy(original)
    header.pax_headers = {k: v for k, v in original.pax_headers.items() if k != "size"}
    header.size = size
    return header


def _write_merged(
    out: BinaryIO, test_archive: str, patch: _Patch
) -> tuple[list[str], list[str], int]:
    """Streams the merge into `out`; returns (replaced, added, number of members)."""
    replaced: list[str] = []
    count = 0
    with (
        storage.open_read(test_archive) as f,
        tarfile.open(fileobj=out, mode="w|", format=_TAR_FORMAT, bufsize=_TAR_BUFSIZE) as dst,
    ):
        try:
            with tarfile.open(
                fileobj=f, mode="r|", bufsize=_TAR_BUFSIZE, tarinfo=CheckedTarInfo
            ) as src:
                while (info := src.next()) is not None:
                    src.members.clear()
                    _check_member(test_archive, info)
                    count += 1
                    if info.isdir():
                        dst.addfile(copy.copy(info))
                        continue
                    index = patch.match(info.name)
                    if index is None:
                        data = src.extractfile(info)
                        assert data is not None  # a regular file, checked above
                        reader = _ExactReader(data, test_archive, info.name)  # type: ignore[arg-type]
                        dst.addfile(copy.copy(info), reader)  # type: ignore[arg-type]
                        continue
                    new_bytes = patch.members[index][1]
                    dst.addfile(_replacement_header(info, len(new_bytes)), io.BytesIO(new_bytes))
                    replaced.append(info.name)
                problem = tar_end_problem(src)
        except tarfile.TarError as e:
            raise _not_readable(test_archive, e) from None
        if problem:
            raise _not_readable(test_archive, problem)
        added: list[str] = []
        for i, (info, data) in enumerate(patch.members):
            if i not in patch.used:
                dst.addfile(copy.copy(info), io.BytesIO(data))
                added.append(info.name)
                count += 1
    return sorted(replaced), added, count


def _fingerprint(path: str) -> dict[str, Any]:
    if not storage.exists(path):
        raise FileNotFoundError(f"{path} does not exist; it is needed to merge the test patch")
    return {"path": path, **storage.identity(path)}


def _sibling(path: str, name: str) -> str:
    """A file next to `path` (local or remote)."""
    if storage.is_remote(path):
        return posixpath.join(posixpath.dirname(path), name)
    return os.path.join(os.path.dirname(path), name)


def _reusable(output: str, sidecar: str, inputs: dict[str, Any]) -> PatchReport | None:
    """The stored report when the output exists and was made from exactly these inputs."""
    if not (storage.exists(output) and storage.exists(sidecar)):
        return None
    try:
        stored = json.loads(storage.read_bytes(sidecar))
        if (
            stored.get("version") != _SIDECAR_VERSION
            or stored.get("inputs") != inputs
            or stored.get("output") != _fingerprint(output)
        ):
            return None
        return PatchReport(**dict(stored["report"], output=output, reused=True))
    except (ValueError, KeyError, TypeError):
        return None


def _refuse_additions(patch_archive: str, test_archive: str, added: list[str]) -> None:
    shown = ", ".join(added[:10]) + (" …" if len(added) > 10 else "")
    raise ArchiveError(
        f"{patch_archive}: {len(added)} member(s) replace no image of {test_archive} "
        f"({shown}); the October 2019 patch only replaces images, so this is probably not "
        "that patch (or not the 2012 test tar it belongs to). Check the files, or allow "
        "additions with --patch_additions (they are listed in lineage.json)"
    )


def merge_test_patch(
    test_archive: str, patch_archive: str, output: str, allow_additions: bool = False
) -> PatchReport:
    """Writes the 2012 test tar with the patch's images in place of the old ones to `output`.

    Reuses an existing output whose sidecar names the same inputs (path, size, modified
    time). Raises UnsafeMemberError for members that could escape the folder, ArchiveError
    for unreadable tars and, unless allow_additions, for patch members that replace
    nothing (they would become new test images); in all cases no output or partial file
    is left behind.
    """
    if output in (test_archive, patch_archive):
        raise ValueError(f"the merged test tar must not overwrite an input ({output})")
    inputs = {
        "test_archive": _fingerprint(test_archive),
        "patch_archive": _fingerprint(patch_archive),
    }
    sidecar = output + SIDECAR_SUFFIX
    stored = _reusable(output, sidecar, inputs)
    if stored is not None:
        if stored.added and not allow_additions:
            _refuse_additions(patch_archive, test_archive, stored.added)
        log.info("%s is up to date with %s and %s", output, test_archive, patch_archive)
        return stored

    patch = _Patch(patch_archive, _read_patch(patch_archive))
    if storage.exists(sidecar):
        storage.delete_files([sidecar])  # the old output no longer has a valid record
    partial = _sibling(output, f".{storage.basename(output)}.partial")
    log.info("merging %s into %s -> %s", patch_archive, test_archive, output)
    try:
        with storage.open_write(partial) as out:
            replaced, added, count = _write_merged(out, test_archive, patch)
        if added and not allow_additions:
            _refuse_additions(patch_archive, test_archive, added)
        storage.rename_file(partial, output)
    except BaseException:
        if storage.exists(partial):
            storage.delete_files([partial])
        raise
    report = PatchReport(output, test_archive, patch_archive, replaced, added, count)
    record = {
        "version": _SIDECAR_VERSION,
        "inputs": inputs,
        "output": _fingerprint(output),
        "report": report.to_dict(),
    }
    storage.write_bytes(sidecar, json.dumps(record, indent=1, sort_keys=True).encode())
    return report
