"""The DAG with its manual and data directories on GCS (a real GCS JSON API server on
localhost), compared with a local run of the same input."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from imagenet_beam import synthetic
from tests.conftest import gcs_client, version_dir
from tests.dags.test_imagenet2012_dag import SPLITS, _run, _xcom

VERSION = "imagenet2012/5.1.0"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("gcs_dag_manual")),
        awkward=("cmyk_other_name", "grayscale"),
        test_archives=("2012", "patch"),
        seed=7,
    )


def _conf(manual_dir: str, data_dir: str) -> dict:
    return {
        "manual_dir": manual_dir,
        "data_dir": data_dir,
        "splits": SPLITS,
        "verify_checksums": False,
        "test_patch": synthetic.PATCH_ARCHIVE,
        "num_workers": 1,
        "num_shards": 2,
    }


def _blobs(bucket: str, prefix: str = "") -> dict[str, bytes]:
    return {
        blob.name: blob.download_as_bytes()
        for blob in gcs_client().bucket(bucket).list_blobs(prefix=prefix or None)
    }


@pytest.fixture(scope="module")
def runs(imagenet_dag, generated, gcs_server, tmp_path_factory):
    """The same input converted by the DAG twice: all local, and all on GCS."""
    client = gcs_client()
    client.create_bucket("dag-manual")
    client.create_bucket("dag-data")
    bucket = client.bucket("dag-manual")
    for name in sorted(os.listdir(generated.manual_dir)):
        bucket.blob(f"imagenet/{name}").upload_from_filename(
            os.path.join(generated.manual_dir, name)
        )
    local_conf = _conf(generated.manual_dir, str(tmp_path_factory.mktemp("gcs_dag_local")))
    gcs_conf = _conf("gs://dag-manual/imagenet", "gs://dag-data/tfds")
    local = _run(imagenet_dag, local_conf)
    remote = _run(imagenet_dag, gcs_conf)
    return {"local": (local_conf, *local), "gcs": (gcs_conf, *remote)}


def test_every_task_succeeds_on_gcs(runs):
    _, run, states = runs["gcs"]
    assert str(run.state) == "success", states
    assert set(states.values()) == {"success"}, states
    assert [t for t in states if t.startswith("convert[")] == ["convert[0]"]  # one job


def test_gcs_shards_are_identical_to_the_local_run(runs):
    local_conf = runs["local"][0]
    local_dir = version_dir(local_conf["data_dir"])
    local = {
        name: hashlib.sha256(open(os.path.join(local_dir, name), "rb").read()).hexdigest()
        for name in os.listdir(local_dir)
        if name.startswith("imagenet2012-")
    }
    published = _blobs("dag-data", f"tfds/{VERSION}/")
    remote = {
        name.rsplit("/", 1)[1]: hashlib.sha256(data).hexdigest()
        for name, data in published.items()
        if name.rsplit("/", 1)[1].startswith("imagenet2012-")
    }
    assert len(local) == 6
    assert remote == local
    assert f"tfds/{VERSION}/_COMPLETE" in published
    lineage = json.loads(published[f"tfds/{VERSION}/lineage.json"])
    for split in SPLITS:
        for shard in lineage["splits"][split]["shards"]:
            assert remote[shard["file"]] == shard["sha256"]
    # The archive checks, the merged test tar and the staging area all lived on GCS.
    assert lineage["inputs"]["train"]["path"] == "gs://dag-manual/imagenet/ILSVRC2012_img_train.tar"
    assert lineage["inputs"]["test"]["path"].startswith("gs://dag-data/tfds/.imagenet2012-work/")
    assert not any(".incomplete" in name for name in _blobs("dag-data"))


def test_gcs_run_reports_the_published_splits(runs, generated):
    conf, run, _ = runs["gcs"]
    summary = _xcom("imagenet2012", run.run_id, "validate_and_record")
    assert summary["version_dir"] == f"gs://dag-data/tfds/{VERSION}"
    for split in SPLITS:
        assert summary["splits"][split]["num_examples"] == len(generated.split(split))


def test_a_version_without_marker_is_not_kept(runs):
    """The skip check of a re-run ignores a version whose publication did not finish."""
    from imagenet_beam import run

    conf = runs["gcs"][0]
    lineage = json.loads(_blobs("dag-data", f"tfds/{VERSION}/lineage.json")[
        f"tfds/{VERSION}/lineage.json"
    ])
    settings = run.settings_from(conf)
    assert run.up_to_date(settings, lineage["fingerprint"])
    gcs_client().bucket("dag-data").blob(f"tfds/{VERSION}/_COMPLETE").delete()
    assert run.up_to_date(settings, lineage["fingerprint"]) is None
