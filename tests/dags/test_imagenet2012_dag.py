"""The `imagenet2012` DAG end to end with `dag.test()` on a real SQLite metadata DB."""

from __future__ import annotations

import copy
import hashlib
import json
import os

import pytest

from imagenet_beam import dataset, synthetic
from tests.conftest import read_tfrecord_examples, version_dir
from tests.dags.conftest import task_states

SPLITS = ["train", "validation", "test"]


def _run(dag, conf: dict):
    """One DAG run; returns (run, {task_id or task_id[map_index]: state})."""
    run = dag.test(run_conf=conf)
    return run, task_states(dag.dag_id, run.run_id)


def _asset_events(run_id: str, sources: bool = False) -> dict[str, dict]:
    """{asset name: event extra} of a run's Asset events; with sources, (dag, task) too."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent, AssetModel)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .filter(AssetEvent.source_run_id == run_id)
            .all()
        )
        if sources:
            return {model.name: (event.source_dag_id, event.source_task_id)
                    for event, model in rows}
        return {model.name: dict(event.extra) for event, model in rows}


def _xcom(dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id, key=key)
            .one()
        )
        value = row.value
    return json.loads(value) if isinstance(value, str) else value


@pytest.fixture(scope="module")
def patched_input(tmp_path_factory):
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("dag_manual")),
        awkward=("cmyk_other_name", "png_tfds_name", "grayscale"),
        test_archives=("2012", "patch"),
    )


@pytest.fixture(scope="module")
def first_run(imagenet_dag, patched_input, tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("dag_data"))
    conf = {
        "manual_dir": patched_input.manual_dir,
        "data_dir": data_dir,
        "splits": SPLITS,
        "verify_checksums": False,
        "test_patch": synthetic.PATCH_ARCHIVE,
        "num_workers": 1,
    }
    run, states = _run(imagenet_dag, conf)
    FIRST_RUN_SHARDS[data_dir] = _shard_sha256(data_dir)
    return conf, run, states


# The first run's shard digests, taken right after it: later tests convert its data_dir
# again with other settings, and the last test (its own run would hand the consumer other
# events) compares with them.
FIRST_RUN_SHARDS: dict[str, dict[str, list[str]]] = {}


def test_every_task_succeeds(first_run):
    _, run, states = first_run
    assert str(run.state) == "success", states
    expected = {
        "wait_for_archives", "take_lease", "verify_archives", "plan_conversion", "convert[0]",
        "publish", "validate_and_record", "release_lease",
    }
    assert set(states) == expected
    assert set(states.values()) == {"success"}, states
    from tests.dags.conftest import task_instance

    # The DirectRunner converts every split in one job, named by its splits in the UI.
    convert = task_instance("imagenet2012", run.run_id, "convert", 0)
    assert convert.rendered_map_index == ", ".join(SPLITS)


def _shard_sha256(data_dir: str) -> dict[str, list[str]]:
    with open(os.path.join(version_dir(data_dir), "lineage.json")) as f:
        splits = json.load(f)["splits"]
    return {split: [s["sha256"] for s in info["shards"]] for split, info in splits.items()}


def test_output_loads_in_tfds_with_the_right_counts(first_run, patched_input):
    import tensorflow_datasets as tfds

    conf, _, _ = first_run
    builder = tfds.builder_from_directory(version_dir(conf["data_dir"]))
    for split in SPLITS:
        assert builder.info.splits[split].num_examples == len(patched_input.split(split))
    ds = tfds.load("imagenet2012", data_dir=conf["data_dir"], split="validation")
    assert sum(1 for _ in ds) == len(patched_input.split("validation"))


def test_lineage_matches_the_files(first_run, patched_input):
    conf, run, _ = first_run
    path = version_dir(conf["data_dir"])
    lineage = json.load(open(os.path.join(path, "lineage.json")))
    for split in SPLITS:
        info = lineage["splits"][split]
        assert info["num_examples"] == len(patched_input.split(split))
        for shard in info["shards"]:
            data = open(os.path.join(path, shard["file"]), "rb").read()
            assert hashlib.sha256(data).hexdigest() == shard["sha256"]
            assert len(data) == shard["num_bytes"]
    assert lineage["airflow"]["run_id"] == run.run_id
    assert {a["name"] for a in lineage["archives"]} == {
        dataset.TRAIN_ARCHIVE, dataset.VALIDATION_ARCHIVE, dataset.TEST_ARCHIVE_2012,
        synthetic.PATCH_ARCHIVE,
    }
    assert all(len(a["sha256"]) == 64 for a in lineage["archives"])
    assert sorted(lineage["test_patch"]["replaced"]) == sorted(patched_input.replaced_by_patch)
    assert lineage["fingerprint"]


def test_patched_test_images_are_the_patch_bytes(first_run, patched_input):
    conf, _, _ = first_run
    stored = read_tfrecord_examples(version_dir(conf["data_dir"]), "test")
    assert patched_input.replaced_by_patch
    for member in patched_input.split("test"):
        assert stored[member.file_name] == (-1, member.data), member.file_name
    for name in patched_input.replaced_by_patch:
        assert patched_input.by_name("test")[name].patched


def test_asset_events_carry_the_counts(first_run, patched_input):
    conf, run, _ = first_run
    events = _asset_events(run.run_id)
    assert len(events) == 3
    lineage = json.load(open(os.path.join(version_dir(conf["data_dir"]), "lineage.json")))
    for split in SPLITS:
        prefix = f"imagenet2012/5.1.0/{split}@"
        [extra] = [e for name, e in events.items() if name.startswith(prefix)]
        assert extra["num_examples"] == len(patched_input.split(split))
        assert extra["num_shards"] == lineage["splits"][split]["num_shards"]
        assert extra["num_bytes"] == lineage["splits"][split]["num_bytes"]
        assert len(extra["shards_sha256_digest"]) == 64
        assert extra["reprocessed"] is True
        assert extra["produced_by"] == "imagenet2012.validate_and_record"
    # What the Asset page's event list links as its source: the producing task instance.
    assert set(_asset_events(run.run_id, sources=True).values()) == {
        ("imagenet2012", "validate_and_record")}
    summary = _xcom("imagenet2012", run.run_id, "validate_and_record")
    assert summary["splits"]["train"]["num_examples"] == len(patched_input.split("train"))


def test_the_published_splits_trigger_the_consumer_dag(first_run, patched_input, caplog):
    """imagenet2012_consumer is scheduled on the split alias: the run's events queue a run of
    it, which the scheduler's own step creates; it reads a batch of each split (the latest
    events' version: the tests before this one publish nowhere else)."""
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import AIRFLOW_ENV, create_asset_triggered_run, run_tasks

    conf, run, _ = first_run
    consumer = DagBag(dag_folder=AIRFLOW_ENV["AIRFLOW__CORE__DAGS_FOLDER"]).get_dag(
        "imagenet2012_consumer")
    consumer_run = create_asset_triggered_run(consumer.dag_id)
    assert consumer_run, "the split events queued no run of imagenet2012_consumer"
    with caplog.at_level("INFO"):
        assert run_tasks(consumer, consumer_run) == "success"
    read = _xcom(consumer.dag_id, consumer_run, "read_batches")
    assert set(read) == set(SPLITS)
    log = caplog.text
    for split in SPLITS:
        members = patched_input.split(split)
        labels = [m.label for m in members]
        n = len(members)  # fewer than a batch: the batch is the whole split
        assert read[split]["version_dir"] == version_dir(conf["data_dir"])
        assert read[split]["num_examples"] == n
        assert read[split]["images"] == [[n, 224, 224, 3], "float32"]
        assert read[split]["labels"] == [[n], "int64"]
        assert (read[split]["label_min"], read[split]["label_max"]) == (min(labels), max(labels))
        assert f"{split}: a batch of {n} from {version_dir(conf['data_dir'])}" in log
        assert f"labels ({n},) int64 in [{min(labels)}, {max(labels)}]" in log


def test_a_second_run_skips_and_a_changed_setting_reconverts(
    imagenet_dag, first_run, capfd, caplog
):
    from tests.dags.conftest import task_instance

    conf, _, _ = first_run
    path = version_dir(conf["data_dir"])
    before = {n: os.stat(os.path.join(path, n)).st_mtime_ns for n in os.listdir(path)}

    capfd.readouterr()
    with caplog.at_level("INFO"):
        run, states = _run(imagenet_dag, conf)
    assert str(run.state) == "success", states
    # The skipped convert task is one instance, "up to date", whose log says why.
    assert states["convert[0]"] == "skipped" and "convert[1]" not in states, states
    assert states["validate_and_record"] == "success"
    assert _xcom("imagenet2012", run.run_id, "publish")["published"] is False
    plan = _xcom("imagenet2012", run.run_id, "plan_conversion", key="plan")
    reason = plan["reason"]
    assert "same archives and settings" in reason
    # planned from the cached checks: the published fingerprint
    lineage = json.load(open(os.path.join(path, "lineage.json")))
    assert plan["fingerprint"] == lineage["fingerprint"]
    skipped = task_instance(imagenet_dag.dag_id, run.run_id, "convert", map_index=0)
    assert skipped.rendered_map_index == "up to date" and skipped.try_number == 1
    log = caplog.text + "".join(capfd.readouterr())
    assert f"nothing converted: {reason}" in log
    assert "Running command" not in log  # no Beam pipeline started
    after = {n: os.stat(os.path.join(path, n)).st_mtime_ns for n in os.listdir(path)}
    assert after == before
    events = _asset_events(run.run_id)
    assert events and all(e["reprocessed"] is False for e in events.values())
    # The consumer runs on these events too, and reads nothing: no new version.
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import AIRFLOW_ENV, create_asset_triggered_run, run_tasks

    consumer = DagBag(dag_folder=AIRFLOW_ENV["AIRFLOW__CORE__DAGS_FOLDER"]).get_dag(
        "imagenet2012_consumer")
    consumer_run = create_asset_triggered_run(consumer.dag_id)
    assert consumer_run
    with caplog.at_level("INFO"):
        assert run_tasks(consumer, consumer_run) == "success"
    assert _xcom(consumer.dag_id, consumer_run, "read_batches") == {}
    assert f"train: {path} was found up to date by {run.run_id}" in caplog.text

    changed = {**conf, "num_shards": 2, "splits": ["validation"]}
    with caplog.at_level("INFO"):
        run, states = _run(imagenet_dag, changed)
    assert str(run.state) == "success", states
    assert states["convert[0]"] == "success"
    # The version it replaced is removed by release_lease (beside validate_and_record),
    # not by publish, on the run's longest path; publish says it read the shards back.
    log = caplog.text + "".join(capfd.readouterr())
    assert "read back 2 shards (" in log and "each as it was written" in log
    assert f"removed the version this run's publication replaced ({path}.replaced)" in log
    assert not os.path.exists(path + ".replaced")
    lineage = json.load(open(os.path.join(path, "lineage.json")))
    assert lineage["airflow"]["run_id"] == run.run_id
    assert list(lineage["splits"]) == ["validation"]
    assert lineage["splits"]["validation"]["num_shards"] == 2

    # Up to date again, but `force` converts anyway.
    run, states = _run(imagenet_dag, {**changed, "force": True})
    assert str(run.state) == "success", states
    assert states["convert[0]"] == "success"
    assert _xcom("imagenet2012", run.run_id, "publish")["published"] is True
    lineage = json.load(open(os.path.join(path, "lineage.json")))
    assert lineage["airflow"]["run_id"] == run.run_id
    forced = run.run_id

    # An archive touched (its cached check no longer stands for it): the plan cannot know
    # whether anything changed, so the conversion would start beside verify_archives (under
    # a scheduler they run at once; dag.test() runs one task at a time, so here the tasks
    # are called in that order); their checksums are the published ones, and publish
    # keeps what is there.
    from imagenet_airflow import tasks

    archive = os.path.join(conf["manual_dir"], dataset.VALIDATION_ARCHIVE)
    stat = os.stat(archive)
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    before = {n: os.stat(os.path.join(path, n)).st_mtime_ns for n in os.listdir(path)}
    params = copy.deepcopy(imagenet_dag.params)
    params.update(changed)
    params = params.validate()
    run_id = "touched-archive"
    tasks.take_lease(params, run_id)
    try:
        with caplog.at_level("INFO"):
            plan = tasks.plan_conversion(params, run_id)
            verified = tasks.verify_archives(params, run_id)
            published = tasks.publish(params, verified, plan,
                                      {"dag_id": imagenet_dag.dag_id, "run_id": run_id})
    finally:
        tasks.release_lease(params, run_id)
    assert plan["up_to_date"] is False and plan["fingerprint"] is None and plan["jobs"]
    assert "are checked beside the conversion" in caplog.text
    assert published["published"] is False
    assert "same archives and settings" in published["reason"]
    assert {n: os.stat(os.path.join(path, n)).st_mtime_ns for n in os.listdir(path)} == before
    assert json.load(open(os.path.join(path, "lineage.json")))["airflow"]["run_id"] == forced
    assert not os.path.exists(os.path.join(conf["data_dir"], "imagenet2012", ".5.1.0.incomplete"))


def test_the_dag_writes_the_golden_shards(imagenet_dag, tmp_path):
    """The same bytes as the CLI and TFDS's own builder (tests/beam/test_tfds_identity.py)."""
    from tests.beam.test_tfds_identity import (
        GOLDEN_INPUT_KWARGS,
        GOLDEN_NUM_SHARDS,
        GOLDEN_SHARD_SHA256,
        shard_sha256,
    )

    generated = synthetic.generate_manual_dir(str(tmp_path / "manual"), **GOLDEN_INPUT_KWARGS)
    conf = {
        "manual_dir": generated.manual_dir,
        "data_dir": str(tmp_path / "data"),
        "splits": SPLITS,
        "verify_checksums": False,
        "test_patch": None,
        "num_shards": GOLDEN_NUM_SHARDS,
        "num_workers": 1,
    }
    run, states = _run(imagenet_dag, conf)
    assert str(run.state) == "success", states
    assert shard_sha256(version_dir(conf["data_dir"])) == GOLDEN_SHARD_SHA256


def test_a_corrupt_image_fails_the_convert_task_once_and_names_it(imagenet_dag, tmp_path, capfd):
    from tests.dags.conftest import task_instance

    generated = synthetic.generate_manual_dir(
        str(tmp_path / "manual"), splits=("train",), broken=("truncated",)
    )
    [bad] = [m for m in generated.members if m.kind == "truncated"]
    conf = {"manual_dir": generated.manual_dir, "data_dir": str(tmp_path / "data"),
            "splits": ["train"], "verify_checksums": False, "num_workers": 1}
    run, states = _run(imagenet_dag, conf)
    assert str(run.state) == "failed"
    assert states["convert[0]"] == "failed", states
    ti = task_instance(imagenet_dag.dag_id, run.run_id, "convert", map_index=0)
    assert ti.try_number == 1  # bad input: not retried
    out = capfd.readouterr()
    log = out.out + out.err
    assert f"error: train image {bad.file_name!r}" in log
    assert "--on_corrupt=skip" in log and "not retried" in log
    assert "Traceback" not in log.split("error: train image", 1)[0].rsplit("Running command", 1)[1]
    assert not os.path.exists(version_dir(conf["data_dir"]))
    # The run's teardown: its unpublished staging removed, its lease released.
    assert states["release_lease"] == "success", states
    assert not os.path.exists(os.path.join(conf["data_dir"], "imagenet2012", ".5.1.0.incomplete"))
    assert not os.path.exists(os.path.join(conf["data_dir"], "imagenet2012", ".5.1.0.lease"))


def test_the_huggingface_archives_give_the_same_shards_through_the_dag(
    imagenet_dag, first_run, patched_input, tmp_path
):
    """plan_conversion makes the copies; the Beam job (its own process, finding its inputs
    again) reads them."""
    from imagenet_beam import synthetic_layouts

    conf, _, _ = first_run
    synthetic_layouts.write_layout(patched_input, "huggingface", str(tmp_path / "hf"))
    hf_conf = {**conf, "manual_dir": str(tmp_path / "hf"), "data_dir": str(tmp_path / "out"),
               "test_patch": None}
    run, states = _run(imagenet_dag, hf_conf)
    assert str(run.state) == "success", states
    plan = _xcom("imagenet2012", run.run_id, "plan_conversion", key="plan")
    assert {a["name"] for a in plan["archives"]} >= {f"huggingface:{s}" for s in SPLITS}
    assert _shard_sha256(hf_conf["data_dir"]) == FIRST_RUN_SHARDS[conf["data_dir"]]


def test_publish_reads_the_staged_shards_back_before_anything_is_visible(imagenet_dag, tmp_path):
    """The DAG's publish hashes every staged shard against the lineage it is about to
    publish (beside the report), so validate_and_record need not: a shard changed on the
    disk after the convert task wrote it fails publish at once (no retry would mend it),
    saying which, and nothing is published; the run's teardown drops its staging."""
    import subprocess
    import sys

    from airflow.sdk.exceptions import AirflowFailException

    from imagenet_airflow import tasks
    from tests.conftest import ROOT

    generated = synthetic.generate_manual_dir(
        str(tmp_path / "manual"), splits=("validation",), test_archives=()
    )
    data_dir = str(tmp_path / "data")
    params = copy.deepcopy(imagenet_dag.params)
    params.update({"manual_dir": generated.manual_dir, "data_dir": data_dir,
                   "splits": ["validation"], "verify_checksums": False, "test_patch": None,
                   "num_shards": 2, "num_workers": 1})
    params = params.validate()
    run_id = "changed-after-writing"
    tasks.take_lease(params, run_id)
    try:
        plan = tasks.plan_conversion(params, run_id)
        [job] = plan["jobs"]
        # what the convert task runs
        subprocess.run([sys.executable, "-m", "imagenet_beam.beam_main",
                        *(f"--{k}={v}" for k, v in job.items())],
                       cwd=ROOT, check=True, capture_output=True)
        staging = os.path.join(data_dir, "imagenet2012", ".5.1.0.incomplete")
        shard = sorted(n for n in os.listdir(staging) if ".tfrecord-" in n)[0]
        with open(os.path.join(staging, shard), "r+b") as f:
            f.seek(12 + 40)  # inside the first record's payload: size and framing unchanged
            byte = f.read(1)
            f.seek(12 + 40)
            f.write(bytes([byte[0] ^ 0xFF]))
        verified = tasks.verify_archives(params, run_id)
        with pytest.raises(AirflowFailException) as e:
            tasks.publish(params, verified, plan,
                          {"dag_id": imagenet_dag.dag_id, "run_id": run_id})
    finally:
        tasks.release_lease(params, run_id)
    assert "do not read back as they were written" in str(e.value)
    assert f"{shard}: sha256 " in str(e.value) and "Nothing was published" in str(e.value)
    assert not os.path.exists(version_dir(data_dir))
    assert not os.path.exists(staging)
