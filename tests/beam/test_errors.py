"""Bad input ends the command line with one message (exit 2), never a traceback, and
publishes nothing: the hostile inputs of a user's manual dir, one at a time."""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
import pytest

from imagenet_beam import dataset, synthetic
from tests.conftest import convert, version_dir

WNID = "n01440764"


def _jpeg(seed: int = 0) -> bytes:
    return synthetic.image_bytes("plain", np.random.default_rng(seed), (32, 24))


def _class_tar(wnid: str = WNID, n: int = 2) -> bytes:
    return synthetic.tar_bytes([(f"{wnid}_{i}.JPEG", _jpeg(i)) for i in range(n)])


def _write(manual, name: str, data: bytes) -> None:
    os.makedirs(manual, exist_ok=True)
    with open(os.path.join(manual, name), "wb") as f:
        f.write(data)


def _validation(names) -> bytes:
    return synthetic.tar_bytes([(name, _jpeg(i)) for i, name in enumerate(names)])


def _non_utf8_test_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for name in ("ILSVRC2012_test_00000001.JPEG", "ILSVRC2012_test_\udcff.JPEG"):
            data = _jpeg()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


VAL = "ILSVRC2012_val_00000001.JPEG"
CASES = {
    # case: (split, {archive name: bytes}, extra flags, what the message must say)
    "truncated_train_tar": (
        "train",
        {dataset.TRAIN_ARCHIVE: synthetic.tar_bytes([(f"{WNID}.tar", _class_tar())])[:1500]},
        [], "not a complete tar archive",
    ),
    "validation_not_a_tar": (
        "validation", {dataset.VALIDATION_ARCHIVE: b"PK\x03\x04 a zip, not a tar" * 40},
        [], "not a complete tar archive",
    ),
    "zero_byte_train_tar": ("train", {dataset.TRAIN_ARCHIVE: b""}, [], dataset.TRAIN_ARCHIVE),
    "bad_inner_class_tar": (
        "train", {dataset.TRAIN_ARCHIVE: synthetic.tar_bytes([(f"{WNID}.tar", b"\x01" * 3000)])},
        [], f"member {WNID}.tar",
    ),
    "unknown_class_tar": (
        "train", {dataset.TRAIN_ARCHIVE: synthetic.tar_bytes(
            [("n99999999.tar", _class_tar("n99999999"))])},
        [], "n99999999.tar",
    ),
    "duplicate_class_tars": (
        "train", {dataset.TRAIN_ARCHIVE: synthetic.tar_bytes(
            [(f"{WNID}.tar", _class_tar()), (f"{WNID}.tar", _class_tar())])},
        [], "the same file name",
    ),
    "unexpected_validation_member": (
        "validation", {dataset.VALIDATION_ARCHIVE: _validation([VAL, "holiday.JPEG"])},
        [], "'holiday.JPEG' is not named ILSVRC2012_val_NNNNNNNN.JPEG",
    ),
    "duplicate_validation_members": (
        "validation", {dataset.VALIDATION_ARCHIVE: _validation([VAL, VAL])},
        [], "the same file name",
    ),
    "more_shards_than_images": (
        "validation", {dataset.VALIDATION_ARCHIVE: _validation([VAL])},
        ["--num_shards=5"], "--num_shards=5 is more than the 1 images",
    ),
    "member_name_not_utf8": (
        "test", {dataset.TEST_ARCHIVE_PATCHED: _non_utf8_test_tar()},
        [], "is not UTF-8",
    ),
    "unknown_runner": (
        "validation", {dataset.VALIDATION_ARCHIVE: _validation([VAL])},
        ["--runner=DirectRuner"], "--runner=DirectRuner is not a runner. Did you mean "
        "DirectRunner?",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_message_and_nothing_is_published(case, tmp_path):
    split, archives, flags, expected = CASES[case]
    manual = tmp_path / "manual"
    for name, data in archives.items():
        _write(manual, name, data)
    proc = convert(manual, tmp_path / "out", f"--splits={split}",
                   "--direct_running_mode=in_memory", *flags, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("INFO ")]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert errors and errors[0].startswith("error: "), proc.stderr[-3000:]
    message = "\n".join(errors)
    assert expected in message, message
    assert not os.path.exists(version_dir(tmp_path / "out"))
    staging = tmp_path / "out" / "imagenet2012" / ".5.1.0.incomplete"
    assert not staging.exists() or not any(staging.iterdir())


def test_debug_shows_the_traceback(tmp_path):
    _write(tmp_path / "manual", dataset.VALIDATION_ARCHIVE, _validation([VAL, "x.JPEG"]))
    proc = convert(tmp_path / "manual", tmp_path / "out", "--splits=validation",
                   "--direct_running_mode=in_memory", "--debug", check=False)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_a_broken_image_from_the_patch_is_blamed_on_the_patch(tmp_path):
    generated = synthetic.generate_manual_dir(
        str(tmp_path / "manual"), splits=("test",), test_archives=("2012", "patch")
    )
    patch = os.path.join(generated.manual_dir, synthetic.PATCH_ARCHIVE)
    with tarfile.open(patch) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    broken = names[0]
    entries = [(n, b"\xff\xd8\xff\xe0 not a whole JPEG" if n == broken else _jpeg(i))
               for i, n in enumerate(names)]
    _write(generated.manual_dir, synthetic.PATCH_ARCHIVE, synthetic.tar_bytes(entries))

    proc = convert(generated.manual_dir, tmp_path / "out", "--splits=test",
                   f"--test_patch={synthetic.PATCH_ARCHIVE}", "--direct_running_mode=in_memory",
                   check=False)
    assert proc.returncode == 2
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert error.startswith(f"error: test image {broken!r} in the test patch {patch} "), error
    assert "Traceback" not in proc.stderr


def test_environment_errors_name_the_file_they_are_about():
    import errno

    from imagenet_beam.errors import from_os_error

    full = from_os_error(OSError(errno.ENOSPC, "No space left on device", "/out/shard-1"), "/x")
    assert str(full).startswith("no space left on the output's device while writing /out/shard-1:")
    denied = from_os_error(OSError(errno.EACCES, "Permission denied"), "/out")
    assert str(denied) == ("cannot write /out (Permission denied): choose a data_dir this "
                           "user can write to")
    assert from_os_error(OSError(errno.EIO, "I/O error"), "/out") is None
