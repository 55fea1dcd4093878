"""File access on local paths (without Beam), and the in-place range reader."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile

import pytest

from imagenet_beam import storage
from imagenet_beam.storage import RangeReader
from tests.conftest import ROOT

DATA = bytes(range(256)) * 4  # 1 KiB of distinct-looking bytes
START, LENGTH = 100, 300
VIEW = DATA[START : START + LENGTH]


@pytest.fixture
def reader() -> RangeReader:
    return RangeReader(io.BytesIO(DATA), START, LENGTH)


# --- RangeReader --------------------------------------------------------------------------


def test_range_reader_reads_only_its_range(reader: RangeReader) -> None:
    assert reader.read() == VIEW
    assert reader.tell() == LENGTH
    assert reader.read() == b""
    assert reader.read(10) == b""


@pytest.mark.parametrize("size", [-1, None])
def test_range_reader_read_all(reader: RangeReader, size: int | None) -> None:
    reader.seek(10)
    assert reader.read(size) == VIEW[10:]


def test_range_reader_sequential_reads_and_tell(reader: RangeReader) -> None:
    assert reader.tell() == 0
    assert reader.read(7) == VIEW[:7]
    assert reader.tell() == 7
    assert reader.read(0) == b""
    assert reader.tell() == 7
    assert reader.read(100) == VIEW[7:107]
    assert reader.read(LENGTH) == VIEW[107:]  # short read at the end of the range
    assert reader.tell() == LENGTH


def test_range_reader_seek_set(reader: RangeReader) -> None:
    assert reader.seek(50) == 50
    assert reader.tell() == 50
    assert reader.read(5) == VIEW[50:55]
    assert reader.seek(0, io.SEEK_SET) == 0
    assert reader.read(3) == VIEW[:3]


def test_range_reader_seek_cur(reader: RangeReader) -> None:
    reader.read(20)
    assert reader.seek(10, io.SEEK_CUR) == 30
    assert reader.read(4) == VIEW[30:34]
    assert reader.seek(-14, io.SEEK_CUR) == 20
    assert reader.read(2) == VIEW[20:22]
    assert reader.seek(0, io.SEEK_CUR) == 22


def test_range_reader_seek_end(reader: RangeReader) -> None:
    assert reader.seek(0, io.SEEK_END) == LENGTH
    assert reader.read() == b""
    assert reader.seek(-5, io.SEEK_END) == LENGTH - 5
    assert reader.read() == VIEW[-5:]
    assert reader.seek(-LENGTH, io.SEEK_END) == 0
    assert reader.read(1) == VIEW[:1]


def test_range_reader_past_the_end_reads_nothing(reader: RangeReader) -> None:
    assert reader.seek(LENGTH + 50) == LENGTH + 50
    assert reader.tell() == LENGTH + 50
    assert reader.read() == b""
    assert reader.read(10) == b""
    assert reader.seek(10, io.SEEK_END) == LENGTH + 10
    assert reader.read(1) == b""
    # Never the bytes that follow the range in the underlying file.
    reader.seek(LENGTH - 2)
    assert reader.read(100) == VIEW[-2:]


def test_range_reader_negative_positions_clamp_to_start(reader: RangeReader) -> None:
    assert reader.seek(-10) == 0
    assert reader.seek(-LENGTH - 10, io.SEEK_END) == 0
    assert reader.read(4) == VIEW[:4]


def test_range_reader_readinto(reader: RangeReader) -> None:
    buffer = bytearray(16)
    assert reader.readinto(buffer) == 16
    assert bytes(buffer) == VIEW[:16]
    assert reader.tell() == 16
    view = memoryview(bytearray(10))
    reader.seek(-4, io.SEEK_END)
    assert reader.readinto(view) == 4
    assert bytes(view[:4]) == VIEW[-4:]
    assert reader.readinto(bytearray(8)) == 0


def test_range_reader_is_independent_of_the_raw_position() -> None:
    raw = io.BytesIO(DATA)
    reader = RangeReader(raw, START, LENGTH)
    assert reader.read(5) == VIEW[:5]
    raw.seek(0)
    raw.read(900)  # someone else moved the shared file object
    assert reader.read(5) == VIEW[5:10]


def test_range_reader_past_the_end_of_the_raw_file() -> None:
    reader = RangeReader(io.BytesIO(b"abcdef"), 4, 100)
    assert reader.read() == b"ef"
    assert reader.read() == b""


def test_range_reader_is_a_readable_seekable_stream(reader: RangeReader) -> None:
    assert reader.readable() and reader.seekable()
    assert not reader.writable()
    assert reader.readall() == VIEW
    buffered = io.BufferedReader(RangeReader(io.BytesIO(DATA), START, LENGTH), buffer_size=64)
    assert buffered.read(10) == VIEW[:10]
    buffered.seek(-3, io.SEEK_END)
    assert buffered.read() == VIEW[-3:]


def test_tarfile_walks_a_tar_inside_a_range() -> None:
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as tar:
        for name, payload in (("a.txt", b"alpha"), ("b.txt", b"beta" * 300)):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    prefix, suffix = b"P" * 1234, b"S" * 999
    raw = io.BytesIO(prefix + inner.getvalue() + suffix)
    view = RangeReader(raw, len(prefix), len(inner.getvalue()))
    with tarfile.open(fileobj=view, mode="r:") as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert got == {"a.txt": b"alpha", "b.txt": b"beta" * 300}


def test_range_reader_over_a_file_opened_by_storage(tmp_path) -> None:
    path = str(tmp_path / "blob")
    storage.write_bytes(path, DATA)
    with storage.open_read(path) as f:
        view = RangeReader(f, START, LENGTH)
        view.seek(-20, io.SEEK_END)
        assert view.read() == VIEW[-20:]
        view.seek(0)
        assert view.read(20) == VIEW[:20]


# --- files --------------------------------------------------------------------------------


def test_write_and_read_bytes(tmp_path) -> None:
    path = str(tmp_path / "out.bin")
    storage.write_bytes(path, DATA)
    assert storage.read_bytes(path) == DATA
    with open(path, "rb") as f:
        assert f.read() == DATA
    storage.write_bytes(path, b"shorter")  # replaces, does not append or leave a tail
    assert storage.read_bytes(path) == b"shorter"
    storage.write_bytes(path, b"")
    assert storage.read_bytes(path) == b""


def test_write_bytes_creates_parent_directories(tmp_path) -> None:
    path = str(tmp_path / "a" / "b" / "c.json")
    storage.write_bytes(path, b"{}")
    assert storage.read_bytes(path) == b"{}"


def test_exists_and_size(tmp_path) -> None:
    path = str(tmp_path / "f")
    assert not storage.exists(path)
    storage.write_bytes(path, DATA)
    assert storage.exists(path)
    assert storage.exists(str(tmp_path))
    assert storage.size(path) == len(DATA)
    assert abs(storage.last_updated(path) - os.path.getmtime(path)) < 2


def test_open_read_is_seekable(tmp_path) -> None:
    path = str(tmp_path / "f")
    storage.write_bytes(path, DATA)
    with storage.open_read(path) as f:
        f.seek(500)
        assert f.read(4) == DATA[500:504]
        f.seek(10)
        assert f.read(2) == DATA[10:12]


@pytest.mark.parametrize("size", [0, 1, 8 << 20, (8 << 20) + 12345])
def test_sha256_of(tmp_path, size: int) -> None:
    data = (bytes(range(251)) * (size // 251 + 1))[:size]
    path = str(tmp_path / "blob")
    with open(path, "wb") as f:
        f.write(data)
    assert storage.sha256_of(path) == hashlib.sha256(data).hexdigest()


def make_tree(root) -> list[str]:
    files = ["b.txt", "a/z.bin", "a/b/c.json", "a/.hidden", "c/d/e/f.tfrecord-00000-of-00001"]
    for i, name in enumerate(files):
        path = os.path.join(str(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(str(i).encode() * (i + 1))
    os.makedirs(os.path.join(str(root), "empty_dir"))
    return sorted(os.path.join(str(root), name) for name in files)


def test_list_files_lists_every_file_below_sorted(tmp_path) -> None:
    expected = make_tree(tmp_path / "tree")
    assert storage.list_files(str(tmp_path / "tree")) == expected
    assert storage.list_files(str(tmp_path / "tree" / "empty_dir")) == []
    assert storage.list_files(str(tmp_path / "missing")) == []


def test_rename_tree_moves_everything(tmp_path) -> None:
    source, destination = tmp_path / "src", tmp_path / "dst"
    make_tree(source)
    before = {
        os.path.relpath(p, source): storage.read_bytes(p) for p in storage.list_files(str(source))
    }
    storage.rename_tree(str(source), str(destination))
    assert not source.exists()
    after = {
        os.path.relpath(p, destination): storage.read_bytes(p)
        for p in storage.list_files(str(destination))
    }
    assert after == before
    assert (destination / "empty_dir").is_dir()


def test_delete_tree(tmp_path) -> None:
    root = tmp_path / "tree"
    make_tree(root)
    keep = tmp_path / "keep.txt"
    keep.write_bytes(b"keep")
    storage.delete_tree(str(root))
    assert not root.exists()
    assert keep.read_bytes() == b"keep"
    storage.delete_tree(str(root))  # already gone: no error
    storage.delete_tree(str(tmp_path / "never_existed"))


def test_delete_tree_never_follows_links(tmp_path) -> None:
    """The files are unlinked by several threads: links in the tree, or the tree itself
    given as a link, must not lead them to what the link points to."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "users.txt").write_bytes(b"not ours")
    root = tmp_path / "tree"
    for i in range(20):
        (root / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 3}" / f"shard-{i}").write_bytes(DATA)
    (root / "d0" / "to_outside").symlink_to(outside, target_is_directory=True)
    (root / "d1" / "to_file").symlink_to(outside / "users.txt")
    storage.delete_tree(str(root))
    assert not root.exists()
    assert (outside / "users.txt").read_bytes() == b"not ours"

    link = tmp_path / "link_to_outside"
    link.symlink_to(outside, target_is_directory=True)
    storage.delete_tree(str(link))
    assert (outside / "users.txt").read_bytes() == b"not ours"


def test_upload_file_copies_locally(tmp_path) -> None:
    source, destination = str(tmp_path / "s"), str(tmp_path / "d")
    storage.write_bytes(source, DATA)
    storage.upload_file(source, destination)
    assert storage.read_bytes(destination) == DATA


def test_scratch_dir_is_removed_afterwards() -> None:
    with storage.scratch_dir() as scratch:
        assert os.path.isdir(scratch)
        storage.write_bytes(os.path.join(scratch, "x", "y"), b"1")
    assert not os.path.exists(scratch)
    with pytest.raises(RuntimeError), storage.scratch_dir() as scratch:
        raise RuntimeError("boom")
    assert not os.path.exists(scratch)


def test_makedirs_is_idempotent(tmp_path) -> None:
    path = str(tmp_path / "x" / "y")
    storage.makedirs(path)
    storage.makedirs(path)
    assert os.path.isdir(path)


def test_path_helpers() -> None:
    assert storage.is_remote("gs://bucket/dir")
    assert not storage.is_remote("/tmp/dir")
    assert not storage.is_remote("relative/dir")
    assert storage.join("gs://bucket/data", "imagenet2012", "5.1.0") == (
        "gs://bucket/data/imagenet2012/5.1.0"
    )
    assert storage.join("/data", "imagenet2012", "5.1.0") == os.path.join(
        "/data", "imagenet2012", "5.1.0"
    )
    assert storage.basename("gs://bucket/dir/file.tar") == "file.tar"
    assert storage.basename("gs://bucket/dir/") == "dir"
    assert storage.basename("/local/ILSVRC2012_img_val.tar") == "ILSVRC2012_img_val.tar"


def test_local_files_and_the_dags_steps_do_not_import_beam(tmp_path) -> None:
    """A DAG task that touches only local files (lease, plan, publish) must not pay Beam's
    import (1–3 s a task process): storage reaches Beam only for remote paths."""
    code = (
        "import os, sys\n"
        "from imagenet_beam import run, storage\n"
        "import imagenet_airflow.tasks\n"
        "p = os.path.join(sys.argv[1], 'sub', 'f')\n"
        "with storage.open_write(p) as f: f.write(b'x')\n"
        "assert storage.exists(p) and storage.size(p) == 1 and storage.read_bytes(p) == b'x'\n"
        "storage.delete_files([os.path.dirname(p)])\n"
        "assert not storage.exists(p)\n"
        "print('apache_beam' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "plugins")}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_publish_and_its_read_back_import_neither_beam_nor_tensorflow(tmp_path) -> None:
    """The DAG's publish and validate_and_record on a staged local conversion: neither
    pays Beam's import (publish reads the job's recorded errors without it) nor
    TensorFlow's (the read-back decodes without it)."""
    from imagenet_beam import synthetic
    from tests.conftest import convert, version_dir

    made = synthetic.generate_manual_dir(
        str(tmp_path / "manual"), splits=("validation",), num_validation=3, test_archives=()
    )
    data_dir = tmp_path / "data"
    convert(made.manual_dir, data_dir, "--splits=validation", "--stage_only",
            "--direct_running_mode=in_memory")
    code = (
        "import sys\n"
        "from imagenet_beam import run, verify\n"
        "run.publish(sys.argv[1])\n"
        "verify.verify_output(sys.argv[2], tensorflow=False)\n"
        "print('apache_beam' in sys.modules, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(data_dir), version_dir(data_dir)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"
