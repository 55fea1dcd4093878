"""Shards written and read back past the page cache: the same bytes as a plain file, and
no page of them left in memory where the filesystem does direct I/O."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import mmap
import os
import random
import subprocess

import pytest

from imagenet_beam import direct_io, formats

CHUNK = direct_io.CHUNK
SIZES = [0, 1, 4095, 4096, 4097, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK - 5, 25_000_001]


def resident_pages(path: str) -> int:
    """How many of the file's pages are in the page cache (mincore(2) on a private
    mapping of it, none of whose pages is touched)."""
    size = os.path.getsize(path)
    if not size:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    vector = (ctypes.c_ubyte * -(-size // mmap.PAGESIZE))()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as mapped:
        start = ctypes.c_char.from_buffer(mapped)
        try:
            if libc.mincore(ctypes.c_void_p(ctypes.addressof(start)), ctypes.c_size_t(size),
                            vector) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            del start
    return sum(v & 1 for v in vector)


def direct_io_works(directory) -> bool:
    try:
        fd = os.open(os.path.join(directory, "probe"), os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise
    os.close(fd)
    os.remove(os.path.join(directory, "probe"))
    return True


def write_in_pieces(path: str, data: bytes, seed: int, direct: bool = True) -> None:
    rng = random.Random(seed)
    with direct_io.open_write(path, direct=direct) as f:
        at = 0
        while at < len(data):
            step = rng.choice([1, 12, 100, rng.randint(1, 3_000_000), CHUNK + 7])
            f.write(data[at:at + step])
            at += step


@pytest.mark.parametrize("size", SIZES)
def test_any_length_in_any_pieces_is_the_same_file(tmp_path, size):
    data = random.Random(size).randbytes(size)
    path = str(tmp_path / "out")
    write_in_pieces(path, data, seed=size)
    assert os.path.getsize(path) == size
    with open(path, "rb") as f:
        assert f.read() == data
    digest = hashlib.sha256()
    total = 0
    for chunk in direct_io.read_chunks(path):
        digest.update(chunk)
        total += len(chunk)
    assert total == size and digest.digest() == hashlib.sha256(data).digest()


def test_a_written_shard_is_on_disk_not_in_memory(tmp_path):
    """What the conversion writes does not take the page cache from the user's files (the
    input archives): a TFRecord shard written by the format leaves none of its pages there,
    and reading it back to check it brings none in."""
    if not direct_io_works(tmp_path):
        pytest.skip(f"{tmp_path}'s filesystem does not do direct I/O")
    tfrecord = formats.get("tfrecord")
    path = str(tmp_path / "imagenet2012-train.tfrecord-00000-of-00001")
    image = random.Random(0).randbytes(100_000)
    records = [(b"example %d head" % i, image[: 50_000 + i], b"tail") for i in range(200)]
    written = tfrecord.write(path, iter(records))
    assert written.num_bytes == os.path.getsize(path) > CHUNK
    assert resident_pages(path) == 0
    assert tfrecord.count_and_hash(path) == (200, written.sha256)
    assert resident_pages(path) == 0

    plain = str(tmp_path / "plain")
    with open(plain, "wb") as f:  # the same bytes the ordinary way: all of it in memory
        f.write(open(path, "rb").read())  # noqa: SIM115
    assert resident_pages(plain) > 0


def test_reads_what_a_buffered_writer_has_not_written_back_yet(tmp_path):
    """A file whose latest bytes are still only in the page cache reads back as it is."""
    path = str(tmp_path / "dirty")
    data = random.Random(1).randbytes(2 * CHUNK + 333)
    with open(path, "wb") as f:
        f.write(data)
    assert b"".join(bytes(c) for c in direct_io.read_chunks(path)) == data


def test_where_direct_io_is_refused_the_file_is_written_plainly(tmp_path):
    data = random.Random(2).randbytes(CHUNK + 5)
    path = str(tmp_path / "plain")
    write_in_pieces(path, data, seed=2, direct=False)
    assert open(path, "rb").read() == data  # noqa: SIM115
    assert b"".join(bytes(c) for c in direct_io.read_chunks(path, direct=False)) == data


def test_a_full_disk_is_raised_not_lost(tmp_path):
    """The disk writes happen in a helper thread; their error reaches the writer's caller."""
    point = tmp_path / "small"
    point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()})")
    try:
        with pytest.raises(OSError) as raised:
            write_in_pieces(str(point / "out"), bytes(3 * CHUNK), seed=3)
        assert raised.value.errno == errno.ENOSPC
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)
