"""SIGKILL at each step of a command line conversion: nothing half-made is visible, the
lease dies with the process, and the re-run writes the same bytes as an undisturbed run."""

from __future__ import annotations

import glob
import hashlib
import os
import signal
import time

import pytest

from imagenet_beam import synthetic
from imagenet_beam.layout import OutputLayout
from tests.conftest import convert, start_convert, version_dir


def _shards(data_dir) -> dict[str, str]:
    return {
        os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest()
        for p in glob.glob(os.path.join(version_dir(data_dir), "imagenet2012-*"))
    }


@pytest.fixture(scope="module")
def kill_input(tmp_path_factory):
    manual = tmp_path_factory.mktemp("kill_input")
    synthetic.generate_manual_dir(str(manual), num_classes=6, train_per_class=20,
                                  num_validation=30, splits=("train", "validation"))
    return manual


@pytest.fixture(scope="module")
def undisturbed(kill_input, tmp_path_factory):
    data = tmp_path_factory.mktemp("undisturbed")
    convert(kill_input, data, "--splits=train,validation", "--num_shards=3")
    return _shards(data)


def _lease_taken(data):
    path = OutputLayout(str(data)).lease_file
    return os.path.exists(path) and os.path.getsize(path) > 0


def _checked(data):
    return bool(glob.glob(os.path.join(data, ".imagenet2012-work", "archive-checks", "*")))


def _staging(data):
    return os.path.exists(os.path.join(data, "imagenet2012", ".5.1.0.incomplete", "_work"))


def _indexed(data):
    return bool(glob.glob(os.path.join(data, "imagenet2012", ".5.1.0.incomplete", "_work",
                                       "index", "*")))


def _a_shard_written(data):
    return bool(glob.glob(os.path.join(data, "imagenet2012", ".5.1.0.incomplete", "_work",
                                       "shards", "*")))


def _metadata_staged(data):
    return os.path.exists(os.path.join(data, "imagenet2012", ".5.1.0.incomplete",
                                       "dataset_info.json"))


@pytest.mark.parametrize("point", [_lease_taken, _checked, _staging, _indexed,
                                   _a_shard_written, _metadata_staged],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_kill_leaves_nothing_visible_and_the_rerun_writes_the_same_bytes(
    kill_input, undisturbed, tmp_path, point
):
    data = str(tmp_path / "data")
    proc = start_convert(kill_input, data, "--num_shards=3")
    deadline = time.monotonic() + 300
    while not point(data):
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {point.__name__}: {proc.communicate()}")
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # A version is visible only complete: TFDS's file and ours appear with the marker.
    final = version_dir(data)
    assert not os.path.exists(final) or os.path.exists(os.path.join(final, "_COMPLETE"))
    convert(kill_input, data, "--splits=train,validation", "--num_shards=3")
    assert _shards(data) == undisturbed
