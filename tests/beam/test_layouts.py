"""Every input layout gives the tarballs' shards, byte for byte: one generated image set,
written in each layout, converted with the command line."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from imagenet_beam import dataset, synthetic, synthetic_layouts
from tests.conftest import convert, published_shard_digests, version_dir

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
    return published_shard_digests(data_dir)


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
# --- the .tar.gz layouts: unpacked once, then read like tars ------------------------------


def _listed(strays: list[str], archive_prefix: str) -> list[str]:
    """The generator's strays as lineage lists them: a stray folder as the folder."""
    shown = set()
    for path in strays:
        inside = path[len(archive_prefix):]
        shown.add(inside.split("__MACOSX/")[0] + "__MACOSX/" if "__MACOSX/" in inside else inside)
    return sorted(shown)


def _rewrite_tar_gz(path, change) -> None:
    """The .tar.gz at `path` with its (name, bytes) members passed through `change`."""
    import tarfile

    with tarfile.open(path, "r:gz") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    with open(path, "wb") as f:
        f.write(synthetic_layouts.tar_gz_bytes(change(members)))


@pytest.mark.parametrize("data_subdir", [True, False])
def test_the_huggingface_archives_give_the_tarballs_shards(
    data_subdir, images, from_tarballs, tmp_path
):
    written = synthetic_layouts.write_layout(
        images, "huggingface", str(tmp_path / "in"), strays=True, data_subdir=data_subdir
    )
    convert(tmp_path / "in", tmp_path / "out", "--num_shards=2")
    assert _shards(tmp_path / "out") == from_tarballs
    lineage = _lineage(tmp_path / "out")
    rows = {a["name"]: a for a in lineage["archives"]}
    assert {f"huggingface:{s}" for s in SPLITS} <= set(rows)
    assert sum(rows[f"huggingface:{s}"]["num_members"] for s in SPLITS) == len(images.members)
    ignored = sorted(i for s in SPLITS for i in rows[f"huggingface:{s}"]["ignored"])
    prefix = "data/" if data_subdir else ""
    expected = sorted(
        p[len(prefix):].replace(".tar.gz/", ".tar.gz:", 1) for p in written.strays
    )
    assert ignored == _listed(expected, "")
    # each archive is checked (hashed) as it is: the user's .tar.gz, not the copy
    hashed = {a["path"] for a in lineage["archives"] if a["name"].endswith(".tar.gz")}
    assert hashed == {str(tmp_path / "in" / p) for p in written.files}
    assert lineage["inputs"]["validation"]["layout"] == "huggingface"

    # A re-run with the same archives unpacks nothing.
    again = convert(tmp_path / "in", tmp_path / "out", "--num_shards=2", "--force", "--debug")
    log = again.stdout + again.stderr
    assert "unpacking" not in log and "unpacked before" in log, log
    assert _shards(tmp_path / "out") == from_tarballs


def test_the_packed_kaggle_copy_gives_the_tarballs_shards(images, from_tarballs, tmp_path):
    written = synthetic_layouts.write_layout(
        images, "kaggle", str(tmp_path / "in"), strays=True, packed=True
    )
    convert(tmp_path / "in", tmp_path / "out", "--num_shards=2")
    assert _shards(tmp_path / "out") == from_tarballs
    rows = {a["name"]: a for a in _lineage(tmp_path / "out")["archives"]}
    assert set(rows) == {synthetic_layouts.KAGGLE_ARCHIVE} | {f"kaggle:{s}" for s in SPLITS}
    for split, folder in (("train", "train"), ("validation", "val"), ("test", "test")):
        prefix = f"{synthetic_layouts.KAGGLE_ARCHIVE}/ILSVRC/Data/CLS-LOC/{folder}/"
        mine = [p for p in written.strays if p.startswith(prefix)]
        assert mine and rows[f"kaggle:{split}"]["ignored"] == _listed(mine, prefix)


def test_the_kaggle_copy_extracted_and_packed_at_once_is_refused(images, tmp_path):
    synthetic_layouts.write_layout(images, "kaggle", str(tmp_path / "in"), splits=["test"])
    synthetic_layouts.write_layout(
        images, "kaggle", str(tmp_path / "in"), splits=["test"], packed=True
    )
    proc = convert(tmp_path / "in", tmp_path / "out", "--splits=test", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "ILSVRC/Data/CLS-LOC/test" in proc.stderr, proc.stderr
    assert synthetic_layouts.KAGGLE_ARCHIVE in proc.stderr


def test_a_huggingface_member_whose_suffix_is_no_wnid_is_an_error(images, tmp_path):
    synthetic_layouts.write_layout(
        images, "huggingface", str(tmp_path / "in"), splits=["train"], data_subdir=False
    )
    archive = tmp_path / "in" / "train_images_0.tar.gz"
    _rewrite_tar_gz(archive, lambda members: [
        *members, ("n01440764_7_n99999999.JPEG", members[0][1])
    ])
    proc = convert(tmp_path / "in", tmp_path / "out", "--splits=train", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "n01440764_7_n99999999.JPEG does not end in _<wnid>" in proc.stderr, proc.stderr
    assert str(archive) in proc.stderr
    assert not os.path.exists(version_dir(tmp_path / "out"))
    # nothing of it is left in the work dir (the other archives' copies are complete)
    left = os.listdir(tmp_path / "out" / ".imagenet2012-work" / "unpacked")
    assert not [n for n in left if "train_images_0" in n or n.endswith(".partial")], left
    assert len([n for n in left if n.endswith("-train.tar")]) == 4


def test_a_huggingface_validation_suffix_that_disagrees_fails_unless_trusted(images, tmp_path):
    synthetic_layouts.write_layout(
        images, "huggingface", str(tmp_path / "in"), splits=["validation"]
    )
    archive = tmp_path / "in" / "data" / "val_images.tar.gz"
    first = sorted(m.file_name for m in images.split("validation"))[0]
    stem = first.rsplit(".", 1)[0]
    wnid = dataset.validation_wnids()[int(stem.rsplit("_", 1)[1]) - 1]
    other = next(w for w in dataset.class_names() if w != wnid)
    _rewrite_tar_gz(archive, lambda members: [
        (name.replace(f"{stem}_{wnid}", f"{stem}_{other}"), data) for name, data in members
    ])
    proc = convert(tmp_path / "in", tmp_path / "out", "--splits=validation", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"validation image {first} is {other} in {archive}" in proc.stderr, proc.stderr
    assert wnid in proc.stderr and "--trust_layout_labels" in proc.stderr
    assert not os.path.exists(version_dir(tmp_path / "out"))

    convert(tmp_path / "in", tmp_path / "out", "--splits=validation", "--trust_layout_labels")
    lineage = _lineage(tmp_path / "out")
    [row] = [a for a in lineage["archives"] if a["name"] == "huggingface:validation"]
    assert row["labels_from_layout"] == [{"file_name": first, "layout": other, "tfds": wnid}]
    from tests.conftest import read_tfrecord_examples

    examples = read_tfrecord_examples(version_dir(tmp_path / "out"), "validation")
    assert examples[first][0] == dataset.class_index()[other]


def test_a_packed_kaggle_solution_that_disagrees_names_the_image_and_both_labels(
    images, tmp_path
):
    synthetic_layouts.write_layout(
        images, "kaggle", str(tmp_path / "in"), splits=["validation"], packed=True
    )
    archive = tmp_path / "in" / synthetic_layouts.KAGGLE_ARCHIVE
    changed = {}

    def relabel(members):
        out = []
        for name, data in members:
            if name == synthetic_layouts.KAGGLE_VAL_SOLUTION:
                rows = data.decode().splitlines()
                image, boxes = rows[1].split(",", 1)
                wnid = boxes.split()[0]
                other = next(w for w in dataset.class_names() if w != wnid)
                changed.update(image=image, wnid=wnid, other=other)
                data = "\n".join([rows[0], f"{image},{boxes.replace(wnid, other)}",
                                  *rows[2:]]).encode()
            out.append((name, data))
        return out

    _rewrite_tar_gz(archive, relabel)
    proc = convert(tmp_path / "in", tmp_path / "out", "--splits=validation", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert (f"{changed['image']}.JPEG is {changed['other']} in LOC_val_solution.csv in "
            f"{archive}") in proc.stderr, proc.stderr
    assert changed["wnid"] in proc.stderr


def test_a_truncated_tar_gz_is_refused(images, tmp_path):
    synthetic_layouts.write_layout(
        images, "huggingface", str(tmp_path / "in"), splits=["validation"]
    )
    archive = tmp_path / "in" / "data" / "val_images.tar.gz"
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    proc = convert(tmp_path / "in", tmp_path / "out", "--splits=validation", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"{archive} is not a complete tar archive" in proc.stderr, proc.stderr
    assert "download it again" in proc.stderr
    assert not os.path.exists(version_dir(tmp_path / "out"))


def test_counts_are_checked_for_packed_archives(images, tmp_path):
    synthetic_layouts.write_layout(images, "huggingface", str(tmp_path / "in"), splits=["test"])
    proc = convert(tmp_path / "in", tmp_path / "out", "--splits=test",
                   "--verify_checksums=true", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"{len(images.split('test'))} test images, not 100,000" in proc.stderr, proc.stderr
    assert "turn off verify_checksums" in proc.stderr
