"""One way to reach files, local or `gs://`: the standard library for local paths, Apache
Beam's `FileSystems` for the rest.

Everything the pipeline reads or writes goes through here, so a local path and a bucket
prefix behave the same wherever the code runs (launcher, DirectRunner, Dataflow worker).
Beam is imported only when a remote path is reached: a DAG task that only looks at local
files (the lease, the plan, publish) does not pay Beam's import (~1–3 s a task).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

# Path arithmetic is the layout's (standard library only); every caller reaches it here too.
from imagenet_beam import direct_io
from imagenet_beam.layout import basename, is_remote, join  # noqa: F401

_READ_CHUNK = 8 << 20
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


def use_gcs_emulator_if_set() -> bool:
    """With `STORAGE_EMULATOR_HOST` set (a local GCS JSON API server), tell Beam there are
    no credentials, as the server takes none.

    Otherwise Beam's client first retries Google's credential lookup for ~30 s, then
    connects anonymously anyway. Real buckets use Application Default Credentials, untouched.
    """
    if not os.environ.get(EMULATOR_ENV):
        return False
    from apache_beam.internal.gcp import auth

    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = True
    return True


def _remote_ready(*paths: str) -> None:
    if any(is_remote(p) for p in paths):
        use_gcs_emulator_if_set()


def _filesystems():
    """Beam's FileSystems, for remote paths (imported on first use)."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _uncompressed():
    from apache_beam.io.filesystem import CompressionTypes

    return CompressionTypes.UNCOMPRESSED


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(path)
    _remote_ready(path)
    return _filesystems().exists(path)


def size(path: str) -> int:
    if not is_remote(path):
        return os.path.getsize(path)
    _remote_ready(path)
    return _filesystems().match([path])[0].metadata_list[0].size_in_bytes


def identity(path: str) -> dict:
    """What changes whenever a file's content may have: locally size, modification and
    change times, inode and device (a rewrite with its modification time set back still
    changes the change time, which no user can set); on GCS size and generation (a new
    one for every write of the object)."""
    if not is_remote(path):
        st = os.stat(path)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
                "inode": st.st_ino, "device": st.st_dev}
    blob = gcs_blob(path)
    blob = blob.bucket.get_blob(blob.name)
    if blob is None:
        raise FileNotFoundError(path)
    return {"size": blob.size, "generation": blob.generation}


def gcs_blob(path: str):
    """The google-cloud-storage Blob of a gs:// path (not fetched), on Beam's client."""
    _remote_ready(path)
    from apache_beam.io.gcp.gcsio import parse_gcs_path

    bucket, name = parse_gcs_path(path)
    return _gcsio().client.bucket(bucket).blob(name)


def last_updated(path: str) -> float:
    if not is_remote(path):
        return os.path.getmtime(path)
    _remote_ready(path)
    return _filesystems().last_updated(path)


def open_read(path: str, buffer_size: int | None = None) -> BinaryIO:
    """A seekable binary reader.

    On GCS every read fetches at least `buffer_size` bytes from where it starts (Beam's
    default: 16 MiB), which suits streaming a whole object. Walks that seek far between
    small reads (the train tar's headers) pass a small one. Scattered member reads use
    `read_ranges` instead.
    """
    if not is_remote(path):
        return open(path, "rb")
    _remote_ready(path)
    if buffer_size is not None and path.startswith("gs://"):
        return _gcsio().open(path, "rb", read_buffer_size=buffer_size)
    return _filesystems().open(path, compression_type=_uncompressed())


_GCSIO = None
_GCSIO_LOCK = threading.Lock()


def _gcsio():
    """One Beam GCS client per process (same credentials as Beam's own GCS filesystem)."""
    global _GCSIO
    with _GCSIO_LOCK:
        if _GCSIO is None:
            from apache_beam.io.gcp import gcsio

            _GCSIO = gcsio.GcsIO()
        return _GCSIO


# Ranges closer than this are fetched in one request (the gap is read and dropped), up to
# _MAX_REQUEST bytes a request; requests run _PARALLEL_REQUESTS at a time.
_MAX_GAP = 256 << 10
_MAX_REQUEST = 32 << 20
_PARALLEL_REQUESTS = 8


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int, list[int]]]:
    """(start, end, indices of `ranges` inside) per request, `ranges` sorted by offset."""
    requests: list[tuple[int, int, list[int]]] = []
    for i, (offset, length) in enumerate(ranges):
        end = offset + length
        if requests:
            start, last_end, members = requests[-1]
            if offset - last_end <= _MAX_GAP and max(end, last_end) - start <= _MAX_REQUEST:
                requests[-1] = (start, max(end, last_end), [*members, i])
                continue
        requests.append((offset, end, [i]))
    return requests


def read_ranges(path: str, ranges: list[tuple[int, int]]) -> Iterator[bytes]:
    """The bytes of each (offset, length) in `ranges` (sorted by offset), in that order.

    Local files: seek and read. GCS: one ranged GET per group of nearby ranges, several at a
    time, so only about the requested bytes cross the network. A range past the end of the
    file gives fewer bytes than asked.
    """
    if not (is_remote(path) and path.startswith("gs://")):
        with open_read(path) as f:
            for offset, length in ranges:
                f.seek(offset)
                yield f.read(length)
        return
    from concurrent.futures import ThreadPoolExecutor

    blob = gcs_blob(path)

    def fetch(request: tuple[int, int, list[int]]) -> bytes:
        from google.api_core.exceptions import RequestRangeNotSatisfiable

        start, end, _ = request
        try:
            return blob.download_as_bytes(start=start, end=end - 1, checksum=None)
        except RequestRangeNotSatisfiable:
            return b""  # starts past the end: the caller sees the bytes missing

    requests = _coalesce(ranges)
    with ThreadPoolExecutor(_PARALLEL_REQUESTS) as pool:
        for (start, _, members), data in zip(requests, pool.map(fetch, requests), strict=True):
            for i in members:
                offset, length = ranges[i]
                yield data[offset - start : offset - start + length]


def open_write(path: str) -> BinaryIO:
    if not is_remote(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return open(path, "wb")
    _remote_ready(path)
    return _filesystems().create(path, compression_type=_uncompressed())


def open_write_bulk(path: str) -> BinaryIO:
    """`open_write` for a file written once in large sequential writes (a shard): locally
    past the page cache where the filesystem allows it (`direct_io`)."""
    if not is_remote(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return direct_io.open_write(path)
    return open_write(path)


def read_chunks(path: str) -> Iterator[bytes | memoryview]:
    """A whole file in order, in large chunks, each valid only until the next is asked
    for. Locally past the page cache where allowed (`direct_io`): what `open_write_bulk`
    wrote is on the disk, not in memory, and is read from there at disk speed."""
    if not is_remote(path):
        yield from direct_io.read_chunks(path)
        return
    with open_read(path) as f:
        while chunk := f.read(_READ_CHUNK):
            yield chunk


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """A whole small file. Locally through a temporary name and a rename, so that no reader
    sees it half written: a step whose worker was lost runs again (Dask) and rewrites its
    work files while other workers read them. A gs:// object appears whole anyway."""
    if is_remote(path):
        with open_write(path) as f:
            f.write(data)
        return
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    partial = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(partial, "xb") as f:
            f.write(data)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(partial)
        raise


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open_read(path) as f:
        for chunk in iter(lambda: f.read(_READ_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def makedirs(path: str) -> None:
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def list_files(directory: str) -> list[str]:
    """Every file below `directory`, as full paths, sorted."""
    if not is_remote(directory):
        found = []
        for root, _, files in os.walk(directory):
            found.extend(os.path.join(root, f) for f in files)
        return sorted(found)
    _remote_ready(directory)
    pattern = directory.rstrip("/") + "/**"
    return sorted(m.path for m in _filesystems().match([pattern])[0].metadata_list)


class Entry(NamedTuple):
    """A file as a listing gives it: its name in the folder, size, and version (local:
    modification time in ns; GCS: the object's generation)."""

    name: str
    size: int
    version: int


def list_dir(directory: str) -> tuple[list[Entry], list[str]]:
    """One level of a folder: (its files, sorted by name; its subfolders' names, sorted).
    Nothing for a folder that does not exist. On GCS one listing with a delimiter, so a
    prefix of a thousand class folders costs a page, not a walk of every image."""
    if not is_remote(directory):
        files, dirs = [], []
        try:
            with os.scandir(directory) as it:
                for e in it:
                    if e.is_dir():
                        dirs.append(e.name)
                    elif e.is_file():
                        st = e.stat()
                        files.append(Entry(e.name, st.st_size, st.st_mtime_ns))
        except (FileNotFoundError, NotADirectoryError):
            return [], []
        return sorted(files), sorted(dirs)
    blob = gcs_blob(directory.rstrip("/") + "/")
    pages = blob.bucket.client.list_blobs(blob.bucket, prefix=blob.name, delimiter="/")
    files = [
        Entry(b.name[len(blob.name):], b.size, b.generation)
        for page in pages.pages for b in page
        if b.name != blob.name  # a "folder" placeholder object
    ]
    dirs = sorted(p[len(blob.name):].rstrip("/") for p in pages.prefixes)
    return sorted(files), dirs


def is_dir(path: str) -> bool:
    """A local folder, or a GCS prefix with at least one object below it."""
    if not is_remote(path):
        return os.path.isdir(path)
    blob = gcs_blob(path.rstrip("/") + "/")
    return any(True for _ in blob.bucket.client.list_blobs(blob.bucket, prefix=blob.name,
                                                           max_results=1))


def read_files(paths: list[str], parallel: int | None = None) -> Iterator[bytes]:
    """The whole content of each file, in order, read `parallel` at a time (many small
    files: a local disk or a bucket answers many requests at once far faster than one
    after another)."""
    from concurrent.futures import ThreadPoolExecutor

    def read(path: str) -> bytes:
        if is_remote(path) and path.startswith("gs://"):
            return gcs_blob(path).download_as_bytes(checksum=None)
        with open_read(path) as f:
            return f.read()

    workers = parallel or (_PARALLEL_FILES_REMOTE if paths and is_remote(paths[0])
                           else _PARALLEL_FILES_LOCAL)
    with ThreadPoolExecutor(workers) as pool:
        yield from pool.map(read, paths)


_PARALLEL_FILES_LOCAL = 16
_PARALLEL_FILES_REMOTE = 32


def delete_files(paths: list[str]) -> None:
    """Deletes each file (a local folder with what it holds); a missing one is an OSError."""
    if not paths:
        return
    if not is_remote(paths[0]):
        for path in paths:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        return
    _remote_ready(*paths)
    _filesystems().delete(paths)


def delete_tree(directory: str) -> None:
    if not is_remote(directory):
        _delete_local_tree(directory)
        return
    files = list_files(directory)
    if files:
        _filesystems().delete(files)


def _delete_local_tree(directory: str) -> None:
    """`shutil.rmtree`, but the files unlinked by several threads first: freeing a replaced
    version's GBs of shards is kernel work that one thread does at ~7 GB/s here and eight at
    ~10 GB/s (0.66 against 0.46 s for 4.5 GB on 2 cores), and it is on the DAG's last step.
    Symbolic links are removed, never followed; whatever cannot be removed is left, as
    `rmtree(ignore_errors=True)` leaves it."""
    from concurrent.futures import ThreadPoolExecutor

    def unlink(path: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(path)

    if os.path.islink(directory):
        return  # as rmtree: a link is not a tree, and what it points to is not ours
    files = []
    for parent, dirnames, filenames in os.walk(directory):
        files += [os.path.join(parent, name) for name in filenames]
        files += [os.path.join(parent, name) for name in dirnames
                  if os.path.islink(os.path.join(parent, name))]
    if len(files) > 1:
        with ThreadPoolExecutor(min(_PARALLEL_UNLINKS, len(files))) as pool:
            for _ in pool.map(unlink, files):
                pass
    shutil.rmtree(directory, ignore_errors=True)


_PARALLEL_UNLINKS = 8


def rename_tree(source: str, destination: str) -> None:
    """Moves a directory. Local: one atomic rename. GCS: copy then delete, file by file."""
    if not is_remote(source):
        os.rename(source, destination)
        return
    _remote_ready(source, destination)
    sources = list_files(source)
    prefix = source.rstrip("/") + "/"
    targets = [join(destination, s[len(prefix):]) for s in sources]
    _filesystems().rename(sources, targets)


def rename_files(sources: list[str], destinations: list[str]) -> None:
    """Moves files one to one (GCS: copy then delete each)."""
    if not sources:
        return
    if not is_remote(sources[0]):
        for source, destination in zip(sources, destinations, strict=True):
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            os.replace(source, destination)
        return
    _remote_ready(*sources, *destinations)
    _filesystems().rename(sources, destinations)


def rename_file(source: str, destination: str) -> None:
    """Moves one file over `destination`. Local: atomic `os.replace`. GCS: copy then delete.

    `rename_tree` lists `source/**`, so it cannot move a single remote file.
    """
    if not is_remote(source):
        os.replace(source, destination)
        return
    _remote_ready(source, destination)
    _filesystems().rename([source], [destination])


def upload_file(local_path: str, destination: str) -> None:
    if not is_remote(destination):
        shutil.copyfile(local_path, destination)
        return
    with open(local_path, "rb") as src, open_write(destination) as dst:
        shutil.copyfileobj(src, dst, _READ_CHUNK)


@contextlib.contextmanager
def scratch_dir() -> Iterator[str]:
    """A scratch directory on local disk, removed afterwards."""
    path = tempfile.mkdtemp(prefix="imagenet_beam-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class LimitedReader(io.RawIOBase):
    """At most `limit` bytes of `raw` (a stream being decompressed): reading more raises
    `too_much()`, the caller's error saying what the file should be (a gzip bomb stops
    here)."""

    def __init__(self, raw: BinaryIO, limit: int, too_much: Callable[[], Exception]):
        super().__init__()
        self._raw, self._left, self._too_much = raw, limit, too_much

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(min(len(buffer), self._left + 1))
        if len(data) > self._left:
            raise self._too_much()
        self._left -= len(data)
        buffer[: len(data)] = data
        return len(data)


class RangeReader(io.RawIOBase):
    """A read-only, seekable view of bytes [start, start + length) of another file.

    Lets `tarfile` walk an inner train tar in place inside the outer tar.
    """

    def __init__(self, raw: BinaryIO, start: int, length: int):
        super().__init__()
        self._raw = raw
        self._start = start
        self._length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self._length + offset
        self._pos = max(0, self._pos)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        remaining = self._length - self._pos
        if remaining <= 0:
            return b""
        if size is None or size < 0 or size > remaining:
            size = remaining
        self._raw.seek(self._start + self._pos)
        data = self._raw.read(size)
        self._pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
