"""Input layouts: what each split needs, and what is missing (the tarballs today)."""

from __future__ import annotations

import os

import pytest

from imagenet_beam import dataset, synthetic
from imagenet_beam.sources import tarballs


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("sources_manual")),
        num_classes=3, train_per_class=4, num_validation=7, splits=("train", "validation"),
    )


def test_the_tarball_source_finds_what_each_split_needs(generated, tmp_path):
    source = tarballs.TarballSource()
    found, missing = source.find(generated.manual_dir, ["train", "validation", "test"])
    assert set(found) == {"train", "validation"}
    assert found["train"].paths == [os.path.join(generated.manual_dir, dataset.TRAIN_ARCHIVE)]
    assert missing == [
        f"test: {dataset.TEST_ARCHIVE_PATCHED} or {dataset.TEST_ARCHIVE_2012}"
    ]
    _, missing = source.find(generated.manual_dir, ["test"], test_patch="patch.tar")
    assert missing == [
        f"test: {dataset.TEST_ARCHIVE_PATCHED} or {dataset.TEST_ARCHIVE_2012} + patch.tar"
    ]
    message = source.missing_message(generated.manual_dir, missing)
    assert "image-net.org" in message and generated.manual_dir in message


def test_the_tarball_source_prefers_the_patched_test_tar(tmp_path):
    made = synthetic.generate_manual_dir(
        str(tmp_path), splits=("test",), test_archives=("2012", "patch", "patched")
    )
    source = tarballs.TarballSource()
    found, _ = source.find(made.manual_dir, ["test"], test_patch=synthetic.PATCH_ARCHIVE)
    assert found["test"].archive.endswith(dataset.TEST_ARCHIVE_PATCHED)
    assert found["test"].patch is None
    os.remove(os.path.join(made.manual_dir, dataset.TEST_ARCHIVE_PATCHED))
    found, _ = source.find(made.manual_dir, ["test"], test_patch=synthetic.PATCH_ARCHIVE)
    assert found["test"].archive.endswith(dataset.TEST_ARCHIVE_2012)
    assert found["test"].patch.endswith(synthetic.PATCH_ARCHIVE)
    found, _ = source.find(made.manual_dir, ["test"], test_archive=synthetic.PATCH_ARCHIVE)
    assert found["test"].archive.endswith(synthetic.PATCH_ARCHIVE)  # named: taken as it is
