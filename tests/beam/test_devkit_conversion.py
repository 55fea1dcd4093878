"""The ILSVRC devkit as an optional input of a conversion: checked like the archives, the
validation labels cross-checked against its ground truth, the class names and the train
counts it states recorded in lineage and the report."""

from __future__ import annotations

import json
import os

import pytest

from imagenet_beam import dataset, synthetic, synthetic_devkit
from imagenet_beam.sources import devkit
from tests.conftest import convert, version_dir


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("devkit_manual")),
        num_classes=3, train_per_class=4, num_validation=9, splits=("train", "validation"),
    )


def _lineage(data_dir) -> dict:
    with open(os.path.join(version_dir(data_dir), "lineage.json")) as f:
        return json.load(f)


def test_with_the_devkit_lineage_has_the_class_names_and_the_train_count_differences(
    images, tmp_path
):
    train = images.split("train")
    counts = {}
    for m in train:
        wnid = m.file_name.split("_")[0]
        counts[wnid] = counts.get(wnid, 0) + 1
    first = sorted(counts)[0]
    stated = dict(counts, **{first: counts[first] + 1})  # one class short of what it states
    kit = synthetic_devkit.write_devkit(images.manual_dir, generated=images,
                                        num_train_images=stated)
    try:
        proc = convert(images.manual_dir, tmp_path / "out", "--splits=train,validation")
        assert "the devkit" in proc.stderr and "ground truth" in proc.stderr
        lineage = _lineage(tmp_path / "out")
        read = devkit.read_devkit(kit.path)
        classes = lineage["classes"]
        assert classes["names_from"] == kit.path
        assert classes["names"] == list(read.words_by_label())
        assert len(classes["names"]) == dataset.NUM_CLASSES
        # every class without images differs (the devkit states 0 for them only when so)
        differing = {d["wnid"]: d for d in classes["train_count_differences"]}
        assert differing[first] == {
            "wnid": first, "examples": counts[first], "devkit_num_train_images": counts[first] + 1
        }
        assert not set(counts) - {first} & set(differing)
        assert dataset.DEVKIT_ARCHIVE in {a["name"] for a in lineage["archives"]}
        with open(os.path.join(version_dir(tmp_path / "out"), "report.html")) as f:
            html = f.read()
        assert "names from the devkit" in html and first in html
    finally:
        os.remove(kit.path)


def test_a_validation_label_the_devkit_contradicts_fails_naming_the_image(images, tmp_path):
    manual = tmp_path / "manual"
    os.makedirs(manual)
    os.symlink(os.path.join(images.manual_dir, dataset.VALIDATION_ARCHIVE),
               manual / dataset.VALIDATION_ARCHIVE)
    number = int(dataset.VALIDATION_NAME.fullmatch(
        images.split("validation")[0].file_name).group(1))
    synthetic_devkit.write_devkit(str(manual), generated=images, wrong_ground_truth=[number])
    proc = convert(manual, tmp_path / "out", "--splits=validation", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"ILSVRC2012_val_{number:08d}.JPEG" in proc.stderr, proc.stderr
    assert "devkit's ground truth" in proc.stderr
    assert not os.path.exists(version_dir(tmp_path / "out"))


def test_without_the_devkit_nothing_is_asked_of_it(images, tmp_path):
    proc = convert(images.manual_dir, tmp_path / "out", "--splits=validation")
    assert "no devkit (optional" in proc.stderr
    assert _lineage(tmp_path / "out")["classes"] is None
