"""Extracted layouts on a real GCS JSON API server on localhost: an ImageFolder tree under a
gs:// manual_dir converts into a gs:// data_dir with the local tarballs' shards; the tree's
manifest is cached in the bucket, so a re-run hashes nothing."""

from __future__ import annotations

import json
import os

import pytest

from imagenet_beam import storage, synthetic, synthetic_layouts
from tests.conftest import (
    convert,
    gcs_client,
    layout_images,
    published_shard_digests,
    shard_digests,
)

VERSION = "imagenet2012/5.1.0"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return layout_images(str(tmp_path_factory.mktemp("gcs_layouts_tarballs")))


@pytest.fixture(scope="module")
def from_tarballs(images, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("gcs_layouts_local_out")
    convert(images.manual_dir, data_dir, f"--test_patch={synthetic.PATCH_ARCHIVE}",
            "--num_shards=2")
    return published_shard_digests(data_dir)


def _upload_tree(local_dir: str, destination: str) -> int:
    """Every file below local_dir, as objects below destination (no folder placeholders,
    as `gcloud storage cp -r` makes them). Returns how many."""
    count = 0
    for root, _, files in os.walk(local_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), local_dir).replace(os.sep, "/")
            storage.upload_file(os.path.join(root, name), storage.join(destination, rel))
            count += 1
    return count


def _blobs(prefix: str) -> dict[str, bytes]:
    bucket_name, _, path = prefix[len("gs://"):].partition("/")
    bucket = gcs_client().bucket(bucket_name)
    start = len(path) + 1 if path else 0
    return {b.name[start:]: b.download_as_bytes()
            for b in bucket.list_blobs(prefix=path + "/" if path else None)}


def test_storage_lists_one_level_of_a_gcs_prefix(gcs_bucket, tmp_path):
    base = storage.join(gcs_bucket, "tree")
    storage.write_bytes(storage.join(base, "train", "n01440764", "a.JPEG"), b"a" * 10)
    storage.write_bytes(storage.join(base, "train", "n01440764", "b.JPEG"), b"b" * 20)
    storage.write_bytes(storage.join(base, "train", ".DS_Store"), b"x")
    storage.write_bytes(storage.join(base, "train", "n01443537", "c.JPEG"), b"c")
    storage.write_bytes(storage.join(base, "trainee.txt"), b"not below train/")
    # the zero-byte "folder" objects the Cloud Console and some copy tools create
    bucket = gcs_client().bucket(gcs_bucket[len("gs://"):])
    for placeholder in ("tree/train/", "tree/train/n01440764/", "tree/empty/"):
        bucket.blob(placeholder).upload_from_string(b"")

    files, dirs = storage.list_dir(storage.join(base, "train"))
    assert [f.name for f in files] == [".DS_Store"] and dirs == ["n01440764", "n01443537"]
    files, dirs = storage.list_dir(storage.join(base, "train", "n01440764") + "/")
    assert [(f.name, f.size) for f in files] == [("a.JPEG", 10), ("b.JPEG", 20)]
    assert dirs == [] and all(f.version > 0 for f in files)
    # the version is the object's generation: a rewrite changes it
    storage.write_bytes(storage.join(base, "train", "n01440764", "a.JPEG"), b"A" * 10)
    again, _ = storage.list_dir(storage.join(base, "train", "n01440764"))
    assert again[0].version != files[0].version and again[1].version == files[1].version
    assert storage.list_dir(storage.join(base, "nothing")) == ([], [])

    assert storage.is_dir(storage.join(base, "train"))
    assert storage.is_dir(storage.join(base, "train", "n01440764"))
    assert not storage.is_dir(storage.join(base, "trai"))  # a prefix of a name is no folder
    assert not storage.is_dir(storage.join(base, "trainee.txt"))  # a file is no folder
    assert not storage.is_dir(storage.join(base, "nothing"))
    assert storage.is_dir(storage.join(base, "empty"))  # a folder made in the console
    assert storage.list_dir(storage.join(base, "empty")) == ([], [])
    assert storage.list_dir(base)[1] == ["empty", "train"]


def test_a_gcs_imagefolder_tree_gives_the_local_tarballsshard_digests(images, from_tarballs,
                                                                 gcs_bucket, tmp_path):
    # class tars in train/ (read by offset with ranged GETs), class folders in val/
    written = synthetic_layouts.write_layout(
        images, "imagefolder", str(tmp_path / "tree"), val_class_folders=True, strays=True,
        train_tars=True,
    )
    manual = storage.join(gcs_bucket, "imagenet", "extracted")
    uploaded = _upload_tree(str(tmp_path / "tree"), manual)
    assert uploaded == len(written.files)
    data_dir = storage.join(gcs_bucket, "tfds")

    first = convert(manual, data_dir, "--num_shards=2", "--debug")
    remote = _blobs(f"{data_dir}/{VERSION}")
    lineage = json.loads(remote["lineage.json"])
    assert shard_digests(lineage) == from_tarballs
    trees = {a["name"]: a for a in lineage["archives"]}
    assert set(trees) == {"imagefolder:train", "imagefolder:validation", "imagefolder:test"}
    assert trees["imagefolder:validation"]["path"] == f"{manual}/val"
    assert sum(t["num_members"] for t in trees.values()) == len(images.members)
    assert any(t["ignored"] for t in trees.values())  # the strays, left out
    log = first.stdout + first.stderr
    hashed = [line for line in log.splitlines() if ": hashing " in line]
    # every file once: the images of val/ and test/, the class tars whole (not the strays)
    files = set(written.files) - set(written.strays)
    assert any(f.startswith("train/") and f.endswith(".tar") for f in files)
    assert sum(int(line.split("hashing ")[1].split()[0]) for line in hashed) == len(files), hashed
    # the manifest cache lives beside the data, in the bucket
    work = _blobs(f"{data_dir}/.imagenet2012-work/archive-checks")
    assert len([n for n in work if n.startswith("tree-")]) == 3, sorted(work)

    # A re-run reads the listing and the cached manifests: nothing hashed again.
    again = convert(manual, data_dir, "--num_shards=2", "--force", "--debug")
    log = again.stdout + again.stderr
    assert "hashing" not in log, [line for line in log.splitlines() if "hashing" in line]
    lineage = json.loads(_blobs(f"{data_dir}/{VERSION}")["lineage.json"])
    assert shard_digests(lineage) == from_tarballs

    # One rewritten image (a new generation, same bytes) is hashed again, alone.
    name = next(p for p in written.files if p.startswith("test/") and p.endswith(".JPEG"))
    storage.upload_file(str(tmp_path / "tree" / name), storage.join(manual, name))
    third = convert(manual, data_dir, "--num_shards=2", "--force", "--debug")
    log = third.stdout + third.stderr
    wanted = f"{manual}/test: hashing 1 of {len(images.split('test'))} files"
    assert wanted in log, [line for line in log.splitlines() if "hashing" in line]
