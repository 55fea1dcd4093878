"""TFDS's sibling datasets from the same archives: imagenet2012_subset (1pct, 10pct) and
imagenet2012_real, held byte for byte against TFDS's own builders run on the same
generated input.

TFDS's builders download SimCLR's list and ReaL's real.json; offline, the subprocess that
runs them answers their download manager's `download` with the files the user put in
manual_dir (what `--dataset` reads), and runs under the pure-Python protobuf runtime, as
tests/beam/test_tfds_identity.py explains.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from imagenet_beam import dataset, synthetic, synthetic_siblings
from tests.beam.test_tfds_identity import (
    GOLDEN_INPUT_KWARGS,
    PURE_PYTHON_PROTOBUF,
    shard_sha256,
)
from tests.conftest import convert, run_cli

_TFDS_BUILD = """
import sys
from google.protobuf.internal import api_implementation
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import download_manager

assert api_implementation.Type() == "python", api_implementation.Type()
manual_dir, data_dir, name, local = sys.argv[1:5]
# Offline: the one file the builder downloads is the one in manual_dir.
download_manager.DownloadManager.download = lambda self, url: local
builder = tfds.builder(name, data_dir=data_dir)
builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
print(builder.data_dir)
"""

SIBLINGS = {
    "imagenet2012_subset/1pct": ("1percent.txt", "imagenet2012_subset/1pct/5.0.0"),
    "imagenet2012_subset/10pct": ("10percent.txt", "imagenet2012_subset/10pct/5.0.0"),
    "imagenet2012_real": ("real.json", "imagenet2012_real/1.0.0"),
}


@pytest.fixture(scope="module")
def sibling_input(tmp_path_factory):
    manual = str(tmp_path_factory.mktemp("sibling_manual"))
    kwargs = {**GOLDEN_INPUT_KWARGS, "splits": (dataset.TRAIN, dataset.VALIDATION)}
    generated = synthetic.generate_manual_dir(manual, **kwargs)
    return generated, synthetic_siblings.write_sibling_files(manual, generated)


@pytest.mark.parametrize("name", sorted(SIBLINGS))
def test_sibling_shards_are_byte_identical_to_tfds_builders(name, sibling_input, tmp_path):
    generated, _ = sibling_input
    list_file, relative = SIBLINGS[name]
    theirs = tmp_path / "tfds"
    proc = subprocess.run(
        [sys.executable, "-c", _TFDS_BUILD, generated.manual_dir, str(theirs), name,
         os.path.join(generated.manual_dir, list_file)],
        capture_output=True, text=True, env={**os.environ, **PURE_PYTHON_PROTOBUF},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    ours = tmp_path / "ours"
    convert(generated.manual_dir, ours, f"--dataset={name}", "--num_shards=1")
    dataset_name = name.split("/")[0]
    tfds_digests = shard_sha256(str(theirs / relative), dataset_name)
    assert tfds_digests, f"TFDS wrote no shards for {name}"
    assert shard_sha256(str(ours / relative), dataset_name) == tfds_digests
    with open(ours / relative / "lineage.json") as f:
        lineage = json.load(f)
    assert (lineage["dataset"], lineage["version"]) == (name, relative.rsplit("/", 1)[1])
    assert lineage["options"]["dataset"] == name


def test_tfds_load_reads_the_siblings_by_name(sibling_input, tmp_path):
    """What users write: tfds.load(name, data_dir=...), no builder code of theirs."""
    import tensorflow_datasets as tfds

    generated, siblings = sibling_input
    for name in SIBLINGS:
        convert(generated.manual_dir, tmp_path, f"--dataset={name}")
    names = {
        config: {
            e["file_name"].decode() for e in tfds.as_numpy(tfds.load(
                f"imagenet2012_subset/{config}", data_dir=str(tmp_path), split="train"
            ))
        }
        for config in ("1pct", "10pct")
    }
    assert names == {c: set(listed) for c, listed in siblings.subsets.items()}
    real = {
        e["file_name"].decode(): (int(e["original_label"]), list(e["real_label"]))
        for e in tfds.as_numpy(
            tfds.load("imagenet2012_real", data_dir=str(tmp_path), split="validation")
        )
    }
    for m in generated.members:
        if m.split == dataset.VALIDATION:
            number = int(dataset.VALIDATION_NAME.fullmatch(m.file_name).group(1))
            assert real[m.file_name] == (m.label, siblings.real[number - 1])
    assert any(labels == [] for _, labels in real.values())
    assert any(len(labels) > 1 for _, labels in real.values())


def test_real_has_only_validation(sibling_input, tmp_path):
    generated, _ = sibling_input
    convert(generated.manual_dir, tmp_path, "--dataset=imagenet2012_real")
    assert sorted(os.listdir(tmp_path / "imagenet2012_real" / "1.0.0")) == sorted([
        "_COMPLETE", "dataset_info.json", "features.json", "lineage.json",
        "original_label.labels.txt", "real_label.labels.txt", "report.html", "report.png",
        "imagenet2012_real-validation.tfrecord-00000-of-00001",
    ])
    proc = run_cli("convert", f"--manual_dir={generated.manual_dir}",
                   f"--data_dir={tmp_path / 'x'}", "--dataset=imagenet2012_real",
                   "--splits=train", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "error: --splits=train: imagenet2012_real has only validation"
    ]


@pytest.mark.parametrize("name,missing", [
    ("imagenet2012_subset/10pct", "10percent.txt"), ("imagenet2012_real", "real.json"),
])
def test_a_missing_list_or_label_file_is_named_and_nothing_is_written(
    name, missing, tmp_path
):
    manual = str(tmp_path / "manual")
    synthetic.generate_manual_dir(manual, **{
        **GOLDEN_INPUT_KWARGS, "splits": (dataset.TRAIN, dataset.VALIDATION)
    })
    proc = convert(manual, tmp_path / "data", f"--dataset={name}", check=False)
    assert proc.returncode != 0
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert f"{name} also needs {missing}" in message
    assert "cannot be downloaded from here" in message
    assert not (tmp_path / "data").exists() or not any(
        (tmp_path / "data").glob(f"{name.split('/')[0]}/**/*-*")
    )


def test_a_changed_subset_list_converts_again(sibling_input, tmp_path):
    generated, siblings = sibling_input
    manual = tmp_path / "manual"
    manual.mkdir()
    for name in os.listdir(generated.manual_dir):
        os.symlink(os.path.join(generated.manual_dir, name), manual / name)
    data = tmp_path / "data"
    convert(str(manual), data, "--dataset=imagenet2012_subset/1pct")
    again = convert(str(manual), data, "--dataset=imagenet2012_subset/1pct")
    assert "is up to date" in again.stdout
    (manual / "1percent.txt").unlink()
    (manual / "1percent.txt").write_text("\n".join(siblings.subsets["1pct"][:2]) + "\n")
    changed = convert(str(manual), data, "--dataset=imagenet2012_subset/1pct", "--overwrite")
    assert "was made from other inputs or settings: converting" in changed.stderr
    with open(data / "imagenet2012_subset/1pct/5.0.0/lineage.json") as f:
        assert json.load(f)["splits"]["train"]["num_examples"] == 2
