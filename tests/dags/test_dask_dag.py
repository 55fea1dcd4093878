"""The DAG on the DaskRunner: the form offers it with a scheduler address, and a run's
convert task converts on the real cluster at that address (`dask_cluster`)."""

from __future__ import annotations

import json
import os

from imagenet_beam import synthetic
from tests.conftest import convert, published_shard_digests, version_dir
from tests.dags.conftest import task_states
from tests.dags.test_imagenet2012_dag import _xcom


def test_the_form_offers_the_dask_runner_and_its_scheduler_address(imagenet_dag):
    from imagenet_airflow import dataflow_launch

    params = imagenet_dag.params
    assert "DaskRunner" in params.get_param("runner").schema["enum"]
    address = params.get_param("dask_scheduler_address")
    assert address.value is None and address.schema["type"] == ["null", "string"]
    assert address.schema["section"] == "Dask (runner = DaskRunner)"
    assert "same paths" in address.description
    # Without an address: a local cluster of the form's number of workers.
    local = {**params.validate(), "runner": "DaskRunner", "num_workers": 3}
    assert dataflow_launch.execution_options(local, "train") == {"dask_local_workers": 3}


def test_a_run_converts_on_the_cluster_at_the_scheduler_address(
    imagenet_dag, dask_cluster, tmp_path
):
    dask_cluster.replace_lost_workers()
    generated = synthetic.generate_manual_dir(
        str(tmp_path / "manual"), splits=("validation",), num_validation=24
    )
    convert(generated.manual_dir, tmp_path / "direct", "--splits=validation", "--num_shards=3")
    conf = {
        "manual_dir": generated.manual_dir,
        "data_dir": str(tmp_path / "data"),
        "splits": ["validation"],
        "verify_checksums": False,
        "num_shards": 3,
        "runner": "DaskRunner",
        "dask_scheduler_address": dask_cluster.address,
        "num_workers": 1,
    }
    with dask_cluster.bundles_per_worker() as bundles:
        run = imagenet_dag.test(run_conf=conf)
    states = task_states(imagenet_dag.dag_id, run.run_id)
    assert str(run.state) == "success", states
    [job] = _xcom(imagenet_dag.dag_id, run.run_id, "plan_conversion")
    assert job["runner"] == "DaskRunner"
    assert job["pipeline_options"]["dask_client_address"] == dask_cluster.address
    assert sum(bundles.values()) > 0, "the convert task's job did not run on the cluster"
    assert published_shard_digests(conf["data_dir"]) == published_shard_digests(
        tmp_path / "direct")
    with open(os.path.join(version_dir(conf["data_dir"]), "lineage.json")) as f:
        assert json.load(f)["options"]["runner"] == "DaskRunner"
