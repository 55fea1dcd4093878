"""Every input layout gives the tarballs' shards, byte for byte: one generated image set,
written in each layout, converted with the command line."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from imagenet_beam import dataset, synthetic, synthetic_layouts
from tests.conftest import convert, version_dir

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Awkward images included (CMYK, PNG in a .JPEG: fixed the same way from any layout);
    the test split generated with its patch, as every other layout holds it patched."""
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("layout_tarballs")),
        num_classes=4, train_per_class=5, num_validation=10, num_test=6, num_patched=2,
        awkward=["cmyk_tfds_name", "png_other_name", "grayscale"],
        test_archives=("2012", "patch"),
    )


def _shards(data_dir) -> dict[str, list[str]]:
    with open(os.path.join(version_dir(data_dir), "lineage.json")) as f:
        lineage = json.load(f)
    return {
        split: [s["sha256"] for s in info["shards"]] for split, info in lineage["splits"].items()
    }


def _lineage(data_dir) -> dict:
    with open(os.path.join(version_dir(data_dir), "lineage.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def from_tarballs(images, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("layout_tarballs_out")
    convert(images.manual_dir, data_dir, f"--test_patch={synthetic.PATCH_ARCHIVE}",
            "--num_shards=2")
    return _shards(data_dir)


IMAGEFOLDER_VARIANTS = {
    "flat_val": {},
    "class_val_tars": {"val_class_folders": True, "train_tars": True},
    "validation_named": {"val_folder_name": "validation", "strays": True},
}


@pytest.mark.parametrize("variant", sorted(IMAGEFOLDER_VARIANTS))
def test_an_imagefolder_tree_gives_the_tarballs_shards(variant, images, from_tarballs, tmp_path):
    written = synthetic_layouts.write_layout(
        images, "imagefolder", str(tmp_path / "in"), **IMAGEFOLDER_VARIANTS[variant]
    )
    proc = convert(tmp_path / "in", tmp_path / "out", "--num_shards=2")
    assert _shards(tmp_path / "out") == from_tarballs
    lineage = _lineage(tmp_path / "out")
    trees = {a["name"]: a for a in lineage["archives"]}
    assert set(trees) == {f"imagefolder:{s}" for s in SPLITS}
    assert sum(t["num_members"] for t in trees.values()) == len(images.members)
    ignored = sorted(
        f"{split}/{path}" for t in trees.values() for split in [t["name"].split(":")[1]]
        for path in t["ignored"]
    )
    # every stray the generator wrote, and nothing else, is listed as left out
    folder = {"train": "train", "validation": written.variant.get("val_folder_name", "val"),
              "test": "test"}
    # a stray folder is listed as the folder
    expected = sorted({
        p.split("__MACOSX/")[0] + "__MACOSX/" if "__MACOSX/" in p else p for p in written.strays
    })
    got = sorted(p.replace("validation/", f"{folder['validation']}/", 1) for p in ignored)
    if variant == "validation_named":
        assert expected and got == expected, proc.stdout
    else:
        assert got == [] == expected


def test_a_class_folder_that_is_no_wnid_is_an_error(images, tmp_path):
    synthetic_layouts.write_layout(images, "imagefolder", str(tmp_path / "in"), splits=["train"])
    os.makedirs(tmp_path / "in" / "train" / "n99999999")
    shutil.copy(next((tmp_path / "in" / "train").glob("n0*/*.JPEG")),
                tmp_path / "in" / "train" / "n99999999" / "x.JPEG")
    proc = convert(tmp_path / "in", tmp_path / "out", "--splits=train", check=False)
    assert proc.returncode != 0
    assert "n99999999/ is no ILSVRC 2012 class" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(version_dir(tmp_path / "out"))


def test_a_validation_folder_label_that_disagrees_fails_unless_trusted(images, tmp_path):
    synthetic_layouts.write_layout(
        images, "imagefolder", str(tmp_path / "in"), splits=["validation"],
        val_class_folders=True,
    )
    val = tmp_path / "in" / "val"
    first = sorted(val.glob("*/*.JPEG"))[0]
    wnid = first.parent.name
    other = next(w for w in dataset.class_names() if w != wnid)
    os.makedirs(val / other)
    shutil.move(first, val / other / first.name)

    proc = convert(tmp_path / "in", tmp_path / "out", "--splits=validation", check=False)
    assert proc.returncode != 0
    assert first.name in proc.stderr and wnid in proc.stderr and other in proc.stderr
    assert "--trust_layout_labels" in proc.stderr and "Traceback" not in proc.stderr

    convert(tmp_path / "in", tmp_path / "out", "--splits=validation", "--trust_layout_labels")
    lineage = _lineage(tmp_path / "out")
    [tree] = lineage["archives"]
    assert tree["labels_from_layout"] == [
        {"file_name": first.name, "layout": other, "tfds": wnid}
    ]
    assert lineage["options"]["trust_layout_labels"] is True


def test_counts_are_checked_for_an_extracted_tree(images, tmp_path):
    synthetic_layouts.write_layout(images, "imagefolder", str(tmp_path / "in"), splits=["test"])
    proc = convert(tmp_path / "in", tmp_path / "out", "--splits=test",
                   "--verify_checksums=true", check=False)
    assert proc.returncode != 0
    assert f"{len(images.split('test'))} test images, not 100,000" in proc.stderr, proc.stderr
    assert "turn off verify_checksums" in proc.stderr


def test_a_rerun_does_not_hash_the_tree_again(images, tmp_path):
    synthetic_layouts.write_layout(images, "imagefolder", str(tmp_path / "in"), splits=["test"])
    first = convert(tmp_path / "in", tmp_path / "out", "--splits=test", "--debug")
    count = len(images.split("test"))
    assert f"hashing {count} of {count} files" in first.stdout + first.stderr
    again = convert(tmp_path / "in", tmp_path / "out", "--splits=test", "--force", "--debug")
    assert "hashing" not in again.stdout + again.stderr
    # one changed image is hashed again, and changes the fingerprint
    image = sorted((tmp_path / "in" / "test").glob("*.JPEG"))[0]
    image.write_bytes(image.read_bytes() + b"\0")
    third = convert(tmp_path / "in", tmp_path / "out", "--splits=test", "--overwrite", "--debug")
    assert f"hashing 1 of {count} files" in third.stdout + third.stderr
    assert "up to date" not in third.stdout


def test_the_kaggle_copy_gives_the_tarballs_shards(images, from_tarballs, tmp_path):
    synthetic_layouts.write_layout(images, "kaggle", str(tmp_path / "in"), strays=True)
    convert(tmp_path / "in", tmp_path / "out", "--num_shards=2")
    assert _shards(tmp_path / "out") == from_tarballs
    trees = {a["name"]: a for a in _lineage(tmp_path / "out")["archives"]}
    assert set(trees) == {f"kaggle:{s}" for s in SPLITS}
    assert all(t["ignored"] for t in trees.values())


def test_a_kaggle_solution_that_disagrees_names_the_image_and_both_labels(images, tmp_path):
    synthetic_layouts.write_layout(images, "kaggle", str(tmp_path / "in"), splits=["validation"])
    solution = tmp_path / "in" / "LOC_val_solution.csv"
    rows = solution.read_text().splitlines()
    image, boxes = rows[1].split(",", 1)
    wnid = boxes.split()[0]
    other = next(w for w in dataset.class_names() if w != wnid)
    solution.write_text("\n".join([rows[0], f"{image},{boxes.replace(wnid, other)}", *rows[2:]]))
    proc = convert(tmp_path / "in", tmp_path / "out", "--splits=validation", check=False)
    assert proc.returncode != 0
    assert f"{image}.JPEG is {other} in" in proc.stderr and wnid in proc.stderr, proc.stderr
    assert "LOC_val_solution.csv" in proc.stderr and "Traceback" not in proc.stderr


def test_one_split_in_two_layouts_is_refused_naming_both(images, tmp_path):
    synthetic_layouts.write_layout(images, "imagefolder", str(tmp_path / "in"),
                                   splits=["validation"])
    shutil.copy(os.path.join(images.manual_dir, dataset.VALIDATION_ARCHIVE), tmp_path / "in")
    proc = convert(tmp_path / "in", tmp_path / "out", "--splits=validation", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "holds the validation split twice" in proc.stderr, proc.stderr
    assert dataset.VALIDATION_ARCHIVE in proc.stderr and str(tmp_path / "in" / "val") in proc.stderr
    # --layout chooses
    convert(tmp_path / "in", tmp_path / "out", "--splits=validation", "--layout=imagefolder")
    assert _lineage(tmp_path / "out")["inputs"]["validation"]["layout"] == "imagefolder"


def test_a_file_in_a_class_folder_that_is_no_image_follows_on_corrupt(images, tmp_path):
    synthetic_layouts.write_layout(images, "imagefolder", str(tmp_path / "in"), splits=["train"])
    folder = sorted((tmp_path / "in" / "train").glob("n*"))[0]
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4 not an image")
    proc = convert(tmp_path / "in", tmp_path / "out", "--splits=train", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "notes.pdf" in proc.stderr and "--on_corrupt=skip" in proc.stderr, proc.stderr
    assert not os.path.exists(version_dir(tmp_path / "out"))
    convert(tmp_path / "in", tmp_path / "out", "--splits=train", "--on_corrupt=skip")
    skipped = _lineage(tmp_path / "out")["skipped_images"]
    assert [s["file_name"] for s in skipped] == ["notes.pdf"]


def test_what_is_missing_is_said_in_the_words_of_the_layout_found(images, tmp_path):
    synthetic_layouts.write_layout(images, "imagefolder", str(tmp_path / "in"), splits=["train"])
    proc = convert(tmp_path / "in", tmp_path / "out", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "(an extracted ImageFolder tree)" in proc.stderr, proc.stderr
    assert "validation: a folder val/ or validation/" in proc.stderr
    assert "test: a folder test/" in proc.stderr
    assert "point manual_dir at the folder holding train/" in proc.stderr
