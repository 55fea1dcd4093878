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


@pytest.fixture(scope="module")
def huggingface_dir(generated, tmp_path_factory):
    from imagenet_beam import synthetic_layouts

    root = str(tmp_path_factory.mktemp("hf_manual"))
    synthetic_layouts.write_layout(generated, "huggingface", root)
    return root


def test_the_huggingface_source_finds_its_archives_in_manual_dir_or_data(
    huggingface_dir, tmp_path
):
    import shutil

    from imagenet_beam.sources.huggingface import HuggingFaceSource
    from imagenet_beam.sources.tar import ArchiveError

    source = HuggingFaceSource()
    found, missing = source.find(huggingface_dir, ["train", "validation", "test"])
    data = os.path.join(huggingface_dir, "data")
    assert found["train"].archive == data and found["train"].layout == "huggingface"
    assert found["train"].paths == [os.path.join(data, f"train_images_{i}.tar.gz")
                                    for i in range(5)]
    assert found["validation"].paths == [os.path.join(data, "val_images.tar.gz")]
    assert missing == ["test: test_images.tar.gz"]

    shutil.copytree(data, tmp_path, dirs_exist_ok=True)
    os.remove(tmp_path / "train_images_3.tar.gz")
    found, missing = source.find(str(tmp_path), ["train", "validation"])
    assert set(found) == {"validation"}
    assert missing == [f"train: train_images_3.tar.gz (in {tmp_path})"]

    os.makedirs(tmp_path / "data")
    shutil.copy(os.path.join(data, "val_images.tar.gz"), tmp_path / "data")
    with pytest.raises(ArchiveError, match="validation split's archives twice"):
        source.find(str(tmp_path), ["validation"])


def test_unpacking_a_cut_archive_leaves_nothing_behind(huggingface_dir, tmp_path):
    from imagenet_beam.sources import packed
    from imagenet_beam.sources.huggingface import HuggingFaceSource
    from imagenet_beam.sources.tar import ArchiveError

    archive = tmp_path / "val_images.tar.gz"
    whole = open(os.path.join(huggingface_dir, "data", "val_images.tar.gz"), "rb").read()
    archive.write_bytes(whole[: len(whole) - 20])  # the tar's end and gzip's trailer cut
    work = tmp_path / "unpacked"
    with pytest.raises(ArchiveError, match="is not a complete .tar.gz archive"):
        packed.unpack_archive(HuggingFaceSource(), str(archive), ["validation"], str(work))
    assert os.listdir(work) == []

    archive.write_bytes(whole)
    [report] = packed.unpack_archive(
        HuggingFaceSource(), str(archive), ["validation"], str(work)
    ).values()
    assert report["num_members"] == 7 and report["archive"] == str(archive)
    assert packed.read_report(report["copy"]) == report
