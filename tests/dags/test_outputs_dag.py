"""The other outputs through the real DAG (`dag.test()`, SQLite): the form offers the
datasets and schemas; a classic run publishes DATA_DIR/imagenet2012_classic/1.0.0 with its
Assets named for it; a ReaL run whose real.json is missing fails at the sensor, naming it."""

from __future__ import annotations

import os

import pytest

from imagenet_beam import dataset, settings, synthetic
from tests.dags.conftest import task_states
from tests.dags.test_imagenet2012_dag import _asset_events
from tests.dags.test_sensor_and_checks import ONLY_THE_SENSOR, _exception_text


@pytest.fixture(scope="module")
def two_splits(tmp_path_factory):
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("outputs_dag")), num_classes=3, train_per_class=3,
        num_validation=6, splits=(dataset.TRAIN, dataset.VALIDATION), seed=5,
    )


def test_the_form_offers_every_dataset_and_schema(imagenet_dag):
    for name, choices, default in (
        ("dataset", settings.DATASETS, "imagenet2012"),
        ("schema", settings.SCHEMAS, "tfds"),
    ):
        param = imagenet_dag.params.get_param(name)
        assert param.value == default
        assert param.schema["enum"] == list(choices)
        for choice in choices:
            assert param.schema["values_display"][choice].startswith(f"{choice}: ")
    assert imagenet_dag.params.get_param("tfrecord_index").value is False


def test_a_classic_run_publishes_its_own_directory_and_assets(imagenet_dag, two_splits,
                                                              tmp_path):
    data = tmp_path / "data"
    conf = {"manual_dir": two_splits.manual_dir, "data_dir": str(data),
            "splits": ["train", "validation", "test"], "schema": "classic",
            "verify_checksums": False, "num_workers": 1}
    run = imagenet_dag.test(run_conf=conf)
    states = task_states(imagenet_dag.dag_id, run.run_id)
    assert str(run.state) == "success", states
    version = data / "imagenet2012_classic" / "1.0.0"
    names = sorted(os.listdir(version))
    assert "_COMPLETE" in names and "lineage.json" in names
    assert [n for n in names if n.startswith("train-")] == [
        f"train-{i:05d}-of-00009" for i in range(9)
    ]
    assert not (data / "imagenet2012").exists()
    events = _asset_events(run.run_id)
    uri = f"file://{version}"
    assert set(events) == {
        f"imagenet2012_classic/1.0.0/{split}@{uri}" for split in ("train", "validation")
    }


def test_real_without_real_json_fails_at_the_sensor_naming_it(imagenet_dag, two_splits,
                                                              tmp_path, capfd):
    conf = {"manual_dir": two_splits.manual_dir, "data_dir": str(tmp_path / "data"),
            "dataset": "imagenet2012_real", "verify_checksums": False,
            "wait_timeout_minutes": 0.05}
    capfd.readouterr()
    run = imagenet_dag.test(run_conf=conf, mark_success_pattern=ONLY_THE_SENSOR)
    assert task_states(imagenet_dag.dag_id, run.run_id)["wait_for_archives"] == "failed"
    out = capfd.readouterr()
    timeout = _exception_text(out.out + out.err, "AirflowSensorTimeout")
    assert "imagenet2012_real also needs real.json" in timeout, timeout
    assert "cannot be downloaded from here" in timeout
