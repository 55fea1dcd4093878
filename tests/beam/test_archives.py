"""Indexing the ILSVRC tars by header and reading members back by offset."""

from __future__ import annotations

import io
import os
import random
import tarfile

import pytest
from tensorflow_datasets.core.download import extractor

from imagenet_beam import dataset, sources, synthetic
from imagenet_beam.sources import tarballs
from imagenet_beam.sources.tar import ArchiveError, TarEntry, tfds_member_name, walk_tar
from imagenet_beam.synthetic import GeneratedInput


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> GeneratedInput:
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("archives_manual")),
        num_classes=3,
        train_per_class=4,
        num_validation=7,
        num_test=5,
        test_archives=("2012",),
        awkward=["grayscale", "cmyk_other_name", "png_other_name"],
        broken=["empty"],  # a zero-byte member
    )


def path_of(generated: GeneratedInput, name: str) -> str:
    return os.path.join(generated.manual_dir, name)


def read_at(path: str, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def wnid_of(file_name: str) -> str:
    return file_name.split("_", 1)[0]


def write_tar(path: str, entries: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int) -> None:
    with tarfile.open(path, "w", format=fmt) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)


def file_info(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def special_info(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


# --- train --------------------------------------------------------------------------------


def test_list_inner_tars_gives_one_entry_per_class(generated: GeneratedInput) -> None:
    train = path_of(generated, dataset.TRAIN_ARCHIVE)
    inner = tarballs.list_inner_tars(train)
    wnids = sorted({wnid_of(m.file_name) for m in generated.split(dataset.TRAIN)})
    assert [e.name for e in inner] == [f"{w}.tar" for w in wnids]
    assert len(inner) == 3
    with tarfile.open(train) as tar:
        expected = [(m.name, m.offset_data, m.size) for m in tar.getmembers()]
    assert [tuple(e) for e in inner] == expected
    for entry in inner:  # each (offset, size) is a whole tar of that class's images
        inner_bytes = read_at(train, entry.offset, entry.size)
        with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as tar:
            names = tar.getnames()
        wnid = entry.name[: -len(".tar")]
        assert names and all(wnid_of(n) == wnid for n in names)


def test_index_inner_tar_points_into_the_outer_tar(generated: GeneratedInput) -> None:
    train = path_of(generated, dataset.TRAIN_ARCHIVE)
    seen = {}
    for entry in tarballs.list_inner_tars(train):
        refs = tarballs.index_inner_tar(train, entry)
        wnid = entry.name[: -len(".tar")]
        in_tar_order = [
            m.file_name for m in generated.split(dataset.TRAIN) if wnid_of(m.file_name) == wnid
        ]
        assert [r.file_name for r in refs] == in_tar_order
        for ref in refs:
            assert ref.split == dataset.TRAIN
            assert ref.archive == train
            assert entry.offset <= ref.offset and ref.offset + ref.size <= entry.offset + entry.size
            assert ref.label == dataset.class_index()[wnid] == dataset.train_label(entry.name)
            seen[ref.file_name] = (ref.label, read_at(train, ref.offset, ref.size))
    expected = {m.file_name: (m.label, m.data) for m in generated.split(dataset.TRAIN)}
    assert seen == expected
    assert b"" in {data for _, data in seen.values()}  # the zero-byte member is indexed too


def test_train_member_that_is_not_a_class_tar_raises(tmp_path) -> None:
    inner = synthetic.tar_bytes([("n01440764_1.JPEG", b"\xff\xd8 jpeg")])
    outer = str(tmp_path / dataset.TRAIN_ARCHIVE)
    with open(outer, "wb") as f:
        f.write(synthetic.tar_bytes([("n99999999.tar", inner), ("README.tar", inner)]))
    entries = tarballs.list_inner_tars(outer)
    assert [e.name for e in entries] == ["n99999999.tar", "README.tar"]
    for entry in entries:
        with pytest.raises(ValueError) as err:
            tarballs.index_inner_tar(outer, entry)
        assert entry.name in str(err.value)
        assert "1000 ILSVRC 2012 classes" in str(err.value)


def test_inner_member_that_is_not_a_tar_raises(tmp_path) -> None:
    outer = str(tmp_path / dataset.TRAIN_ARCHIVE)
    with open(outer, "wb") as f:
        f.write(synthetic.tar_bytes([("n01440764.tar", b"not a tar at all" * 100)]))
    (entry,) = tarballs.list_inner_tars(outer)
    with pytest.raises(ArchiveError, match="n01440764.tar") as err:
        tarballs.index_inner_tar(outer, entry)
    assert "incomplete" in str(err.value)


def test_index_inner_tar_stays_inside_its_range(tmp_path) -> None:
    """The inner walk must not run on into the next class's tar."""
    first = synthetic.tar_bytes([("n01440764_1.JPEG", b"one")])
    second = synthetic.tar_bytes([("n01443537_1.JPEG", b"two"), ("n01443537_2.JPEG", b"2")])
    outer = str(tmp_path / dataset.TRAIN_ARCHIVE)
    with open(outer, "wb") as f:
        f.write(synthetic.tar_bytes([("n01440764.tar", first), ("n01443537.tar", second)]))
    a, b = tarballs.list_inner_tars(outer)
    assert [r.file_name for r in tarballs.index_inner_tar(outer, a)] == ["n01440764_1.JPEG"]
    refs = tarballs.index_inner_tar(outer, b)
    assert [read_at(outer, r.offset, r.size) for r in refs] == [b"two", b"2"]


# --- validation and test ------------------------------------------------------------------


def test_index_validation_labels_by_file_number(generated: GeneratedInput) -> None:
    path = path_of(generated, dataset.VALIDATION_ARCHIVE)
    refs = tarballs.index_flat_archive(dataset.VALIDATION, path)
    members = generated.split(dataset.VALIDATION)
    assert [r.file_name for r in refs] == [m.file_name for m in members]  # tar order, unsorted
    for ref, m in zip(refs, members, strict=True):
        assert ref.split == dataset.VALIDATION and ref.archive == path
        assert ref.label == dataset.validation_label(ref.file_name) == m.label
        assert read_at(path, ref.offset, ref.size) == m.data


def test_index_test_labels_are_minus_one(generated: GeneratedInput) -> None:
    path = path_of(generated, dataset.TEST_ARCHIVE_2012)
    refs = tarballs.index_flat_archive(dataset.TEST, path)
    members = generated.split(dataset.TEST)
    assert [r.file_name for r in refs] == [m.file_name for m in members]
    assert {r.label for r in refs} == {dataset.TEST_LABEL} == {-1}
    for ref, m in zip(refs, members, strict=True):
        assert read_at(path, ref.offset, ref.size) == m.data


@pytest.mark.parametrize(
    "bad_name",
    [
        "ILSVRC2012_val_1.JPEG",
        "ILSVRC2012_val_00000001.jpg",
        "n01440764_1.JPEG",
        "ILSVRC2012_val_00050001.JPEG",  # one past the last validation image
        "ILSVRC2012_val_00000000.JPEG",
    ],
)
def test_validation_member_with_a_nonstandard_name_raises(tmp_path, bad_name: str) -> None:
    path = str(tmp_path / dataset.VALIDATION_ARCHIVE)
    with open(path, "wb") as f:
        f.write(synthetic.tar_bytes([("ILSVRC2012_val_00000002.JPEG", b"ok"), (bad_name, b"bad")]))
    with pytest.raises(ArchiveError) as err:
        tarballs.index_flat_archive(dataset.VALIDATION, path)
    assert bad_name in str(err.value)
    assert path in str(err.value)
    # The same names are fine in the test tar, which has no labels to look up.
    refs = tarballs.index_flat_archive(dataset.TEST, path)
    assert [r.file_name for r in refs] == ["ILSVRC2012_val_00000002.JPEG", bad_name]


# --- reading members -----------------------------------------------------------------------


def test_read_members_returns_exact_bytes_in_offset_order(generated: GeneratedInput) -> None:
    path = path_of(generated, dataset.VALIDATION_ARCHIVE)
    refs = tarballs.index_flat_archive(dataset.VALIDATION, path)
    shuffled = list(refs)
    random.Random(3).shuffle(shuffled)
    got = list(sources.get().read_members(path, shuffled))
    assert [ref for ref, _ in got] == sorted(refs, key=lambda r: r.offset)
    by_name = generated.by_name(dataset.VALIDATION)
    assert all(data == by_name[ref.file_name].data for ref, data in got)
    subset = shuffled[:2]
    assert {ref.file_name: data for ref, data in sources.get().read_members(path, subset)} == {
        r.file_name: by_name[r.file_name].data for r in subset
    }
    assert list(sources.get().read_members(path, [])) == []


def test_read_members_of_train_reads_through_the_outer_tar(generated: GeneratedInput) -> None:
    train = path_of(generated, dataset.TRAIN_ARCHIVE)
    refs = [r for e in tarballs.list_inner_tars(train) for r in tarballs.index_inner_tar(train, e)]
    got = {ref.file_name: data for ref, data in sources.get().read_members(train, refs)}
    assert got == {m.file_name: m.data for m in generated.split(dataset.TRAIN)}


def test_read_members_of_a_truncated_tar_raises(generated: GeneratedInput, tmp_path) -> None:
    source = path_of(generated, dataset.VALIDATION_ARCHIVE)
    refs = tarballs.index_flat_archive(dataset.VALIDATION, source)
    victim = sorted(refs, key=lambda r: r.offset)[3]
    with open(source, "rb") as f:
        data = f.read()
    truncated = str(tmp_path / "truncated.tar")
    with open(truncated, "wb") as f:
        f.write(data[: victim.offset + victim.size // 2])
    refs = [r._replace(archive=truncated) for r in refs]
    with pytest.raises(ArchiveError) as err:
        list(sources.get().read_members(truncated, refs))
    assert victim.file_name in str(err.value)
    assert "incomplete" in str(err.value)
    # The members before the cut are still read intact before the error.
    reader = sources.get().read_members(truncated, refs)
    first = [next(reader) for _ in range(3)]
    by_name = generated.by_name(dataset.VALIDATION)
    assert all(d == by_name[r.file_name].data for r, d in first)


def test_indexing_a_tar_truncated_inside_a_member_raises(
    generated: GeneratedInput, tmp_path
) -> None:
    source = path_of(generated, dataset.VALIDATION_ARCHIVE)
    refs = sorted(tarballs.index_flat_archive(dataset.VALIDATION, source), key=lambda r: r.offset)
    with open(source, "rb") as f:
        data = f.read()
    for cut in (refs[2].offset + 1, refs[-1].offset + refs[-1].size - 1):
        truncated = str(tmp_path / f"cut_{cut}.tar")
        with open(truncated, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(ArchiveError, match="incomplete"):
            tarballs.index_flat_archive(dataset.VALIDATION, truncated)


def test_a_tar_cut_at_a_header_boundary_or_all_zeros_raises(
    generated: GeneratedInput, tmp_path
) -> None:
    # tarfile itself takes these for a normal end of archive.
    source = path_of(generated, dataset.VALIDATION_ARCHIVE)
    refs = sorted(tarballs.index_flat_archive(dataset.VALIDATION, source), key=lambda r: r.offset)
    with open(source, "rb") as f:
        data = f.read()
    header_of_fourth = refs[3].offset - tarfile.BLOCKSIZE
    for name, content in (
        ("at_header.tar", data[:header_of_fourth]),
        ("zeros.tar", bytes(512)),
    ):
        cut = tmp_path / name
        cut.write_bytes(content)
        with pytest.raises(ArchiveError, match="incomplete"):
            tarballs.index_flat_archive(dataset.VALIDATION, str(cut))


# --- not a tar ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"abc",
        random.Random(0).randbytes(4096),
        synthetic.NOT_AN_IMAGE_TEXT * 40,
        b"\x1f\x8b" + bytes(600),
    ],
    ids=["empty", "short", "random", "html", "gzip-like"],
)
def test_a_file_that_is_not_a_tar_raises_archive_error(tmp_path, content: bytes) -> None:
    path = str(tmp_path / dataset.VALIDATION_ARCHIVE)
    with open(path, "wb") as f:
        f.write(content)
    for index in (
        lambda: tarballs.index_flat_archive(dataset.VALIDATION, path),
        lambda: tarballs.index_flat_archive(dataset.TEST, path),
        lambda: tarballs.list_inner_tars(path),
    ):
        with pytest.raises(ArchiveError) as err:
            index()
        message = str(err.value)
        assert path in message
        assert "download may be incomplete" in message


def test_archive_error_is_a_value_error() -> None:
    assert issubclass(ArchiveError, ValueError)


# --- member names as TFDS gives them -------------------------------------------------------

MEMBER_NAMES = [
    "n01440764_1.JPEG",
    "ILSVRC2012_val_00000001.JPEG",
    "dir/n01440764_1.JPEG",
    "./n01440764_1.JPEG",
    "a/./b.JPEG",
    "a//b.JPEG",
    "a/b/../c.JPEG",
    "../escape.JPEG",
    "a/../../escape.JPEG",
    ".hidden",
    ".DS_Store",
    "._n01440764_1.JPEG",
    "dir/.hidden.JPEG",
    "dir/._n01440764_1.JPEG",
    ".dir/file.JPEG",
    "backup.JPEG~",
    "dir/backup~",
    "/abs/n01440764_1.JPEG",
    "/",
    ".",
    "..",
    "",
    "dir/",
    "dir/sub/",
    "n01440764_1.JPEG/",
    "ünïcödé.JPEG",
    "name with spaces.JPEG",
    "~tilde_first.JPEG",
    "a.b.c.JPEG",
]


@pytest.mark.parametrize("name", MEMBER_NAMES)
def test_member_names_are_what_tfds_makes_of_them(name: str) -> None:
    assert tfds_member_name(name) == extractor._normpath(name)


def test_member_name_drops_and_keeps() -> None:
    for dropped in (".DS_Store", "._x.JPEG", "d/.x", "x~", "/abs/x.JPEG", "../x.JPEG"):
        assert tfds_member_name(dropped) is None, dropped
    assert tfds_member_name("./d//x.JPEG") == "d/x.JPEG"
    assert tfds_member_name("n01440764_1.JPEG") == "n01440764_1.JPEG"


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_odd_members_are_indexed_like_tfds_iterates_them(tmp_path, fmt: int) -> None:
    long_dir = "very_long_directory_name_" * 5
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (special_info("images", tarfile.DIRTYPE), None),
        (file_info("images/ILSVRC2012_test_00000001.JPEG"), b"first image"),
        (file_info(".DS_Store"), b"mac junk"),
        (file_info("images/._ILSVRC2012_test_00000001.JPEG"), b"apple double"),
        (file_info("images/.hidden.JPEG"), b"hidden"),
        (file_info("images/ILSVRC2012_test_00000002.JPEG~"), b"editor backup"),
        (special_info("images/sub", tarfile.DIRTYPE), None),
        (file_info("./images/sub/ILSVRC2012_test_00000003.JPEG"), b"third"),
        (special_info("link.JPEG", tarfile.SYMTYPE, "images/ILSVRC2012_test_00000001.JPEG"), None),
        (special_info("hard.JPEG", tarfile.LNKTYPE, "images/ILSVRC2012_test_00000001.JPEG"), None),
        (file_info("empty.JPEG"), b""),
        (file_info("ILSVRC2012_test_00000004.JPEG"), bytes(range(256)) * 5),
    ]
    if fmt != tarfile.USTAR_FORMAT:
        entries.append((file_info(f"{long_dir}/{'x' * 120}.JPEG"), b"long name"))
        entries.append((file_info("ünïcödé_猫.JPEG"), b"non-ascii name"))
    path = str(tmp_path / "odd.tar")
    write_tar(path, entries, fmt)

    refs = tarballs.index_flat_archive(dataset.TEST, path)
    ours = [(r.file_name, read_at(path, r.offset, r.size)) for r in refs]
    with open(path, "rb") as f:
        tfds = [(name, fobj.read()) for name, fobj in extractor.iter_tar(f, stream=True)]
    assert ours == tfds

    expected = [
        ("images/ILSVRC2012_test_00000001.JPEG", b"first image"),
        ("images/sub/ILSVRC2012_test_00000003.JPEG", b"third"),
        ("empty.JPEG", b""),
        ("ILSVRC2012_test_00000004.JPEG", bytes(range(256)) * 5),
    ]
    if fmt != tarfile.USTAR_FORMAT:
        expected += [
            (f"{long_dir}/{'x' * 120}.JPEG", b"long name"),
            ("ünïcödé_猫.JPEG", b"non-ascii name"),
        ]
    assert ours == expected
    assert [(r.file_name, d) for r, d in sources.get().read_members(path, refs)] == expected


def test_walk_tar_reads_headers_of_a_range(tmp_path) -> None:
    """walk_tar's offsets are relative to the file object it is given."""
    body = synthetic.tar_bytes([("a.JPEG", b"AAA"), ("b.JPEG", b"BBBB")])
    entries = list(walk_tar(io.BytesIO(body), "in-memory tar"))
    assert entries == [TarEntry("a.JPEG", 512, 3), TarEntry("b.JPEG", 1536, 4)]
    assert [body[e.offset : e.offset + e.size] for e in entries] == [b"AAA", b"BBBB"]


def test_headers_checksummed_over_signed_bytes_are_accepted_like_tarfile_does() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("n01440764_\u00e9.JPEG")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    data = bytearray(buf.getvalue())
    header = data[:512]
    signed = sum(b - 256 if b > 127 else b for b in header[:148] + header[156:]) + 8 * 0x20
    data[148:156] = b"%06o\0 " % signed
    assert tarfile.open(fileobj=io.BytesIO(bytes(data))).getnames() == ["n01440764_\u00e9.JPEG"]
    assert list(walk_tar(io.BytesIO(bytes(data)), "old tar")) == [
        TarEntry("n01440764_\u00e9.JPEG", 512, 3)
    ]
    data[0] ^= 0x01  # any other damage is refused
    with pytest.raises(ArchiveError, match="checksum"):
        list(walk_tar(io.BytesIO(bytes(data)), "damaged tar"))
