"""Checking the downloaded tarballs: hashes, complete tars, published sizes and sha256s, cache."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile

import pytest

from imagenet_beam import dataset, synthetic
from imagenet_beam.sources import archive_checks
from imagenet_beam.sources.archive_checks import ArchiveCheckError, check_archive, check_archives

NUM_TEST = 5
NUM_VALIDATION = 4


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    generated = synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("checks_manual")),
        splits=(dataset.VALIDATION, dataset.TEST),
        test_archives=("2012",),
        num_test=NUM_TEST,
        num_validation=NUM_VALIDATION,
        image_size=(16, 12),
    )
    return generated.manual_dir


def copy_to(manual_dir: str, tmp_path, name: str, as_name: str | None = None) -> str:
    """A private copy a test may damage, under `as_name` (published names included)."""
    target = os.path.join(str(tmp_path), as_name or name)
    shutil.copyfile(os.path.join(manual_dir, name), target)
    return target


def file_hashes(path: str) -> tuple[str, str]:
    with open(path, "rb") as f:
        data = f.read()
    return hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()


def tar_end(path: str) -> int:
    """Where the last member's data (padded to a block) ends: the end marker follows."""
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    return last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def replace_keeping_mtime(path: str, data: bytes) -> None:
    """New content, same size and mtime: what a cache keyed on them cannot tell apart."""
    st = os.stat(path)
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def bump_mtime(path: str) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def matching_published(path: str) -> dataset.PublishedArchive:
    sha256, md5 = file_hashes(path)
    return dataset.PublishedArchive(os.path.basename(path), os.path.getsize(path), md5, sha256)


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def same_but_cached(a: archive_checks.ArchiveCheck, b: archive_checks.ArchiveCheck) -> bool:
    return {**a.to_dict(), "cached": None} == {**b.to_dict(), "cached": None}


def test_good_archive_is_hashed_and_counted(manual_dir: str, tmp_path) -> None:
    path = copy_to(manual_dir, tmp_path, dataset.TEST_ARCHIVE_2012)
    check = check_archive(path)
    sha256, md5 = file_hashes(path)
    assert (check.sha256, check.md5) == (sha256, md5)
    assert check.num_members == NUM_TEST
    assert check.size == os.path.getsize(path)
    assert check.modified == os.path.getmtime(path)
    assert check.name == dataset.TEST_ARCHIVE_2012
    assert check.verified_against is None  # the 2012 test tar has no published checksum
    assert check.cached is False
    assert check.to_dict()["sha256"] == sha256


def test_counts_regular_members_only_and_walks_compressed_tars(tmp_path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(_dir("folder"))
        for name in ("folder/a.JPEG", "b.JPEG"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    plain = tmp_path / "plain.tar"
    plain.write_bytes(buf.getvalue())
    packed = tmp_path / "devkit_like.tar.gz"
    packed.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    assert check_archive(str(plain)).num_members == 2
    # Padding after the end marker (tar's blocking factor) counts towards the hashes too.
    padded = tmp_path / "padded.tar"
    padded.write_bytes(buf.getvalue() + bytes(3 << 20))
    check = check_archive(str(padded))
    assert (check.sha256, check.md5) == file_hashes(str(padded))
    assert check.size == os.path.getsize(padded)
    check = check_archive(str(packed))
    assert check.num_members == 2
    assert check.sha256 == hashlib.sha256(packed.read_bytes()).hexdigest()  # stored bytes


@pytest.mark.parametrize("chunk", [1, 100, 511, 513, 1500, 4096])
def test_a_plain_tar_is_walked_by_its_headers_across_any_read_size(
    tmp_path, monkeypatch, chunk: int
) -> None:
    """Headers, long names and member data that straddle the reads: the header walk
    counts and hashes as `tarfile` and hashlib do over the whole file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(7):
            name = f"{'long_' * 30 * (i % 2)}n01440764_{i}.JPEG"  # every other one > 100 chars
            data = bytes([i]) * (i * 300 + 1)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "ILSVRC2012_img_val.tar"
    path.write_bytes(buf.getvalue())
    monkeypatch.setattr(archive_checks, "_CHUNK", chunk)
    check = check_archive(str(path), verify_checksum=False)
    with tarfile.open(path) as tar:
        assert check.num_members == len(tar.getmembers()) == 7
    assert (check.sha256, check.md5) == file_hashes(str(path))
    assert check.size == os.path.getsize(path)


@pytest.mark.parametrize(
    "cut",
    [
        "empty",
        "in_first_header",
        "in_member_data",
        "at_member_boundary",
        "before_end_marker",
        "in_end_marker",
    ],
)
@pytest.mark.parametrize("verify", [True, False])
def test_truncated_tar_fails(manual_dir: str, tmp_path, cut: str, verify: bool) -> None:
    path = copy_to(manual_dir, tmp_path, dataset.TEST_ARCHIVE_2012)
    data = open(path, "rb").read()
    with tarfile.open(path) as tar:
        second = tar.getmembers()[1]
    at = {
        "empty": 0,
        "in_first_header": 100,
        "in_member_data": second.offset_data + 10,
        "at_member_boundary": second.offset,  # tarfile alone reads this as a short tar
        "before_end_marker": tar_end(path),
        "in_end_marker": tar_end(path) + tarfile.BLOCKSIZE,  # one of its two zero blocks
    }[cut]
    with open(path, "wb") as f:
        f.write(data[:at])
    with pytest.raises(ArchiveCheckError, match="not a complete tar archive") as err:
        check_archive(path, verify_checksum=verify)
    assert path in str(err.value) and "download it again" in str(err.value)
    reason = {
        "at_member_boundary": f"it ends after {at:,} bytes without the end-of-archive marker",
        "before_end_marker": f"it ends after {at:,} bytes without the end-of-archive marker",
        "in_end_marker": f"it ends after {at:,} bytes inside its end-of-archive marker",
        "empty": "it is empty, not a tar archive",
    }.get(cut, "")
    assert reason in str(err.value)


def test_garbage_is_not_a_tar(tmp_path) -> None:
    path = tmp_path / "ILSVRC2012_img_test.tar"
    path.write_bytes(b"<html>403 Forbidden</html>" * 100)
    with pytest.raises(ArchiveCheckError, match="not a complete tar archive"):
        check_archive(str(path))


def test_missing_archive_says_how_to_download(tmp_path) -> None:
    with pytest.raises(ArchiveCheckError, match="does not exist") as err:
        check_archive(str(tmp_path / dataset.TRAIN_ARCHIVE))
    assert dataset.DOWNLOAD_INSTRUCTIONS in str(err.value)


def test_published_size_mismatch_fails_before_reading(manual_dir: str, tmp_path) -> None:
    path = copy_to(manual_dir, tmp_path, dataset.VALIDATION_ARCHIVE)
    size = os.path.getsize(path)
    expected = (
        f"{dataset.VALIDATION_ARCHIVE}: expected 6,744,924,160 bytes (published by "
        f"image-net.org), found {size:,} bytes: the download is probably incomplete or "
        "corrupt; download it again, or turn off verify_checksums for custom or subset data"
    )
    with pytest.raises(ArchiveCheckError) as err:
        check_archive(path)
    assert expected in str(err.value)
    # Not a tar at all, yet the size message: the file was not read.
    replace_keeping_mtime(path, b"\xff" * size)
    with pytest.raises(ArchiveCheckError) as err:
        check_archive(path)
    assert expected in str(err.value)


def test_unverified_published_name_is_still_hashed_and_walked(manual_dir: str, tmp_path) -> None:
    path = copy_to(manual_dir, tmp_path, dataset.VALIDATION_ARCHIVE)
    check = check_archive(path, verify_checksum=False)
    assert check.verified_against is None
    assert (check.sha256, check.md5) == file_hashes(path)
    assert check.num_members == NUM_VALIDATION
    with open(path, "r+b") as f:
        f.truncate(tar_end(path))
    with pytest.raises(ArchiveCheckError, match="not a complete tar archive"):
        check_archive(path, verify_checksum=False)


def test_sha256_mismatch_shows_both_hashes(manual_dir: str, tmp_path) -> None:
    path = copy_to(manual_dir, tmp_path, dataset.TEST_ARCHIVE_2012)
    good = matching_published(path)
    wrong = dataset.PublishedArchive(good.name, good.size, good.md5, "0" * 64)
    with pytest.raises(ArchiveCheckError) as err:
        check_archive(path, published=wrong)
    message = str(err.value)
    assert f"expected sha256 {'0' * 64} (published by image-net.org)" in message
    assert f"found sha256 {good.sha256}" in message
    assert "turn off verify_checksums" in message
    assert check_archive(path, published=good).verified_against == archive_checks.PUBLISHED
    assert check_archive(path, published=wrong, verify_checksum=False).verified_against is None


def test_published_sha256_is_compared_when_size_is_unpublished(manual_dir: str, tmp_path) -> None:
    # image-net.org's patched test tar has a published sha256 but no confirmed size.
    assert dataset.PUBLISHED_ARCHIVES[dataset.TEST_ARCHIVE_PATCHED].size is None
    path = copy_to(manual_dir, tmp_path, dataset.TEST_ARCHIVE_2012, dataset.TEST_ARCHIVE_PATCHED)
    with pytest.raises(ArchiveCheckError, match="expected sha256 9cf7f824"):
        check_archive(path)


def test_cache_hit_miss_and_no_cached_failures(manual_dir: str, tmp_path) -> None:
    path = copy_to(manual_dir, tmp_path, dataset.TEST_ARCHIVE_2012)
    cache = str(tmp_path / "cache")
    first = check_archive(path, cache_dir=cache)
    assert first.cached is False and len(os.listdir(cache)) == 1

    # The same file, untouched: answered from the cache.
    again = check_archive(path, cache_dir=cache)
    assert again.cached is True
    assert same_but_cached(first, again)

    # Rewritten with its size and mtime kept: the change time (and so the file's identity)
    # is new, so it is read again and the garbage found; nothing is cached for it.
    replace_keeping_mtime(path, b"\x00garbage" * (first.size // 8))
    with pytest.raises(ArchiveCheckError, match="not a complete tar archive"):
        check_archive(path, cache_dir=cache)
    assert len(os.listdir(cache)) == 1

    # A new mtime is a new file state too: read again, fail, and cache nothing.
    bump_mtime(path)
    for _ in range(2):
        with pytest.raises(ArchiveCheckError, match="not a complete tar archive"):
            check_archive(path, cache_dir=cache)
    assert len(os.listdir(cache)) == 1


def test_cached_unverified_result_does_not_stand_for_a_verified_one(
    manual_dir: str, tmp_path
) -> None:
    path = copy_to(manual_dir, tmp_path, dataset.TEST_ARCHIVE_2012)
    published = matching_published(path)
    cache = str(tmp_path / "cache")
    assert check_archive(path, verify_checksum=False, cache_dir=cache).verified_against is None
    # An unverifying call is happy with the unverified cache entry ...
    assert check_archive(path, verify_checksum=False, cache_dir=cache).cached is True
    # ... a verifying call reads the file again instead, and verifies it.
    verified = check_archive(path, published=published, cache_dir=cache)
    assert verified.cached is False and verified.verified_against == archive_checks.PUBLISHED
    # The verified entry answers the next verifying call ...
    hit = check_archive(path, published=published, cache_dir=cache)
    assert (hit.cached, hit.verified_against) == (True, archive_checks.PUBLISHED)
    # ... but does not stand for a different published sha256: read again, and refused.
    other = dataset.PublishedArchive(published.name, published.size, published.md5, "f" * 64)
    with pytest.raises(ArchiveCheckError, match="expected sha256 f{64}"):
        check_archive(path, published=other, cache_dir=cache)


def test_check_archives_reports_every_failure_at_once(manual_dir: str, tmp_path) -> None:
    good = copy_to(manual_dir, tmp_path, dataset.TEST_ARCHIVE_2012)
    wrong_size = copy_to(manual_dir, tmp_path, dataset.VALIDATION_ARCHIVE)
    truncated = copy_to(manual_dir, tmp_path, dataset.TEST_ARCHIVE_2012, "truncated.tar")
    with open(truncated, "r+b") as f:
        f.truncate(700)
    missing = str(tmp_path / dataset.TRAIN_ARCHIVE)

    results = check_archives([good], verify_checksum=True)
    assert [r.path for r in results] == [good]

    with pytest.raises(ArchiveCheckError) as err:
        check_archives([wrong_size, good, truncated, missing])
    message = str(err.value)
    assert message.startswith("3 of 4 archives failed the check")
    assert "expected 6,744,924,160 bytes" in message
    assert f"{truncated} is not a complete tar archive" in message
    assert f"{missing} does not exist" in message
    assert set(err.value.failures) == {wrong_size, truncated, missing}

    # With verification off, the size no longer matters; the damaged files still fail.
    with pytest.raises(ArchiveCheckError) as err:
        check_archives([wrong_size, good, truncated], verify_checksum=False)
    assert set(err.value.failures) == {truncated}
