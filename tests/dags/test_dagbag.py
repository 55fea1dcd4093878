"""The DAG folder parses cleanly, quickly, and without heavy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.dags.conftest import AIRFLOW_ENV


def test_dagbag_has_no_import_errors(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    started = time.monotonic()
    bag = DagBag(dag_folder=AIRFLOW_ENV["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("imagenet2012")
    assert dag is not None
    assert time.monotonic() - started < 30
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert dag.doc_md and "ImageNet" in dag.doc_md
    task_ids = set(dag.task_ids)
    assert {
        "wait_for_archives", "take_lease", "verify_archives", "plan_conversion", "convert",
        "publish", "validate_and_record", "release_lease",
    } == task_ids
    # The archives' checks run beside the conversion: nothing before the convert tasks
    # waits for them; publish waits for both.
    assert "verify_archives" not in dag.get_task("convert").get_flat_relative_ids(upstream=True)
    assert {"verify_archives", "convert"} <= dag.get_task("publish").upstream_task_ids
    # One writer per version: the lease is the run's setup, its release the teardown.
    assert dag.get_task("take_lease").is_setup and dag.get_task("release_lease").is_teardown
    # The example consumer runs on the split Assets' events (through their alias).
    from airflow.sdk import AssetAlias

    consumer = bag.get_dag("imagenet2012_consumer")
    assert consumer is not None and consumer.doc_md
    assert consumer.timetable.asset_condition == AssetAlias("imagenet2012_splits")
    assert consumer.task_ids == ["read_batches"]


def test_params_are_a_self_explanatory_form(imagenet_dag):
    params = imagenet_dag.params
    for name in (
        "manual_dir", "data_dir", "splits", "file_format", "num_shards", "on_corrupt",
        "verify_checksums", "test_patch", "runner", "num_workers", "dataflow_project",
        "dataflow_region", "dataflow_temp_location", "dataflow_service_account",
    ):
        param = params.get_param(name)
        assert param.schema.get("title") or param.description, name
        assert param.schema.get("section"), name
    for name in params:  # every param says what it is for
        assert len(params.get_param(name).description or "") > 20, name
    assert params.get_param("file_format").schema["enum"] == ["tfrecord", "array_record"]
    # An array with `examples` is a multi-select in Airflow's trigger form.
    splits = params.get_param("splits").schema
    assert splits["type"] == "array" and splits["examples"] == ["train", "validation", "test"]
    assert params.get_param("runner").schema["enum"] == [
        "DirectRunner", "DataflowRunner", "DaskRunner"
    ]


@pytest.mark.parametrize("dag_file", ["imagenet2012.py", "imagenet2012_consumer.py"])
def test_parsing_imports_neither_tensorflow_nor_beam(dag_file):
    code = (
        "import sys, json, runpy; runpy.run_path(sys.argv[1]); "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('tensorflow', 'apache_beam', 'tensorflow_datasets'))))"
    )
    env = {**os.environ, **AIRFLOW_ENV, "PYTHONPATH": AIRFLOW_ENV["AIRFLOW__CORE__PLUGINS_FOLDER"]}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, os.path.join(AIRFLOW_ENV["AIRFLOW__CORE__DAGS_FOLDER"],
                                                   dag_file)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )
    heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert heavy == [], heavy
    assert time.monotonic() - started < 60


def test_the_forms_conversion_params_are_the_settings_table(imagenet_dag):
    import copy

    from imagenet_beam import run, settings

    params = imagenet_dag.params
    for setting in settings.SETTINGS:
        if not setting.in_form:
            assert setting.name not in params, setting.name
            continue
        param = params.get_param(setting.name)
        expected = setting.json_schema()
        assert param.description == expected.pop("description"), setting.name
        assert {k: param.schema.get(k) for k in expected} == expected, setting.name
    # A conf with the older name of decode_images is accepted, and the name is understood.
    given = copy.deepcopy(params)
    given.update({"validate_images": True})
    resolved = given.validate()
    assert run.settings_from(resolved).decode_images is True
