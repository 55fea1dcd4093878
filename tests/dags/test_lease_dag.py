"""One writer per version, through the DAG: a DAG run beside a command line run, and two
DAG runs, into one data_dir. Real processes: the holder runs in its own process (a CLI
conversion, or `dag.test()` on a copy of the metadata DB), the other side starts while
the holder's lease is in place."""

from __future__ import annotations

import json
import os

from tests.conftest import (
    convert,
    paused,
    run_cli,
    start_convert,
    version_dir,
    wait_for_holder,
)
from tests.dags.conftest import finish_dag_test, start_dag_test, task_states


def _conf(manual_dir, data_dir) -> dict:
    return {
        "manual_dir": str(manual_dir),
        "data_dir": str(data_dir),
        "splits": ["train", "validation"],
        "verify_checksums": False,
        "num_workers": 2,
    }


def _refused_dag_run(dag, conf: dict, capfd) -> tuple[dict, str]:
    capfd.readouterr()
    run = dag.test(run_conf=conf)
    states = task_states(dag.dag_id, run.run_id)
    assert str(run.state) == "failed", states
    return states, capfd.readouterr().out


def _assert_refused_at_once(states: dict, log: str, holder: str):
    assert states["wait_for_archives"] == "success"
    assert states["take_lease"] == "failed", states
    # Nothing read or written after it; the other run's lease not released.
    assert states["verify_archives"] == "upstream_failed", states
    assert states.get("release_lease") in (None, "None", "upstream_failed"), states
    assert "another conversion is writing this version" in log and holder in log
    assert log.count("Traceback") == 0 or "AirflowFailException" in log


def test_a_dag_run_is_refused_while_a_command_line_run_converts(
    imagenet_dag, busy_input, tmp_path, capfd
):
    data = tmp_path / "data"
    cli = start_convert(busy_input, data)
    holder = wait_for_holder(data, cli)
    with paused(cli):
        states, log = _refused_dag_run(imagenet_dag, _conf(busy_input, data), capfd)
    out, err = cli.communicate(timeout=600)
    assert cli.returncode == 0, err
    _assert_refused_at_once(states, log, f"held by run {holder['run_id']}")
    run_cli("verify", version_dir(data))
    assert not (data / "imagenet2012" / ".5.1.0.lease").exists()  # released


def test_a_command_line_run_and_a_second_dag_run_are_refused_while_a_dag_run_converts(
    airflow_db, imagenet_dag, busy_input, tmp_path, capfd
):
    data = tmp_path / "data"
    first = start_dag_test(airflow_db, str(tmp_path / "first"), _conf(busy_input, data))
    proc = first[0]
    holder = wait_for_holder(data, proc, run_id_prefix="manual__")
    with paused(proc):
        cli = convert(busy_input, data, "--splits=train,validation", check=False)
        states, log = _refused_dag_run(imagenet_dag, _conf(busy_input, data), capfd)
    (result,) = finish_dag_test(*first)

    assert result["state"] == "success", result["states"]
    assert result["run_id"] == holder["run_id"]
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert f"held by run {holder['run_id']}" in cli.stderr
    _assert_refused_at_once(states, log, f"held by run {holder['run_id']}")
    # Exactly one version, the first run's, verifying; its staging gone, its lease released.
    run_cli("verify", version_dir(data))
    with open(os.path.join(version_dir(data), "lineage.json")) as f:
        assert json.load(f)["airflow"]["run_id"] == holder["run_id"]
    assert not (data / "imagenet2012" / ".5.1.0.incomplete").exists()
    assert not (data / "imagenet2012" / ".5.1.0.lease").exists()
