"""Checking the hand-downloaded tarballs before hours of conversion are spent on them.

A 147 GB download that stopped early, or a file that is not a tar at all, should fail in
minutes with a message saying what to do, not deep inside a pipeline. Each archive is read
once, as a stream: the bytes feed sha256 and md5 (kept for lineage) while `tarfile` walks
the same bytes to the end-of-archive marker. Archives image-net.org publishes checksums for
are compared with them (size first, so a short download fails without being read). Results
can be cached by the file's identity (path, size, times and inode; on GCS its generation),
so a re-run does not read 160 GB again.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import queue
import tarfile
import threading
from collections.abc import Iterable
from typing import Any, BinaryIO

from imagenet_beam import dataset, storage
from imagenet_beam.sources.tar import ArchiveError, walk_tar

log = logging.getLogger(__name__)

_CHUNK = 8 << 20
_MD5_QUEUE = 16  # chunks read ahead of the md5 thread, at most (~16 MB)
_TAR_BUFSIZE = 1 << 20
_PROGRESS_EVERY = 10 << 30
PUBLISHED = "published"
_CACHE_VERSION = 2  # 2: keyed by storage.identity, not size and mtime

_ADVICE = "download it again, or turn off verify_checksums for custom or subset data"


class ArchiveCheckError(ValueError):
    """One or more archives failed; `failures` maps each failing path to its message."""

    def __init__(self, message: str, failures: dict[str, str] | None = None):
        super().__init__(message)
        self.failures = dict(failures or {})


@dataclasses.dataclass
class ArchiveCheck:
    """What was found in one archive; goes into the lineage of everything built from it."""

    path: str
    name: str
    size: int
    modified: float
    sha256: str
    md5: str
    num_members: int
    verified_against: str | None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _HashingReader:
    """Passes reads through, hashing every byte, so one pass serves tarfile and the hashes.

    md5 (~0.7 GB/s here) runs in a thread of its own beside sha256 (~1.7 GB/s) and the tar
    walk, fed the same chunks (hashlib releases the GIL on them): a check costs about the
    slower hash instead of the sum of both. Use it as a context manager (the thread ends)."""

    def __init__(self, raw: BinaryIO, path: str):
        self._raw = raw
        self._path = path
        self.sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._md5_chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=_MD5_QUEUE)
        self._md5_thread = threading.Thread(target=self._md5_loop, daemon=True)
        self._md5_thread.start()
        self.bytes_read = 0
        self._next_report = _PROGRESS_EVERY

    def _md5_loop(self) -> None:
        while (chunk := self._md5_chunks.get()) is not None:
            self._md5.update(chunk)

    def __enter__(self) -> _HashingReader:
        return self

    def __exit__(self, *exc) -> None:
        if self._md5_thread.is_alive():
            self._md5_chunks.put(None)
            self._md5_thread.join()

    def md5_hexdigest(self) -> str:
        """The md5 of everything read (ends the md5 thread: read nothing after this)."""
        self.__exit__()
        return self._md5.hexdigest()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size) if size is not None and size >= 0 else self._raw.read()
        if data:
            self._md5_chunks.put(data)
        self.sha256.update(data)
        self.bytes_read += len(data)
        if self.bytes_read >= self._next_report:
            log.info("%s: %.1f GiB read", self._path, self.bytes_read / (1 << 30))
            self._next_report += _PROGRESS_EVERY
        return data

    def drain(self) -> None:
        """Reads what tarfile left (end padding), so the hashes cover the whole file."""
        while self.read(_CHUNK):
            pass


class CheckedTarInfo(tarfile.TarInfo):
    """Records why `tarfile` stopped, which it otherwise hides.

    `TarFile.next()` returns None both at the end-of-archive marker and when the file just
    stops at a header (a download cut at a member boundary), so the reason is kept on the
    TarFile for `tar_end_problem`.
    """

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as e:
            tar._imagenet_end = e  # type: ignore[attr-defined]
            raise


def tar_end_problem(tar: tarfile.TarFile) -> str | None:
    """Why a fully iterated tar (opened with `tarinfo=CheckedTarInfo`) is incomplete, or None.

    Reads the rest of the (decompressed) stream: a complete tar has two zero blocks after
    its last member, which `tar.walk_tar` also insists on, so an archive that passes
    here is not refused later by the pipeline.
    """
    end = getattr(tar, "_imagenet_end", None)
    where = f"byte {tar.offset:,}"
    if isinstance(end, tarfile.EmptyHeaderError):
        return f"it stops at {where} without the end-of-archive marker"
    if isinstance(end, tarfile.TruncatedHeaderError):
        return f"it stops inside the member header at {where}"
    if isinstance(end, tarfile.InvalidHeaderError):
        return f"the block at {where} is not a tar header ({end})"
    if not isinstance(end, tarfile.EOFHeaderError):
        return "the end-of-archive marker was not found"
    stream = tar.fileobj
    assert stream is not None
    while stream.read(_TAR_BUFSIZE):
        pass
    if stream.tell() < tar.offset + 2 * tarfile.BLOCKSIZE:
        return f"it stops at byte {stream.tell():,}, inside the end-of-archive marker"
    return None


def _not_a_tar(path: str, reason: object) -> ArchiveCheckError:
    return ArchiveCheckError(
        f"{path} is not a complete tar archive ({reason}): the download is probably "
        "incomplete or corrupt; download it again",
        {path: "not a complete tar archive"},
    )


class _ForwardStream:
    """The hashing reader as `tar.walk_tar` wants a file: `seek` (forward only) and `read`,
    over the reader's 8 MiB chunks, so every byte is still read (and hashed) once, in
    order. Skipped member data is never copied."""

    def __init__(self, reader: _HashingReader):
        self._reader = reader
        self._chunk = b""
        self._chunk_start = 0  # file offset of the chunk's first byte
        self._pos = 0

    def seek(self, pos: int) -> int:
        if pos < self._pos:
            raise ValueError(f"seek back from {self._pos} to {pos} on a forward stream")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int) -> bytes:
        pieces = []
        while size > 0:
            at = self._pos - self._chunk_start
            if at >= len(self._chunk):
                self._chunk_start += len(self._chunk)
                self._chunk = self._reader.read(_CHUNK)
                if not self._chunk:
                    break
                continue
            piece = self._chunk[at : at + size]
            pieces.append(piece)
            self._pos += len(piece)
            size -= len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def peek(self, size: int) -> bytes:
        """The next `size` bytes (fewer at the end), without moving."""
        if self._pos > self._chunk_start + len(self._chunk):
            raise ValueError("peek after seeking past what was read")
        while self._chunk_start + len(self._chunk) < self._pos + size:
            more = self._reader.read(_CHUNK)
            if not more:
                break
            keep = self._chunk[self._pos - self._chunk_start :]
            self._chunk, self._chunk_start = keep + more, self._pos
        at = self._pos - self._chunk_start
        return self._chunk[at : at + size]


# What a compressed tar starts with (the devkit is a .tar.gz): gzip, bzip2, xz.
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


def _count_members(stream: _ForwardStream, path: str) -> int:
    """The regular files of the tar `stream` holds, walked to its end-of-archive marker.

    A plain tar is walked by its headers (`tar.walk_tar`, ~5 µs a header; `tarfile` takes
    ~35, which at ImageNet's 150,000 validation and test members is ~5 s of a core); a
    compressed one by `tarfile`, which decompresses it.
    """
    if not stream.peek(6).startswith(_COMPRESSED_MAGIC):
        try:
            return sum(1 for _ in walk_tar(stream, path, tfds_names=False))  # type: ignore[arg-type]
        except ArchiveError as e:
            if e.reason is None:
                raise ArchiveCheckError(str(e), {path: str(e)}) from None
            raise _not_a_tar(path, f"it {e.reason}") from None
    count = 0
    try:
        with tarfile.open(
            fileobj=stream,  # type: ignore[arg-type]
            mode="r|*",
            bufsize=_TAR_BUFSIZE,
            tarinfo=CheckedTarInfo,
        ) as archive:
            while (info := archive.next()) is not None:
                archive.members.clear()  # headers only: memory stays flat at 100k members
                if info.isreg():
                    count += 1
            problem = tar_end_problem(archive)
    except (tarfile.TarError, EOFError) as e:
        raise _not_a_tar(path, e) from None
    if problem:
        raise _not_a_tar(path, problem)
    return count


def _read_and_walk(path: str) -> tuple[str, str, int, int]:
    """sha256, md5, regular-file member count and byte count, from one streaming read."""
    with storage.open_read(path) as raw, _HashingReader(raw, path) as reader:
        # The hashes see the bytes as stored: the reader sits below any decompressor.
        count = _count_members(_ForwardStream(reader), path)
        reader.drain()
        md5 = reader.md5_hexdigest()
    return reader.sha256.hexdigest(), md5, count, reader.bytes_read


def _cache_path(cache_dir: str, path: str, identity: dict) -> str:
    key = json.dumps([path, identity], sort_keys=True)
    return storage.join(cache_dir, hashlib.sha1(key.encode("utf-8")).hexdigest() + ".json")


def _load_cached(cache_file: str, path: str, identity: dict) -> ArchiveCheck | None:
    """The stored result for exactly this file state, or None (a torn file is a miss)."""
    if not storage.exists(cache_file):
        return None
    try:
        stored = json.loads(storage.read_bytes(cache_file))
        if stored.get("version") != _CACHE_VERSION:
            return None
        fields = dict(stored["check"], cached=True)
        check = ArchiveCheck(**fields)
    except (ValueError, KeyError, TypeError):
        return None
    if check.path != path or stored.get("identity") != identity:
        return None
    return check


def _store_cached(cache_file: str, cache_dir: str, check: ArchiveCheck, identity: dict) -> None:
    storage.makedirs(cache_dir)
    record = {
        "version": _CACHE_VERSION,
        "identity": identity,
        "check": dict(check.to_dict(), cached=False),
    }
    storage.write_bytes(cache_file, json.dumps(record, indent=1, sort_keys=True).encode())


def _satisfies(check: ArchiveCheck, published: dataset.PublishedArchive | None) -> bool:
    """Whether a cached result answers this call: unverified ones cannot stand for a check."""
    if published is None:
        return True
    return (
        check.verified_against == PUBLISHED
        and check.sha256 == published.sha256
        and (published.size is None or check.size == published.size)
    )


def check_archive(
    path: str,
    *,
    verify_checksum: bool = True,
    cache_dir: str | None = None,
    published: dataset.PublishedArchive | None = None,
    cached_only: bool = False,
) -> ArchiveCheck | None:
    """Hashes `path` and walks it as a tar to the end; compares with the published values.
    cached_only: only what a check of exactly this file state stored, or None.

    `published` overrides the entry of `dataset.PUBLISHED_ARCHIVES` found by file name
    (tests use it: the real archives are too big to ship). Raises ArchiveCheckError.
    """
    name = storage.basename(path)
    if not storage.exists(path):
        raise ArchiveCheckError(
            f"{path} does not exist. {dataset.DOWNLOAD_INSTRUCTIONS}", {path: "missing"}
        )
    identity = storage.identity(path)
    size = identity["size"]
    modified = storage.last_updated(path)
    expected = None
    if verify_checksum:
        expected = published or dataset.PUBLISHED_ARCHIVES.get(name)
    if expected is not None and expected.size is not None and size != expected.size:
        raise ArchiveCheckError(
            f"{path}: expected {expected.size:,} bytes (published by image-net.org), found "
            f"{size:,} bytes: the download is probably incomplete or corrupt; {_ADVICE}",
            {path: "size differs from the published size"},
        )

    cache_file = _cache_path(cache_dir, path, identity) if cache_dir else None
    if cache_file and cache_dir:
        cached = _load_cached(cache_file, path, identity)
        if cached is not None and _satisfies(cached, expected):
            log.info("%s: checked before (sha256 %s), not read again", path, cached.sha256)
            return cached
    if cached_only:
        return None

    log.info("%s: hashing %s bytes and walking the tar", path, f"{size:,}")
    sha256, md5, count, read = _read_and_walk(path)
    if read != size:
        raise ArchiveCheckError(
            f"{path}: {size:,} bytes were listed but {read:,} were read: the file changed "
            "while it was checked; wait until it is fully written, then check again",
            {path: "changed while read"},
        )
    if expected is not None and sha256 != expected.sha256:
        raise ArchiveCheckError(
            f"{path}: expected sha256 {expected.sha256} (published by image-net.org), found "
            f"sha256 {sha256}: the download is probably corrupt; {_ADVICE}",
            {path: "sha256 differs from the published sha256"},
        )
    check = ArchiveCheck(
        path=path,
        name=name,
        size=size,
        modified=modified,
        sha256=sha256,
        md5=md5,
        num_members=count,
        verified_against=PUBLISHED if expected is not None else None,
    )
    if cache_file and cache_dir:
        _store_cached(cache_file, cache_dir, check, identity)
    return check


def cached_checks(
    paths: Iterable[str], *, verify_checksum: bool = True, cache_dir: str
) -> list[ArchiveCheck] | None:
    """What `check_archives` would return, when every archive's check is cached for its
    current state (size, times, inode); None when one must still be read. Reads no archive:
    a missing file or a size other than the published one fails as `check_archives` does,
    every such archive in one error."""
    paths = list(paths)
    checks, failed = [], []
    for path in paths:
        try:
            checks.append(check_archive(
                path, verify_checksum=verify_checksum, cache_dir=cache_dir, cached_only=True
            ))
        except ArchiveCheckError as e:
            failed.append((path, e))
    _raise_failures(failed, len(paths))
    return None if None in checks else checks


def _raise_failures(failed: list[tuple[str, ArchiveCheckError]], num_paths: int) -> None:
    """One error listing every (path, error) of `failed`, if any."""
    if not failed:
        return
    failures: dict[str, str] = {}
    for path, e in failed:
        failures.update(e.failures or {path: str(e)})
    listing = "\n".join(f"  - {e}" for _, e in failed)
    raise ArchiveCheckError(
        f"{len(failed)} of {num_paths} archives failed the check:\n{listing}", failures
    )


def check_archives(
    paths: Iterable[str], *, verify_checksum: bool = True, cache_dir: str | None = None
) -> list[ArchiveCheck]:
    """Checks every archive, the archives side by side (a thread each, up to one per core:
    each read is disk- or hash-bound and hashlib releases the GIL), then raises one error
    listing all failures, so one run shows all. Results are in the order of `paths`."""
    paths = list(paths)
    results: list[ArchiveCheck] = []
    failed: list[tuple[str, ArchiveCheckError]] = []

    def check(path: str) -> ArchiveCheck:
        return check_archive(path, verify_checksum=verify_checksum, cache_dir=cache_dir)

    workers = max(1, min(len(paths), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers, "archive-check") as pool:
        futures = [(path, pool.submit(check, path)) for path in paths]
    for path, future in futures:
        try:
            results.append(future.result())
        except ArchiveCheckError as e:
            failed.append((path, e))
    _raise_failures(failed, len(paths))
    return results
