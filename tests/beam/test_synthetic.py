"""The synthetic manual dir must look like image-net.org's tars, or tests built on it lie."""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import subprocess
import sys
import tarfile

import pytest
from PIL import Image, ImageCms, UnidentifiedImageError

from imagenet_beam import dataset, synthetic
from imagenet_beam.synthetic import (
    AWKWARD_KINDS,
    BROKEN_KINDS,
    PATCH_ARCHIVE,
    GeneratedInput,
    generate_manual_dir,
)

ALL_TEST_ARCHIVES = ("2012", "patch", "patched")
TRAIN_NAME = re.compile(r"(n\d{8})_(\d+)\.JPEG")
TEST_NAME = re.compile(r"ILSVRC2012_test_(\d{8})\.JPEG")
EOI = b"\xff\xd9"
TFDS_NAMES = dataset.TFDS_CMYK_NAMES | dataset.TFDS_PNG_NAMES


def read_tar(source: str | bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    """Members of a tar in stored order, with their bytes."""
    if isinstance(source, str):
        with open(source, "rb") as f:
            source = f.read()
    with tarfile.open(fileobj=io.BytesIO(source), mode="r:") as tar:
        return [(info, tar.extractfile(info).read()) for info in tar.getmembers()]


def tar_dict(source: str | bytes) -> dict[str, bytes]:
    return {info.name: data for info, data in read_tar(source)}


def sha256s(manual_dir: str) -> dict[str, str]:
    out = {}
    for name in sorted(os.listdir(manual_dir)):
        with open(os.path.join(manual_dir, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def open_image(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def sof_dimensions(data: bytes) -> tuple[int, int]:
    """(width, height) from the JPEG frame header, read without a decoder."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    raise AssertionError("no frame header")


def of_kind(generated: GeneratedInput, kind: str) -> list[synthetic.GeneratedMember]:
    found = [m for m in generated.members if m.kind == kind]
    assert found, f"no {kind} image generated"
    return found


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> GeneratedInput:
    """Every awkward and broken kind, and all three test tars."""
    return generate_manual_dir(
        str(tmp_path_factory.mktemp("full")),
        awkward=True,
        broken=BROKEN_KINDS,
        test_archives=ALL_TEST_ARCHIVES,
    )


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> GeneratedInput:
    return generate_manual_dir(str(tmp_path_factory.mktemp("default")))


def test_default_writes_the_three_archives_and_the_patch(default: GeneratedInput) -> None:
    assert sorted(os.listdir(default.manual_dir)) == sorted(
        [
            dataset.TRAIN_ARCHIVE,
            dataset.VALIDATION_ARCHIVE,
            dataset.TEST_ARCHIVE_2012,
            PATCH_ARCHIVE,
        ]
    )
    assert default.patch_archive == PATCH_ARCHIVE
    assert sorted(default.archives) == sorted(os.listdir(default.manual_dir))
    assert len(default.split("train")) == 4 * 6
    assert len(default.split("validation")) == 12
    assert len(default.split("test")) == 12
    assert len(default.replaced_by_patch) == 3
    assert {m.kind for m in default.members} == {"plain"}


@pytest.mark.parametrize("fixture", ["default", "full"])
def test_train_is_a_tar_of_class_tars(fixture: str, request: pytest.FixtureRequest) -> None:
    generated: GeneratedInput = request.getfixturevalue(fixture)
    outer = read_tar(os.path.join(generated.manual_dir, dataset.TRAIN_ARCHIVE))
    expected = {m.file_name: m for m in generated.split("train")}
    seen = {}
    for info, inner_bytes in outer:
        assert info.isfile()
        assert re.fullmatch(r"n\d{8}\.tar", info.name), info.name
        wnid = info.name[: -len(".tar")]
        assert wnid in dataset.class_index()
        for inner_info, data in read_tar(inner_bytes):
            assert inner_info.isfile()
            match = TRAIN_NAME.fullmatch(inner_info.name)
            assert match, inner_info.name
            assert match.group(1) == wnid
            seen[inner_info.name] = data
            member = expected[inner_info.name]
            assert member.label == dataset.train_label(info.name)
            assert member.archive == dataset.TRAIN_ARCHIVE
    assert seen == {name: m.data for name, m in expected.items()}
    assert len(outer) == len({m.label for m in expected.values()})


def test_plain_train_names_avoid_the_tfds_fix_list(full: GeneratedInput) -> None:
    tfds_named = {m.file_name for m in full.split("train") if m.file_name in TFDS_NAMES}
    assert tfds_named == {"n01739381_1309.JPEG", "n02105855_2933.JPEG"}


def test_validation_is_flat_unsorted_and_labelled_like_tfds(full: GeneratedInput) -> None:
    stored = read_tar(os.path.join(full.manual_dir, dataset.VALIDATION_ARCHIVE))
    names = [info.name for info, _ in stored]
    assert names != sorted(names)
    assert sorted(names) == [f"ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, len(names) + 1)]
    by_name = full.by_name("validation")
    assert [m.file_name for m in full.split("validation")] == names
    tfds_labels = dict(zip(sorted(names), dataset.validation_wnids(), strict=False))
    for info, data in stored:
        member = by_name[info.name]
        assert member.data == data
        assert member.label == dataset.class_index()[tfds_labels[info.name]]
        assert member.label == dataset.validation_label(info.name)


def test_validation_can_leave_gaps_in_its_numbering(default: GeneratedInput, tmp_path) -> None:
    gapped = generate_manual_dir(
        str(tmp_path), splits=["validation"], num_validation=6, missing_validation=[5, 2]
    )
    stored = read_tar(os.path.join(str(tmp_path), dataset.VALIDATION_ARCHIVE))
    names = [info.name for info, _ in stored]
    assert names != sorted(names)
    assert sorted(names) == [f"ILSVRC2012_val_{n:08d}.JPEG" for n in (1, 3, 4, 6, 7, 8)]
    by_name = gapped.by_name("validation")
    wnids = dataset.validation_wnids()
    for name in names:
        number = int(name[len("ILSVRC2012_val_") : -len(".JPEG")])
        assert by_name[name].label == dataset.class_index()[wnids[number - 1]]
    # after the first gap, sorted position no longer gives the label
    by_position = [dataset.class_index()[w] for w in wnids[: len(names)]]
    assert [by_name[n].label for n in sorted(names)] != by_position
    # an image's bytes depend on its name only, not on the gaps before it
    sixth = "ILSVRC2012_val_00000006.JPEG"
    assert by_name[sixth].data == default.by_name("validation")[sixth].data


def test_test_is_flat_and_unlabelled(full: GeneratedInput) -> None:
    for name in (dataset.TEST_ARCHIVE_2012, PATCH_ARCHIVE, dataset.TEST_ARCHIVE_PATCHED):
        for info, _ in read_tar(os.path.join(full.manual_dir, name)):
            assert TEST_NAME.fullmatch(info.name), info.name
    numbers = sorted(int(TEST_NAME.fullmatch(m.file_name).group(1)) for m in full.split("test"))
    assert numbers == list(range(1, len(numbers) + 1))
    assert {m.label for m in full.split("test")} == {dataset.TEST_LABEL}


def test_tar_headers_are_fixed(full: GeneratedInput) -> None:
    def check(info: tarfile.TarInfo) -> None:
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode) == (
            synthetic.TAR_MTIME,
            0,
            0,
            "",
            "",
            0o644,
        )

    for name in full.archives:
        for info, data in read_tar(os.path.join(full.manual_dir, name)):
            check(info)
            if info.name.endswith(".tar"):
                for inner_info, _ in read_tar(data):
                    check(inner_info)


def test_same_arguments_give_identical_files(full: GeneratedInput, tmp_path) -> None:
    again = generate_manual_dir(
        str(tmp_path / "again"),
        awkward=True,
        broken=list(reversed(BROKEN_KINDS)),
        test_archives=ALL_TEST_ARCHIVES,
    )
    assert sha256s(again.manual_dir) == sha256s(full.manual_dir)
    assert [(m.file_name, m.data) for m in again.members] == [
        (m.file_name, m.data) for m in full.members
    ]


def test_another_seed_gives_other_images(default: GeneratedInput, tmp_path) -> None:
    other = generate_manual_dir(str(tmp_path), seed=1)
    theirs, ours = sha256s(other.manual_dir), sha256s(default.manual_dir)
    assert theirs.keys() == ours.keys()
    assert all(theirs[name] != ours[name] for name in ours)


def test_plain_images_are_distinct_rgb_jpegs_near_the_size(default: GeneratedInput) -> None:
    assert len({m.data for m in default.members}) == len(default.members)
    for member in default.members:
        im = open_image(member.data)
        assert (im.format, im.mode) == ("JPEG", "RGB")
        assert abs(im.width - 64) <= synthetic.SIZE_JITTER
        assert abs(im.height - 48) <= synthetic.SIZE_JITTER
        assert member.data.endswith(EOI)


def test_every_split_gets_awkward_images(full: GeneratedInput) -> None:
    kinds = {split: {m.kind for m in full.split(split)} for split in dataset.SPLITS}
    assert set(AWKWARD_KINDS) | set(BROKEN_KINDS) <= kinds["train"]
    assert {"grayscale", "cmyk_other_name"} <= kinds["validation"]
    assert "png_other_name" in kinds["test"]


def test_tfds_named_images_sit_in_their_classes(full: GeneratedInput) -> None:
    (cmyk,) = of_kind(full, "cmyk_tfds_name")
    (png,) = of_kind(full, "png_tfds_name")
    assert (cmyk.split, cmyk.file_name) == ("train", "n01739381_1309.JPEG")
    assert (png.split, png.file_name) == ("train", "n02105855_2933.JPEG")
    assert cmyk.label == dataset.class_index()["n01739381"]
    assert png.label == dataset.class_index()["n02105855"]
    assert cmyk.file_name in dataset.TFDS_CMYK_NAMES
    assert png.file_name in dataset.TFDS_PNG_NAMES


def _check_cmyk(im: Image.Image, data: bytes) -> None:
    assert (im.format, im.mode) == ("JPEG", "CMYK")


def _check_png(im: Image.Image, data: bytes) -> None:
    assert (im.format, im.mode) == ("PNG", "RGB")


def _check_grayscale(im: Image.Image, data: bytes) -> None:
    assert (im.format, im.mode) == ("JPEG", "L")


def _check_progressive(im: Image.Image, data: bytes) -> None:
    assert im.format == "JPEG"
    assert im.info.get("progressive")


def _check_exif_rotated(im: Image.Image, data: bytes) -> None:
    assert im.getexif().get(0x0112) == 6


def _check_icc_profile(im: Image.Image, data: bytes) -> None:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
    assert "sRGB" in ImageCms.getProfileDescription(profile)


def _check_trailing_bytes(im: Image.Image, data: bytes) -> None:
    assert im.format == "JPEG"
    assert not data.endswith(EOI)
    assert data.rfind(EOI) + len(EOI) < len(data)


def _check_tiny(im: Image.Image, data: bytes) -> None:
    assert im.size == (1, 1)


def _check_large(im: Image.Image, data: bytes) -> None:
    assert im.size == synthetic.LARGE_SIZE
    assert len(data) < 500_000


AWKWARD_CHECKS = {
    "cmyk_tfds_name": _check_cmyk,
    "cmyk_other_name": _check_cmyk,
    "png_tfds_name": _check_png,
    "png_other_name": _check_png,
    "grayscale": _check_grayscale,
    "progressive": _check_progressive,
    "exif_rotated": _check_exif_rotated,
    "icc_profile": _check_icc_profile,
    "trailing_bytes": _check_trailing_bytes,
    "tiny": _check_tiny,
    "large": _check_large,
}


@pytest.mark.parametrize("kind", AWKWARD_KINDS)
def test_awkward_kind_is_what_it_claims(full: GeneratedInput, kind: str) -> None:
    for member in of_kind(full, kind):
        assert member.file_name.endswith(".JPEG")
        if not kind.endswith("_tfds_name"):
            assert member.file_name not in TFDS_NAMES
        AWKWARD_CHECKS[kind](open_image(member.data), member.data)


def test_awkward_checks_cover_every_kind() -> None:
    assert set(AWKWARD_CHECKS) == set(AWKWARD_KINDS)


@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_broken_kind_does_not_decode(full: GeneratedInput, kind: str) -> None:
    (member,) = of_kind(full, kind)
    assert member.split == "train"
    with pytest.raises((OSError, Image.DecompressionBombError)):
        open_image(member.data)


def test_broken_kinds_are_broken_the_way_they_say(full: GeneratedInput) -> None:
    (truncated,) = of_kind(full, "truncated")
    assert truncated.data.startswith(b"\xff\xd8")
    assert EOI not in truncated.data[-64:]
    assert len(truncated.data) > 100
    (empty,) = of_kind(full, "empty")
    assert empty.data == b""
    (text,) = of_kind(full, "not_an_image")
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(text.data))
    (huge,) = of_kind(full, "huge_dimensions")
    assert sof_dimensions(huge.data) == (60000, 60000)
    assert huge.data.endswith(EOI)


def test_patched_tar_is_2012_with_the_patch_applied(full: GeneratedInput) -> None:
    original = read_tar(os.path.join(full.manual_dir, dataset.TEST_ARCHIVE_2012))
    patch = tar_dict(os.path.join(full.manual_dir, PATCH_ARCHIVE))
    patched = read_tar(os.path.join(full.manual_dir, dataset.TEST_ARCHIVE_PATCHED))
    assert sorted(patch) == sorted(full.replaced_by_patch)
    assert len(patch) == 3
    assert [i.name for i, _ in patched] == [i.name for i, _ in original]
    for (info, old), (_, new) in zip(original, patched, strict=True):
        if info.name in patch:
            assert old != new == patch[info.name]
            open_image(new)
        else:
            assert new == old
    by_name = full.by_name("test")
    assert {n for n, m in by_name.items() if m.patched} == set(full.replaced_by_patch)
    assert {m.archive for m in by_name.values()} == {dataset.TEST_ARCHIVE_PATCHED}
    assert {n: m.data for n, m in by_name.items()} == {i.name: d for i, d in patched}


def test_members_point_at_the_tar_holding_their_bytes(default: GeneratedInput) -> None:
    patch = tar_dict(os.path.join(default.manual_dir, PATCH_ARCHIVE))
    original = tar_dict(os.path.join(default.manual_dir, dataset.TEST_ARCHIVE_2012))
    for member in default.split("test"):
        if member.file_name in default.replaced_by_patch:
            assert member.patched
            assert member.archive == PATCH_ARCHIVE
            assert member.data == patch[member.file_name] != original[member.file_name]
        else:
            assert not member.patched
            assert member.archive == dataset.TEST_ARCHIVE_2012
            assert member.data == original[member.file_name]
    validation = tar_dict(os.path.join(default.manual_dir, dataset.VALIDATION_ARCHIVE))
    assert validation == {m.file_name: m.data for m in default.split("validation")}


def test_without_the_patch_members_describe_2012(default: GeneratedInput, tmp_path) -> None:
    only_2012 = generate_manual_dir(str(tmp_path), test_archives=["2012"], splits=["test"])
    assert os.listdir(tmp_path) == [dataset.TEST_ARCHIVE_2012]
    assert only_2012.replaced_by_patch == []
    assert only_2012.patch_archive is None
    assert not any(m.patched for m in only_2012.members)
    original = tar_dict(os.path.join(default.manual_dir, dataset.TEST_ARCHIVE_2012))
    assert {m.file_name: m.data for m in only_2012.members} == original


def test_subset_of_kinds_and_splits(tmp_path) -> None:
    generated = generate_manual_dir(
        str(tmp_path),
        num_classes=2,
        train_per_class=1,
        awkward=["tiny", "grayscale"],
        broken=["empty"],
        splits=["train", "validation"],
    )
    assert sorted(os.listdir(tmp_path)) == [dataset.TRAIN_ARCHIVE, dataset.VALIDATION_ARCHIVE]
    assert sorted(m.kind for m in generated.split("train")) == [
        "empty",
        "grayscale",
        "plain",
        "plain",
        "tiny",
    ]
    assert [m.kind for m in generated.split("validation")].count("grayscale") == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"awkward": ["sepia"]}, "awkward"),
        ({"broken": ["corrupt"]}, "broken"),
        ({"test_archives": ["2019"]}, "test archives"),
        ({"splits": ["training"]}, "splits"),
        ({"num_test": 2, "num_patched": 3}, "num_patched"),
        ({"missing_validation": [0]}, "missing_validation"),
        ({"missing_validation": [50_001]}, "missing_validation"),
        ({"num_validation": 50_000, "missing_validation": [7]}, "validation images"),
        ({"num_classes": 1, "awkward": True}, "num_classes"),
        ({"broken": ["empty"], "splits": ["validation"]}, "train"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_manual_dir(str(tmp_path), **kwargs)


def test_command_line(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--manual_dir", str(tmp_path), "--num_classes", "2", "--awkward", "tiny"]
    argv += ["--broken", "empty,truncated", "--test_archives", "2012,patch,patched"]
    assert synthetic.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        dataset.TRAIN_ARCHIVE,
        dataset.VALIDATION_ARCHIVE,
        dataset.TEST_ARCHIVE_2012,
        PATCH_ARCHIVE,
        dataset.TEST_ARCHIVE_PATCHED,
    ]
    assert lines[0].startswith(f"{dataset.TRAIN_ARCHIVE}: 2 class tars, 15 images")


def test_runs_as_a_module(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "imagenet_beam.synthetic", "--manual_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(result.stdout.splitlines()) == 4


def test_does_not_import_tensorflow() -> None:
    code = "import sys, imagenet_beam.synthetic; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.stdout.strip() == "False", result.stderr
