"""The output's place misbehaving: read-only, too small from the start, full half way.

Real file systems: each test mounts a small tmpfs (root and mount rights needed, as on
the project's machines and CI; skipped, saying why, elsewhere)."""

from __future__ import annotations

import errno
import os
import subprocess
import time

import pytest

from tests.conftest import convert, paused, run_cli, start_convert, version_dir


@pytest.fixture
def mount_tmpfs(tmp_path):
    mounted = []

    def mount(name: str, size: int, *, read_only: bool = False) -> str:
        point = tmp_path / name
        point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()})")
        mounted.append(point)
        return str(point)

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _archives_size(manual_dir) -> int:
    return sum(os.path.getsize(os.path.join(manual_dir, n)) for n in os.listdir(manual_dir))


def _fill(path: str, leave: int) -> None:
    """Take all but `leave` bytes of the free space of `path`'s file system, as another
    program would (a full device at the first try leaves `leave` bytes free, too)."""
    with open(path, "wb") as f:
        try:
            fs = os.statvfs(os.path.dirname(path))
            f.write(b"\0" * max(0, fs.f_bavail * fs.f_frsize - leave))
            f.flush()
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            f.truncate(max(0, os.fstat(f.fileno()).st_size - leave))


def _one_error_line(proc) -> str:
    """The one `error:` line the run ended with (after its log lines), no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and sum("error" in line.lower() for line in lines) == 1
    return lines[-1]


def test_a_read_only_output_is_refused_before_any_work(busy_input, mount_tmpfs):
    out = mount_tmpfs("ro", 1 << 20, read_only=True)
    message = _one_error_line(convert(busy_input, f"{out}/data", "--splits=validation",
                                      check=False))
    assert f"cannot write {out}/data (Read-only file system)" in message


def test_too_little_space_is_refused_before_the_archives_are_read(busy_input, mount_tmpfs):
    out = mount_tmpfs("small", 1 << 20)
    message = _one_error_line(convert(busy_input, out, "--splits=train,validation", check=False))
    assert "not enough space for the output" in message and "1.0 MB free" in message
    assert "hashing" not in message
    assert not os.path.exists(os.path.join(out, "imagenet2012", "5.1.0"))
    assert not os.path.exists(os.path.join(out, ".imagenet2012-work"))  # nothing hashed


def test_a_disk_that_fills_half_way_says_how_much_is_needed_and_leaves_nothing(
    busy_input, mount_tmpfs
):
    needed = _archives_size(busy_input)
    out = mount_tmpfs("fills", int(needed * 1.5))
    first = start_convert(busy_input, out)
    staged = os.path.join(out, "imagenet2012", ".5.1.0.incomplete", "_work")
    deadline = time.monotonic() + 300
    while not os.path.isdir(staged):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.02)
    filler = os.path.join(out, "someone-elses-file")
    with paused(first):  # another program takes nearly all the space that is left
        _fill(filler, leave=64 << 10)
    out_text, err = first.communicate(timeout=600)
    first.stdout, first.stderr = out_text, err
    message = _one_error_line(first)
    assert message.startswith("error: no space left on the output's device")
    assert f"this conversion needs about {needed / 1e6:.1f} MB free in" in message
    assert ".5.1.0.incomplete's file system" in message
    assert not os.path.exists(os.path.join(out, "imagenet2012", ".5.1.0.incomplete"))
    assert not os.path.exists(version_dir(out))
    assert os.path.exists(filler)  # not ours: kept
    os.remove(filler)
    convert(busy_input, out, "--splits=train,validation")
    run_cli("verify", version_dir(out))


def test_a_device_full_before_the_first_step_says_how_much_is_needed(busy_input, mount_tmpfs):
    """The DAG's convert task (`--stage_only`) starts after plan_conversion checked the
    free space; a device filled meanwhile fails the launcher's own first writes into
    staging, which say what a step's full disk says, with how much is needed."""
    out = mount_tmpfs("full-at-start", 512 << 10)
    message = _one_error_line(convert(busy_input, out, "--splits=validation", "--stage_only",
                                      check=False))
    assert message.startswith("error: no space left on the output's device")
    needed = os.path.getsize(os.path.join(busy_input, "ILSVRC2012_img_val.tar"))
    assert f"this conversion needs about {needed / 1e6:.1f} MB free in" in message
    assert not os.path.exists(version_dir(out))
