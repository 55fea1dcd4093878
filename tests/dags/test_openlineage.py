"""OpenLineage events of the `imagenet2012` DAG, emitted by the real provider.

The provider reads its configuration once per process (cached), so each DAG run here happens
in a fresh `python` process running `dag.test()`: one with the provider's file transport
configured (two runs: a conversion, then a run that finds everything up to date), one with no
OpenLineage configuration at all. Both run at the same time, each on its own copy of the
session's migrated SQLite metadata DB.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from imagenet_beam import synthetic
from tests.conftest import version_dir
from tests.dags.conftest import AIRFLOW_ENV, finish_dag_test, start_dag_test

SPLITS = ["train", "validation", "test"]
NUM_SHARDS = 2  # more than one, so a file count that is not the shard count shows

@pytest.fixture(scope="module")
def small_input(tmp_path_factory):
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("ol_manual")),
        num_classes=2,
        train_per_class=2,
        num_validation=3,
        num_test=3,
        num_patched=1,
        test_archives=("2012", "patch"),
    )


@pytest.fixture(scope="module")
def runs(airflow_db, small_input, tmp_path_factory):
    """Both processes, started together: (with OpenLineage, without, events dir, seconds).

    Each run's result carries the data_dir it wrote to."""
    with_dir = str(tmp_path_factory.mktemp("ol_with"))
    without_dir = str(tmp_path_factory.mktemp("ol_without"))
    events = os.path.join(with_dir, "events")
    os.makedirs(events)
    base = {
        "manual_dir": small_input.manual_dir,
        "splits": SPLITS,
        "test_patch": synthetic.PATCH_ARCHIVE,
        "verify_checksums": False,
        "num_workers": 1,
        "num_shards": NUM_SHARDS,
    }
    transport = {"type": "file", "log_file_path": os.path.join(events, "ol")}
    started = time.monotonic()
    data_with, data_without = os.path.join(with_dir, "data"), os.path.join(without_dir, "data")
    with_ol = start_dag_test(
        airflow_db, with_dir, {**base, "data_dir": data_with}, 2,
        {"AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport)},
    )
    without_ol = start_dag_test(airflow_db, without_dir, {**base, "data_dir": data_without})
    results_with, results_without = finish_dag_test(*with_ol), finish_dag_test(*without_ol)
    for result in results_with:
        result["data_dir"] = data_with
    for result in results_without:
        result["data_dir"] = data_without
    return results_with, results_without, events, time.monotonic() - started


def _events(events_dir: str) -> list[dict]:
    """Every event the file transport wrote (one JSON document per file)."""
    return [json.load(open(path)) for path in sorted(glob.glob(os.path.join(events_dir, "ol-*")))]


def _complete_event(events: list[dict], run_id: str, task_id: str) -> dict:
    [event] = [
        e
        for e in events
        if e["eventType"] == "COMPLETE"
        and e["job"]["name"] == f"imagenet2012.{task_id}"
        and e["run"]["facets"]["airflow"]["dagRun"]["run_id"] == run_id
    ]
    return event


def _file_digests(path: str) -> tuple[int, str, str]:
    data = open(path, "rb").read()
    return len(data), hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()


def _expected_archives(manual_dir: str) -> dict[str, tuple[int, str, str]]:
    """(namespace "file") name → (size, sha256, md5) of every tar the run needs."""
    names = sorted(os.listdir(manual_dir))
    assert len(names) == 4, names  # train, validation, 2012 test, patch
    return {os.path.abspath(os.path.join(manual_dir, n)): _file_digests(
        os.path.join(manual_dir, n)) for n in names}


ARCHIVE_FIELDS = {
    "_producer", "_schemaURL", "fileName", "size", "sha256", "md5", "numMembers",
    "checksumVerified",
}


def _assert_archive_inputs(event: dict, manual_dir: str, *, read: bool):
    expected = _expected_archives(manual_dir)
    inputs = {d["name"]: d for d in event["inputs"]}
    assert {d["namespace"] for d in event["inputs"]} == {"file"}
    assert set(inputs) == set(expected)
    for name, (size, sha256, md5) in expected.items():
        dataset = inputs[name]
        assert set(dataset["facets"]) == {"imagenet2012_archive"}
        facet = dataset["facets"]["imagenet2012_archive"]
        assert set(facet) == ARCHIVE_FIELDS  # nothing else (no params, no environment)
        assert facet["fileName"] == os.path.basename(name)
        assert (facet["size"], facet["sha256"], facet["md5"]) == (size, sha256, md5)
        assert facet["numMembers"] >= 1
        assert facet["checksumVerified"] is False  # verify_checksums is off for generated data
        if read:
            assert dataset["inputFacets"]["inputStatistics"]["size"] == size
            assert dataset["inputFacets"]["inputStatistics"]["fileCount"] == 1
        else:
            assert not dataset.get("inputFacets")


def _assert_split_outputs(event: dict, data_dir: str, generated, *, reprocessed: bool):
    path = version_dir(data_dir)
    lineage = json.load(open(os.path.join(path, "lineage.json")))
    info = json.load(open(os.path.join(path, "dataset_info.json")))
    tfds_splits = {s["name"]: s for s in info["splits"]}
    outputs = {d["name"]: d for d in event["outputs"]}
    assert {d["namespace"] for d in event["outputs"]} == {"file"}
    assert set(outputs) == {os.path.join(path, f"imagenet2012-{s}") for s in SPLITS}
    for split in SPLITS:
        dataset = outputs[os.path.join(path, f"imagenet2012-{split}")]
        stats = dataset["outputFacets"]["outputStatistics"]
        shards = sorted(glob.glob(os.path.join(path, f"imagenet2012-{split}.tfrecord-*")))
        # the files on disk, TFDS's dataset_info.json and our lineage.json all agree
        assert stats["rowCount"] == len(generated.split(split))
        assert stats["rowCount"] == lineage["splits"][split]["num_examples"]
        assert stats["rowCount"] == sum(int(n) for n in tfds_splits[split]["shardLengths"])
        assert stats["size"] == sum(os.path.getsize(s) for s in shards)
        assert stats["size"] == lineage["splits"][split]["num_bytes"]
        assert stats["size"] == int(tfds_splits[split]["numBytes"])
        assert len(shards) == NUM_SHARDS
        assert stats["fileCount"] == len(shards) == lineage["splits"][split]["num_shards"]
        assert stats["fileCount"] == len(lineage["splits"][split]["shards"])
        assert stats["fileCount"] == len(tfds_splits[split]["shardLengths"])
        facets = dataset["facets"]
        assert set(facets) == {"version", "storage", "schema", "imagenet2012_split"}
        assert facets["version"]["datasetVersion"] == "5.1.0" == info["version"]
        assert facets["storage"]["storageLayer"] == "tfds"
        assert facets["storage"]["fileFormat"] == "tfrecord"
        assert [f["name"] for f in facets["schema"]["fields"]] == ["image", "label", "file_name"]
        split_facet = {k: v for k, v in facets["imagenet2012_split"].items() if k[0] != "_"}
        assert split_facet == {"split": split, "reprocessed": reprocessed}


def test_a_run_emits_the_archives_and_the_published_splits(runs, small_input):
    results, _, events_dir, _ = runs
    first = results[0]
    assert first["state"] == "success", first["states"]
    assert set(first["states"].values()) == {"success"}, first["states"]
    events = _events(events_dir)

    verify = _complete_event(events, first["run_id"], "verify_archives")
    assert verify["outputs"] == []
    _assert_archive_inputs(verify, small_input.manual_dir, read=True)

    record = _complete_event(events, first["run_id"], "validate_and_record")
    _assert_archive_inputs(record, small_input.manual_dir, read=False)
    _assert_split_outputs(record, first["data_dir"], small_input, reprocessed=True)
    assert record["run"]["facets"]["parent"]["job"]["name"] == "imagenet2012"


def test_an_up_to_date_run_emits_the_published_splits_too(runs, small_input):
    results, _, events_dir, _ = runs
    second = results[1]
    assert second["state"] == "success", second["states"]
    assert second["states"]["convert[0]"] == "skipped"  # the "up to date" instance
    events = _events(events_dir)

    # verify_archives answered from its cache: the archives are inputs, but nothing was read
    verify = _complete_event(events, second["run_id"], "verify_archives")
    _assert_archive_inputs(verify, small_input.manual_dir, read=False)
    record = _complete_event(events, second["run_id"], "validate_and_record")
    _assert_split_outputs(record, second["data_dir"], small_input, reprocessed=False)


def test_without_openlineage_config_nothing_changes(runs, small_input):
    results_with, results_without, _, seconds = runs
    [plain] = results_without
    assert plain["state"] == "success", plain["states"]
    assert plain["states"] == results_with[0]["states"]
    # The OpenLineage client is never even imported, so nothing can be emitted.
    assert plain["openlineage_client_imported"] is False
    assert results_with[0]["openlineage_client_imported"] is True
    # The tasks return the same with and without OpenLineage (paths aside).
    with_ol, without_ol = results_with[0]["xcoms"], plain["xcoms"]
    assert without_ol["validate_and_record"]["splits"] == with_ol["validate_and_record"]["splits"]
    strip = ("modified", "cached")
    assert [
        {k: v for k, v in a.items() if k not in strip}
        for a in without_ol["verify_archives"]["archives"]
    ] == [
        {k: v for k, v in a.items() if k not in strip}
        for a in with_ol["verify_archives"]["archives"]
    ]
    took = [round(r["seconds"], 1) for r in (*results_with, plain)]
    print(f"DAG runs {took} s; both processes together {seconds:.1f} s")


def test_dataset_names_follow_openlineage_naming():
    from imagenet_airflow import openlineage_events

    assert openlineage_events.dataset_id("/data/in/a.tar") == ("file", "/data/in/a.tar")
    assert openlineage_events.dataset_id("rel/a.tar") == ("file", os.path.abspath("rel/a.tar"))
    assert openlineage_events.dataset_id("gs://bucket/in/a.tar") == ("gs://bucket", "in/a.tar")
    assert openlineage_events.split_dataset_id("gs://b/tfds/imagenet2012/5.1.0", "train") == (
        "gs://b", "tfds/imagenet2012/5.1.0/imagenet2012-train"
    )


def test_the_other_outputs_are_named_and_described_as_what_they_are():
    from imagenet_airflow import openlineage_events

    info = {"num_examples": 3, "num_bytes": 10, "num_shards": 1, "shards": []}
    for params, name, version, fields in (
        ({"schema": "classic"}, "d/imagenet2012_classic/1.0.0/train", "1.0.0",
         "image/class/label"),
        ({"dataset": "imagenet2012_real"}, "d/imagenet2012_real/1.0.0/"
         "imagenet2012_real-train", "1.0.0", "real_label"),
    ):
        version_dir = "gs://b/d/" + "/".join(name.split("/")[1:3])
        lineage = openlineage_events.archives_to_splits(
            {"version_dir": version_dir, "reprocessed": True, "splits": {"train": info}},
            {"verified": {"archives": []}}, {"file_format": "tfrecord", **params},
        )
        [out] = lineage.outputs
        assert (out.namespace, out.name) == ("gs://b", name)
        assert out.facets["version"].datasetVersion == version
        assert fields in [f.name for f in out.facets["schema"].fields]


def test_parsing_the_dag_imports_no_openlineage():
    code = (
        "import sys, json, runpy; runpy.run_path(sys.argv[1]); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'openlineage')))"
    )
    env = {**os.environ, **AIRFLOW_ENV, "PYTHONPATH": AIRFLOW_ENV["AIRFLOW__CORE__PLUGINS_FOLDER"]}
    proc = subprocess.run(
        [sys.executable, "-c", code,
         os.path.join(AIRFLOW_ENV["AIRFLOW__CORE__DAGS_FOLDER"], "imagenet2012.py")],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
