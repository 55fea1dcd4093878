"""Bulk local files written and read past the page cache (`O_DIRECT`), where the system
allows it; plain buffered files where it does not.

A conversion writes its output once (147 GB for full ImageNet) and reads it back once to
check it. Through the page cache, every byte first gets a page of its own: kernel time to
find, fill and later write back each page, which on this project's machines cost more than
encoding the images (4.4 GB written: 10.4 s of system CPU buffered, 0.3 s and 1.9 s of
disk time direct; a first read of it: 7.8 s buffered, 2.0 s direct), and the user's cached
files (the input archives among them) are pushed out to make room. Direct I/O moves the
bytes between our buffers and the disk, so the data must come in aligned blocks: writes are
gathered into page-aligned buffers and the last block is padded, then the file is cut to
its length.

Everything here falls back to ordinary files (same bytes, same names) on a system or
filesystem that refuses `O_DIRECT`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import io
import mmap
import os
import threading
from collections.abc import Iterator

_DIRECT = getattr(os, "O_DIRECT", 0)
ALIGN = 4096  # the largest logical block size in use: a multiple of every disk's
CHUNK = 8 << 20  # bytes a write or a read moves at once
_free_buffers: list[mmap.mmap] = []  # kept for the next file: each is 8 MiB of fresh pages
_free_lock = threading.Lock()


def _take_buffer() -> mmap.mmap:
    with _free_lock:
        if _free_buffers:
            return _free_buffers.pop()
    return mmap.mmap(-1, CHUNK)  # anonymous memory is page-aligned, as direct I/O needs


def _give_back(buffer: mmap.mmap) -> None:
    with _free_lock:
        if len(_free_buffers) < 4:
            _free_buffers.append(buffer)
            return
    buffer.close()


def _refused(error: OSError) -> bool:
    """What a filesystem answers to direct I/O it does not do."""
    return error.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)


class DirectWriter(io.RawIOBase):
    """A new local file written with `O_DIRECT`: `write` gathers bytes into an aligned
    buffer, and a full buffer is written by a helper thread while the next one fills (the
    disk's time overlaps the caller's). Only a closed writer's file is complete. An error
    in a write is raised by a later `write` or by `close`. `open_write` puts an
    `io.BufferedWriter` in front, so that many small writes cost what they cost on a
    plain file."""

    def __init__(self, fd: int, path: str):
        super().__init__()
        self.name = path
        self._fd = fd
        self._direct = True
        self._buffers = [_take_buffer(), _take_buffer()]
        self._current = 0
        self._fill = 0  # bytes in the current buffer
        self._size = 0  # bytes handed to the disk so far
        self._pending: concurrent.futures.Future | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "direct-write")

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        total, at = len(view), 0
        while at < total:
            take = min(CHUNK - self._fill, total - at)
            self._buffers[self._current][self._fill:self._fill + take] = view[at:at + take]
            self._fill += take
            at += take
            if self._fill == CHUNK:
                self._hand_off()
        return total

    def _hand_off(self) -> None:
        self._wait()
        self._pending = self._pool.submit(
            self._write_at, self._buffers[self._current], self._fill, self._size
        )
        self._size += self._fill
        self._current ^= 1
        self._fill = 0

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _write_at(self, buffer: mmap.mmap, length: int, offset: int) -> None:
        with memoryview(buffer) as whole:
            view = whole[:length]
            while view:
                try:
                    written = os.pwrite(self._fd, view, offset)
                except OSError as e:
                    if not (self._direct and _refused(e)):
                        raise
                    self._buffered()  # opened direct, but this filesystem will not write so
                    continue
                view = view[written:]
                offset += written
            view.release()

    def _buffered(self) -> None:
        import fcntl

        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~_DIRECT)
        self._direct = False

    def close(self) -> None:
        if self._fd < 0:
            super().close()
            return
        try:
            self._wait()
            if self._fill:
                length = self._fill
                padded = -(-length // ALIGN) * ALIGN
                buffer = self._buffers[self._current]
                buffer[length:padded] = bytes(padded - length)
                self._write_at(buffer, padded, self._size)
                self._size += length
                if padded != length:
                    os.ftruncate(self._fd, self._size)
        finally:
            self._release()

    def _release(self) -> None:
        with contextlib.suppress(Exception):
            self._wait()
        self._pool.shutdown()
        os.close(self._fd)
        self._fd = -1
        for buffer in self._buffers:
            _give_back(buffer)
        self._buffers = []
        super().close()


def open_write(path: str, direct: bool = True):
    """A new file at a local path, for one pass of sequential writes: a buffered
    `DirectWriter`, or a plain file where direct I/O is refused (or direct=False)."""
    if direct and _DIRECT:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | _DIRECT,
                         0o666)
        except OSError as e:
            if not _refused(e):
                raise
        else:
            return io.BufferedWriter(DirectWriter(fd, path), buffer_size=CHUNK)
    return open(path, "wb")


def read_chunks(path: str, direct: bool = True) -> Iterator[memoryview | bytes]:
    """A local file's bytes in order, up to `CHUNK` at a time, read with `O_DIRECT` where
    allowed. Each chunk is valid only until the next is asked for (its buffer is reused):
    hash it or copy what is needed of it before going on."""
    fd = -1
    if direct and _DIRECT:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | _DIRECT)
        except OSError as e:
            if not _refused(e):
                raise
    offset = 0
    if fd >= 0:
        buffer = _take_buffer()
        try:
            with memoryview(buffer) as whole:
                while True:
                    try:
                        got = os.preadv(fd, [buffer], offset)
                    except OSError as e:
                        if not _refused(e):
                            raise
                        break  # this filesystem will not read so: the rest buffered, below
                    if not got:
                        return
                    chunk = whole[:got]
                    yield chunk
                    chunk.release()
                    offset += got
                    if got % ALIGN:
                        return  # a block cut short: the end of the file
        finally:
            os.close(fd)
            _give_back(buffer)
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        while chunk := f.read(CHUNK):
            yield chunk
