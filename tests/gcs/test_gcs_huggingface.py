"""The Hugging Face archives read from a gs:// manual_dir and converted into a gs://
data_dir (unpacked copy there too), on the local GCS server: the tarballs' shards."""

from __future__ import annotations

import hashlib
import json

from imagenet_beam import storage, synthetic, synthetic_layouts
from tests.conftest import convert, gcs_client, published_shard_digests

VERSION = "imagenet2012/5.1.0"


def _bucket_files(bucket_name: str, prefix: str = "") -> dict[str, bytes]:
    bucket = gcs_client().bucket(bucket_name)
    return {b.name: b.download_as_bytes() for b in bucket.list_blobs(prefix=prefix or None)}


def test_huggingface_archives_on_gcs_give_the_tarballs_shards(gcs_server, gcs_bucket, tmp_path):
    images = synthetic.generate_manual_dir(
        str(tmp_path / "tarballs"), num_classes=3, train_per_class=3, num_validation=6,
        num_test=4, num_patched=1, awkward=["cmyk_tfds_name"], test_archives=("2012", "patch"),
    )
    convert(images.manual_dir, tmp_path / "local", f"--test_patch={synthetic.PATCH_ARCHIVE}",
            "--num_shards=2")
    local = published_shard_digests(tmp_path / "local")

    written = synthetic_layouts.write_layout(images, "huggingface", str(tmp_path / "hf"),
                                             strays=True)
    gcs_client().create_bucket("imagenet-hf")
    manual_dir = "gs://imagenet-hf/downloads"
    for path in written.files:  # data/train_images_0.tar.gz, …
        storage.upload_file(str(tmp_path / "hf" / path), f"{manual_dir}/{path}")

    convert(manual_dir, gcs_bucket, "--num_shards=2")
    name = gcs_bucket[len("gs://"):]
    remote = _bucket_files(name)
    lineage = json.loads(remote[f"{VERSION}/lineage.json"])
    assert {s: [x["sha256"] for x in i["shards"]] for s, i in lineage["splits"].items()} == local
    for split, info in lineage["splits"].items():  # what is in the bucket is what lineage says
        for shard in info["shards"]:
            data = remote[f"{VERSION}/{shard['file']}"]
            assert hashlib.sha256(data).hexdigest() == shard["sha256"], split
    assert lineage["inputs"]["train"]["path"] == f"{manual_dir}/data"
    assert {a["name"] for a in lineage["archives"]} >= {
        "huggingface:train", "huggingface:validation", "huggingface:test"
    }
    # the copies and their reports are in the data_dir's work dir, none left half-written
    unpacked = [n for n in remote if n.startswith(".imagenet2012-work/unpacked/")]
    assert sum(n.endswith(".tar") for n in unpacked) == 7
    assert not [n for n in unpacked if n.endswith(".partial")]

    again = convert(manual_dir, gcs_bucket, "--num_shards=2")
    assert "up to date" in again.stdout
