"""report.html and report.png: written with every publication, and by `report` for any
published version (ours or one TFDS built itself), read from lineage and a few records."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from imagenet_beam import dataset, synthetic
from tests.conftest import convert, run_cli, version_dir

DATA_URI = re.compile(r'src="data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A conversion with fixed (CMYK, PNG) and skipped (truncated) images, two shards."""
    generated = synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("manual")), awkward=True, broken=("truncated",),
        test_archives=("2012",),
    )
    data_dir = tmp_path_factory.mktemp("data")
    convert(generated.manual_dir, data_dir, "--num_shards=2", "--on_corrupt=skip")
    return version_dir(data_dir)


def _inline_images(page: str) -> list[Image.Image]:
    images = []
    for _, payload in DATA_URI.findall(page):
        image = Image.open(io.BytesIO(base64.b64decode(payload)))
        image.load()
        images.append(image)
    return images


def _split_counts(page: str) -> dict[str, int]:
    return {
        split: int(n)
        for split, n in re.findall(r'data-split="(\w+)" data-num-examples="(\d+)"', page)
    }


def _snapshot(directory: str) -> dict[str, tuple[int, int]]:
    return {
        name: (os.stat(os.path.join(directory, name)).st_size,
               os.stat(os.path.join(directory, name)).st_mtime_ns)
        for name in sorted(os.listdir(directory))
    }


def test_a_publication_writes_the_report_beside_lineage_and_lists_it(published):
    marker = json.load(open(os.path.join(published, "_COMPLETE")))
    lineage = json.load(open(os.path.join(published, "lineage.json")))
    for name in ("report.html", "report.png"):
        assert marker["files"][name] == os.path.getsize(os.path.join(published, name))
    run_cli("verify", published)

    with Image.open(os.path.join(published, "report.png")) as picture:
        picture.load()
        assert picture.width > 1000 and picture.height > 500

    page = open(os.path.join(published, "report.html"), encoding="utf-8").read()
    assert _split_counts(page) == {s: v["num_examples"] for s, v in lineage["splits"].items()}
    inline = _inline_images(page)
    # 16 samples a split (fewer where a split is smaller), its charts, the noted images
    samples = sum(min(16, v["num_examples"]) for v in lineage["splits"].values())
    noted = len(lineage["fixed_images"]) + len(lineage["skipped_images"])
    assert len(inline) >= samples + len(lineage["splits"]) + len(lineage["fixed_images"])
    assert all(image.width > 0 and image.height > 0 for image in inline)
    assert noted and lineage["skipped_images"]
    for note in lineage["fixed_images"] + lineage["skipped_images"]:
        assert note["file_name"] in page and note["reason"] in page
    # fixed images are read back at the offset recorded as their shard was written
    assert all({"shard", "index", "shard_offset"} <= set(f) for f in lineage["fixed_images"])
    for archive in lineage["archives"]:
        assert archive["sha256"] in page


def test_per_class_counts_are_counted_while_converting(published):
    """The class histogram comes from lineage.json, not from reading the images again."""
    lineage = json.load(open(os.path.join(published, "lineage.json")))
    train = lineage["splits"]["train"]
    labels = {int(k): v for k, v in train["stats"]["labels"].items()}
    assert sum(labels.values()) == train["num_examples"]
    assert all(0 <= label < dataset.NUM_CLASSES for label in labels)
    assert sum(train["stats"]["file_bytes"].values()) == train["num_examples"]
    assert sum(train["stats"]["image_sizes"].values()) == train["num_examples"]
    page = open(os.path.join(published, "report.html"), encoding="utf-8").read()
    counts = [labels.get(i, 0) for i in range(dataset.NUM_CLASSES)]
    assert f"min 0, median 0, max {max(counts)}" in page
    assert f"{counts.count(0)} of 1000 classes without images" in page


def test_report_writes_elsewhere_and_leaves_the_version_alone(published, tmp_path):
    before = _snapshot(published)
    out = tmp_path / "elsewhere"
    proc = run_cli("report", published, f"--output={out}")
    assert _snapshot(published) == before
    assert sorted(os.listdir(out)) == ["report.html", "report.png"]
    assert str(out / "report.html") in proc.stdout
    # the same inputs make the same files
    for name in ("report.html", "report.png"):
        assert (out / name).read_bytes() == open(os.path.join(published, name), "rb").read()


TFDS_BUILD = """
import sys
import tensorflow_datasets as tfds
builder = tfds.builder("imagenet2012", data_dir=sys.argv[2])
builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=sys.argv[1]))
"""


def test_report_reads_a_version_tfds_built_itself(tmp_path):
    generated = synthetic.generate_manual_dir(
        str(tmp_path / "manual"), num_classes=3, train_per_class=4, num_validation=6,
        num_test=5, test_archives=("2012",),
    )
    subprocess.run(
        [sys.executable, "-c", TFDS_BUILD, generated.manual_dir, str(tmp_path / "tfds")],
        check=True, capture_output=True, timeout=300,
    )
    tfds_version = version_dir(tmp_path / "tfds")
    assert not os.path.exists(os.path.join(tfds_version, "lineage.json"))
    before = _snapshot(tfds_version)

    run_cli("report", tfds_version, f"--output={tmp_path / 'out'}")

    assert _snapshot(tfds_version) == before
    info = json.load(open(os.path.join(tfds_version, "dataset_info.json")))
    want = {s["name"]: sum(int(n) for n in s["shardLengths"]) for s in info["splits"]}
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert _split_counts(page) == want == {"train": 12, "validation": 6, "test": 5}
    assert "made by TFDS" in page and "examples per class: not recorded" in page
    members = {m.file_name for m in generated.members}
    shown = re.findall(r"<figcaption>[^<]*<br>([^<]+)<br>", page)
    assert len(shown) == 12 + 6 + 5 and set(shown) <= members
    assert len(_inline_images(page)) == 12 + 6 + 5 + 3  # samples, and each split's charts


def test_a_report_of_what_is_no_version_is_one_clear_error(tmp_path, published):
    for not_a_version in (tmp_path, os.path.dirname(os.path.dirname(published))):
        proc = run_cli("report", str(not_a_version), check=False)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith(f"error: {not_a_version} is not a published version")
        assert "DATA_DIR/imagenet2012/5.1.0" in line


def test_a_version_whose_publication_did_not_finish_is_refused(published, tmp_path):
    copy = tmp_path / "5.1.0"
    shutil.copytree(published, copy)
    (copy / "lineage.json").write_text("{}")
    proc = run_cli("report", str(copy), f"--output={tmp_path / 'out'}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "lineage.json is not the one its _COMPLETE marker was written for" in proc.stderr


def test_samples_are_first_records_of_evenly_spaced_shards_when_there_are_enough():
    """On full ImageNet (1024 train shards) no sample needs a walk through a shard."""
    from imagenet_beam import report

    shards = [(f"s{i}", 1250) for i in range(1024)]
    spots = report.sample_spots(shards, 16)
    assert len(spots) == 16 and all(index == 0 for _, index in spots)
    assert [name for name, _ in spots] == [f"s{32 + 64 * k}" for k in range(16)]
    few = report.sample_spots([("a", 10), ("empty", 0), ("b", 10)], 4)
    assert few == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]  # from each shard's start
    short = report.sample_spots([("a", 1), ("b", 100_000)], 16)
    assert short == [("a", 0)] + [("b", i) for i in range(15)]
    assert report.sample_spots([("a", 2), ("b", 3)], 16) == [
        ("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 2)]


def test_a_tfrecord_record_is_read_at_its_written_offset_or_by_walking(tmp_path):
    from imagenet_beam import formats
    from imagenet_beam.formats import tfds_schema

    tfrecord = formats.get("tfrecord")
    records = [tfds_schema.example_parts(b"x" * n, n, f"{n}.JPEG") for n in (10, 70000, 3, 5)]
    written = tfrecord.write(str(tmp_path / "shard"), iter(records))
    whole = [b"".join(r) for r in records]
    by_walk = tfrecord.read_records(str(tmp_path / "shard"), [1, 3])
    by_offset = tfrecord.read_records(str(tmp_path / "shard"), [1, 3],
                                      {3: written.offsets[3]})
    assert by_walk == by_offset == [whole[1], whole[3]]
    assert tfds_schema.parse_example(whole[1]) == {
        "image": b"x" * 70000, "label": 70000, "file_name": b"70000.JPEG"}
