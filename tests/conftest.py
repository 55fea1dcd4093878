"""Shared fixtures: generated ImageNet-shaped inputs and runs of the real pipeline."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m imagenet_beam ...` in a fresh process, as a user runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "imagenet_beam", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"imagenet_beam {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-5000:]}"
        )
    return proc


def convert(manual_dir, data_dir, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli(
        "convert",
        f"--manual_dir={manual_dir}",
        f"--data_dir={data_dir}",
        "--runner=DirectRunner",
        *extra,
        check=check,
    )


def version_dir(data_dir) -> str:
    return os.path.join(str(data_dir), "imagenet2012", "5.1.0")


def read_tfrecord_examples(version_path: str, split: str) -> dict[str, tuple[int, bytes]]:
    """file_name → (label, image bytes), read with tf.data from the split's shards."""
    import glob

    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(version_path, f"imagenet2012-{split}.tfrecord-*")))
    assert files, f"no {split} shards in {version_path}"
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "file_name": tf.io.FixedLenFeature([], tf.string),
    }
    out = {}
    for raw in tf.data.TFRecordDataset(files):
        ex = tf.io.parse_single_example(raw, spec)
        out[ex["file_name"].numpy().decode()] = (int(ex["label"].numpy()), ex["image"].numpy())
    return out


@pytest.fixture(scope="session")
def awkward_input(tmp_path_factory):
    """Every awkward (but valid) member real ImageNet has; test tar as TFDS expects it."""
    from imagenet_beam import synthetic

    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("awkward_manual")),
        awkward=True,
        test_archives=("2012",),
    )


@pytest.fixture(scope="session")
def tfrecord_output(awkward_input, tmp_path_factory):
    """The pipeline on the awkward input, on two worker processes, as TFRecord."""
    data_dir = tmp_path_factory.mktemp("tfrecord_out")
    proc = convert(
        awkward_input.manual_dir,
        data_dir,
        "--file_format=tfrecord",
        "--num_shards=3",
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
    )
    return version_dir(data_dir), proc
