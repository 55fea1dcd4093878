"""Merging the 2019 test patch into the 2012 test tar: content, safety, atomicity, reuse."""

from __future__ import annotations

import io
import os
import shutil
import tarfile

import pytest

from imagenet_beam import dataset, layout, synthetic
from imagenet_beam.sources.patch_merge import UnsafeMemberError, merge_test_patch
from imagenet_beam.sources.tar import ArchiveError
from imagenet_beam.synthetic import GeneratedInput


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> GeneratedInput:
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("patch_manual")),
        splits=(dataset.TEST,),
        test_archives=("2012", "patch", "patched"),
        num_test=8,
        num_patched=3,
        image_size=(16, 12),
    )


def path_of(generated: GeneratedInput, name: str) -> str:
    return os.path.join(generated.manual_dir, name)


def inputs(generated: GeneratedInput) -> tuple[str, str]:
    return (
        path_of(generated, dataset.TEST_ARCHIVE_2012),
        path_of(generated, synthetic.PATCH_ARCHIVE),
    )


def members(path: str) -> list[tuple[str, bytes | None]]:
    """(name, bytes) in tar order; None for folders."""
    out = []
    with tarfile.open(path) as tar:
        for info in tar:
            f = tar.extractfile(info) if info.isreg() else None
            out.append((info.name, f.read() if f else None))
    return out


def write_tar(path: str, entries: list[tuple[str, bytes | None, bytes]]) -> str:
    """A tar of (name, data, type); data None for members without content."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = "ILSVRC2012_test_00000001.JPEG"
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def patch_entries(generated: GeneratedInput, prefix: str = "") -> list[tuple[str, bytes, bytes]]:
    return [
        (prefix + name, data, tarfile.REGTYPE)
        for name, data in members(path_of(generated, synthetic.PATCH_ARCHIVE))
        if data is not None
    ]


def test_merge_equals_the_patched_tar(generated: GeneratedInput, tmp_path) -> None:
    output = str(tmp_path / "work" / layout.MERGED_TEST_ARCHIVE)
    report = merge_test_patch(*inputs(generated), output)

    assert members(output) == members(path_of(generated, dataset.TEST_ARCHIVE_PATCHED))
    assert report.replaced == sorted(generated.replaced_by_patch)
    assert len(report.replaced) == 3
    assert report.added == []
    assert report.num_members == 8
    assert report.reused is False
    assert (report.output, report.test_archive, report.patch_archive) == (
        output,
        *inputs(generated),
    )
    assert report.to_dict()["replaced"] == report.replaced
    assert sorted(os.listdir(tmp_path / "work")) == sorted(
        [layout.MERGED_TEST_ARCHIVE, layout.MERGED_TEST_ARCHIVE + ".merge.json"]
    )


def test_merge_is_deterministic(generated: GeneratedInput, tmp_path) -> None:
    first = merge_test_patch(*inputs(generated), str(tmp_path / "a.tar"))
    second = merge_test_patch(*inputs(generated), str(tmp_path / "b.tar"))
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert first.replaced == second.replaced


def test_default_output_is_not_the_published_name(tmp_path) -> None:
    output = layout.OutputLayout(str(tmp_path)).merged_test_archive
    assert output == os.path.join(
        str(tmp_path), ".imagenet2012-work", "ILSVRC2012_img_test_merged.tar"
    )
    assert os.path.basename(output) not in dataset.PUBLISHED_ARCHIVES


def test_unchanged_inputs_reuse_the_output(generated: GeneratedInput, tmp_path) -> None:
    output = str(tmp_path / layout.MERGED_TEST_ARCHIVE)
    first = merge_test_patch(*inputs(generated), output)
    before = os.stat(output).st_mtime_ns
    again = merge_test_patch(*inputs(generated), output)
    assert again.reused is True
    assert {**again.to_dict(), "reused": False} == first.to_dict()
    assert os.stat(output).st_mtime_ns == before

    # Without its output, the sidecar is not enough: merge again.
    os.remove(output)
    assert merge_test_patch(*inputs(generated), output).reused is False
    assert members(output) == members(path_of(generated, dataset.TEST_ARCHIVE_PATCHED))


def test_changed_patch_merges_again(generated: GeneratedInput, tmp_path) -> None:
    test_tar = shutil.copy(path_of(generated, dataset.TEST_ARCHIVE_2012), tmp_path)
    patch = shutil.copy(path_of(generated, synthetic.PATCH_ARCHIVE), tmp_path)
    output = str(tmp_path / "out" / layout.MERGED_TEST_ARCHIVE)
    merge_test_patch(test_tar, patch, output)

    st = os.stat(patch)
    os.utime(patch, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert merge_test_patch(test_tar, patch, output).reused is False

    entries = patch_entries(generated)
    name = entries[0][0]
    entries[0] = (name, b"new bytes from a re-issued patch", tarfile.REGTYPE)
    write_tar(patch, entries)
    report = merge_test_patch(test_tar, patch, output)
    assert report.reused is False
    assert dict(members(output))[name] == b"new bytes from a re-issued patch"


def test_patch_in_a_folder_replaces_by_file_name(generated: GeneratedInput, tmp_path) -> None:
    patch = write_tar(
        str(tmp_path / "patch.tar"),
        [("test", None, tarfile.DIRTYPE), *patch_entries(generated, prefix="test/")],
    )
    output = str(tmp_path / "merged.tar")
    report = merge_test_patch(path_of(generated, dataset.TEST_ARCHIVE_2012), patch, output)
    assert members(output) == members(path_of(generated, dataset.TEST_ARCHIVE_PATCHED))
    assert report.replaced == sorted(generated.replaced_by_patch)
    assert report.added == []


def test_new_patch_members_are_appended(generated: GeneratedInput, tmp_path) -> None:
    extra = [
        ("test/ILSVRC2012_test_00099999.JPEG", b"new one", tarfile.REGTYPE),
        ("ILSVRC2012_test_00099998.JPEG", b"another", tarfile.REGTYPE),
    ]
    patch = write_tar(str(tmp_path / "patch.tar"), [extra[0], *patch_entries(generated), extra[1]])
    output = str(tmp_path / "merged.tar")
    test_2012 = path_of(generated, dataset.TEST_ARCHIVE_2012)
    # Refused unless allowed: the 2019 patch only replaces images.
    with pytest.raises(ArchiveError, match=r"2 member\(s\) replace no image") as refused:
        merge_test_patch(test_2012, patch, output)
    assert all(name in str(refused.value) for name, _, _ in extra)
    assert "--patch_additions" in str(refused.value)
    assert sorted(os.listdir(tmp_path)) == ["patch.tar"]  # no output, no partial file
    report = merge_test_patch(test_2012, patch, output, allow_additions=True)
    merged = members(output)
    expected = members(path_of(generated, dataset.TEST_ARCHIVE_PATCHED))
    assert merged == expected + [(name, data) for name, data, _ in extra]
    assert report.added == [name for name, _, _ in extra]
    assert report.num_members == len(expected) + 2


def test_folders_of_the_2012_tar_are_kept(generated: GeneratedInput, tmp_path) -> None:
    original = members(path_of(generated, dataset.TEST_ARCHIVE_2012))
    test_tar = write_tar(
        str(tmp_path / "test_2012.tar"),
        [("test", None, tarfile.DIRTYPE)]
        + [("test/" + name, data, tarfile.REGTYPE) for name, data in original],
    )
    output = str(tmp_path / "merged.tar")
    report = merge_test_patch(test_tar, path_of(generated, synthetic.PATCH_ARCHIVE), output)
    patched = members(path_of(generated, dataset.TEST_ARCHIVE_PATCHED))
    assert members(output) == [("test", None)] + [("test/" + n, d) for n, d in patched]
    assert report.replaced == sorted("test/" + n for n in generated.replaced_by_patch)


UNSAFE = [
    ("../evil.JPEG", b"x", tarfile.REGTYPE, "'..'"),
    ("test/../../evil.JPEG", b"x", tarfile.REGTYPE, "'..'"),
    ("/abs.JPEG", b"x", tarfile.REGTYPE, "absolute path"),
    ("link.JPEG", None, tarfile.SYMTYPE, "symbolic link"),
    ("hard.JPEG", None, tarfile.LNKTYPE, "hard link"),
    ("fifo.JPEG", None, tarfile.FIFOTYPE, "FIFO"),
    ("char.JPEG", None, tarfile.CHRTYPE, "character device"),
    ("block.JPEG", None, tarfile.BLKTYPE, "block device"),
]


def leftover_files(directory) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("name, data, kind, why", UNSAFE, ids=[u[0] for u in UNSAFE])
def test_unsafe_patch_members_are_refused(
    generated: GeneratedInput, tmp_path, name: str, data: bytes | None, kind: bytes, why: str
) -> None:
    # The unsafe member comes last: the whole patch is checked before anything is written.
    patch = write_tar(str(tmp_path / "patch.tar"), [*patch_entries(generated), (name, data, kind)])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(UnsafeMemberError) as err:
        merge_test_patch(
            path_of(generated, dataset.TEST_ARCHIVE_2012), patch, str(out_dir / "merged.tar")
        )
    assert repr(name) in str(err.value) and patch in str(err.value) and why in str(err.value)
    assert leftover_files(out_dir) == []


@pytest.mark.parametrize("name, data, kind, why", UNSAFE[:4], ids=[u[0] for u in UNSAFE[:4]])
def test_unsafe_members_of_the_2012_tar_are_refused_midway(
    generated: GeneratedInput, tmp_path, name: str, data: bytes | None, kind: bytes, why: str
) -> None:
    original = members(path_of(generated, dataset.TEST_ARCHIVE_2012))
    test_tar = write_tar(
        str(tmp_path / "test_2012.tar"),
        [(n, d, tarfile.REGTYPE) for n, d in original] + [(name, data, kind)],
    )
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(UnsafeMemberError) as err:
        merge_test_patch(
            test_tar, path_of(generated, synthetic.PATCH_ARCHIVE), str(out_dir / "m.tar")
        )
    assert repr(name) in str(err.value) and test_tar in str(err.value)
    assert leftover_files(out_dir) == []  # the partial output was removed


def test_truncated_2012_tar_leaves_no_output(generated: GeneratedInput, tmp_path) -> None:
    source = path_of(generated, dataset.TEST_ARCHIVE_2012)
    with tarfile.open(source) as tar:
        boundary = tar.getmembers()[5].offset  # cut between two members
    test_tar = tmp_path / "test_2012.tar"
    test_tar.write_bytes(open(source, "rb").read()[:boundary])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ArchiveError, match="not a complete tar archive"):
        merge_test_patch(
            str(test_tar), path_of(generated, synthetic.PATCH_ARCHIVE), str(out_dir / "m.tar")
        )
    assert leftover_files(out_dir) == []


def test_failed_merge_keeps_no_stale_reuse_record(generated: GeneratedInput, tmp_path) -> None:
    test_tar = shutil.copy(path_of(generated, dataset.TEST_ARCHIVE_2012), tmp_path)
    patch = shutil.copy(path_of(generated, synthetic.PATCH_ARCHIVE), tmp_path)
    output = str(tmp_path / "out" / "merged.tar")
    merge_test_patch(test_tar, patch, output)
    with open(test_tar, "r+b") as f:
        f.truncate(700)  # inside the first member's data
    with pytest.raises(ArchiveError):
        merge_test_patch(test_tar, patch, output)
    assert leftover_files(tmp_path / "out") == ["merged.tar"]  # old output, no partial, no record
