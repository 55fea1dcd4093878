"""A real Airflow for the DAG tests: its own AIRFLOW_HOME with a SQLite metadata DB.

The environment is set before anything imports Airflow, which reads it at import time.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import ROOT

AIRFLOW_HOME = tempfile.mkdtemp(prefix="imagenet-airflow-home-")
AIRFLOW_ENV = {
    "AIRFLOW_HOME": AIRFLOW_HOME,
    "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(ROOT, "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": os.path.join(ROOT, "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME}/airflow.db",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "IMAGENET2012_SCHEDULE": "@weekly",
    "IMAGENET2012_POKE_INTERVAL_SECONDS": "1",
    # a scheduled run gives up on missing archives after 3 s (a triggered one waits on)
    "IMAGENET2012_SCHEDULED_WAIT_MINUTES": "0.05",
}
os.environ.update(AIRFLOW_ENV)
if os.path.join(ROOT, "plugins") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "plugins"))


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated, empty metadata DB (created once per test session)."""
    subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "airflow"), "db", "migrate"],
        check=True,
        capture_output=True,
        env={**os.environ, **AIRFLOW_ENV},
        timeout=300,
    )
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def imagenet_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=AIRFLOW_ENV["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("imagenet2012")
    PARSED_PARAMS[id(dag)] = (
        copy.deepcopy(dag.params), {t.task_id: copy.deepcopy(t.params) for t in dag.tasks}
    )
    return dag


# The params of each DAG object `imagenet_dag` handed out, as parsed: what every test using
# it starts and ends with (`restore_parsed_params`).
PARSED_PARAMS: dict[int, tuple] = {}


def restore_parsed_params(dag) -> None:
    """A `dag.test()` run's conf stays in the DAG object's params (its tasks run in this
    process and update them): put back the parsed ones."""
    params, task_params = PARSED_PARAMS[id(dag)]
    dag.params = copy.deepcopy(params)
    for task in dag.tasks:
        task.params = copy.deepcopy(task_params[task.task_id])


def _session(session):
    """The given metadata DB session, or one on this process's metadata DB."""
    if session is not None:
        return contextlib.nullcontext(session)
    from airflow.utils.session import create_session

    return create_session()


def task_states(dag_id: str, run_id: str, session=None) -> dict[str, str]:
    """{task_id: state} of every task instance of a DAG run; a mapped task's instances as
    `task_id[map_index]`. `session`: a SQLAlchemy session on another metadata DB (one a
    child process used), else this process's."""
    from airflow.models.taskinstance import TaskInstance

    with _session(session) as s:
        tis = s.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id).all()
        return {
            ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": str(ti.state)
            for ti in tis
        }


def task_instance(dag_id: str, run_id: str, task_id: str, map_index: int = -1):
    """The one TaskInstance row of a task in a DAG run (detached: read its columns)."""
    from airflow.models.taskinstance import TaskInstance

    with _session(None) as s:
        ti = (
            s.query(TaskInstance)
            .filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index)
            .one()
        )
        s.expunge(ti)
        return ti


# Runs the DAG `runs` times with one conf; writes one JSON line per run to a results file.
# (The task states are read afterwards from the process's copy of the metadata DB.)
RUN_DAG = r"""
import json, os, sys, time
from airflow.dag_processing.dagbag import DagBag
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session

conf, runs, results = json.loads(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3], "w")
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
assert not bag.import_errors, bag.import_errors
dag = bag.get_dag("imagenet2012")
for _ in range(runs):
    started = time.monotonic()
    run = dag.test(run_conf=conf)
    seconds = time.monotonic() - started
    with create_session() as session:
        xcoms = {
            row.task_id: row.value
            for row in session.query(XComModel).filter_by(
                dag_id=dag.dag_id, run_id=run.run_id, key="return_value"
            )
            if row.task_id in ("verify_archives", "validate_and_record")
        }
    results.write(json.dumps({
        "run_id": run.run_id,
        "seconds": seconds,
        "state": str(run.state),
        "xcoms": {k: json.loads(v) if isinstance(v, str) else v for k, v in xcoms.items()},
        "openlineage_client_imported": "openlineage.client" in sys.modules,
    }) + "\n")
    results.flush()
"""



def start_dag_test(airflow_db, workdir, conf: dict, runs: int = 1,
                   openlineage: dict | None = None):
    """A `dag.test()` process on a copy of the metadata DB, running the DAG `runs` times
    with `conf`; OpenLineage env only if given. Returns (process, log, results, home)."""
    home = os.path.join(workdir, "airflow-home")
    os.makedirs(home)
    shutil.copy(os.path.join(airflow_db, "airflow.db"), os.path.join(home, "airflow.db"))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(("OPENLINEAGE", "AIRFLOW__OPENLINEAGE__"))
    }
    env.update(AIRFLOW_ENV)
    env.update(
        AIRFLOW_HOME=home,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        PYTHONPATH=os.pathsep.join(
            [ROOT, AIRFLOW_ENV["AIRFLOW__CORE__PLUGINS_FOLDER"]]
            + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    env.update(openlineage or {})
    log = open(os.path.join(workdir, "dag-test.log"), "w")
    results = os.path.join(workdir, "runs.jsonl")
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_DAG, json.dumps(conf), str(runs), results],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True,
    )
    return proc, log, results, home


def finish_dag_test(proc, log, results, home) -> list[dict]:
    """The process's runs, each with its task states from the process's metadata DB."""
    import sqlalchemy
    from sqlalchemy.orm import Session

    proc.wait(timeout=600)
    log.close()
    if proc.returncode != 0:
        tail = open(log.name).read()[-5000:]
        raise AssertionError(f"dag.test() process exited {proc.returncode}:\n{tail}")
    runs = [json.loads(line) for line in open(results)]
    engine = sqlalchemy.create_engine(f"sqlite:///{home}/airflow.db")
    try:
        with Session(engine) as session:
            for run in runs:
                run["states"] = task_states("imagenet2012", run["run_id"], session=session)
    finally:
        engine.dispose()
    return runs


def create_asset_triggered_run(dag_id: str):
    """What the scheduler does for a DAG scheduled on Assets once their events are queued
    (the asset-DAG-run queue): the scheduler's own step creates the run and hands it the
    events it consumes. Returns the run's id, or None when nothing was queued."""
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.asset import AssetDagRunQueue
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun

    with _session(None) as session:
        if not session.query(AssetDagRunQueue).filter_by(target_dag_id=dag_id).count():
            return None
        before = {r.run_id for r in session.query(DagRun).filter_by(dag_id=dag_id)}
        runner = SchedulerJobRunner(job=Job(), num_runs=1)
        runner._create_dag_runs_asset_triggered(
            dag_models=[session.get(DagModel, dag_id)], session=session
        )
        session.commit()
        [run_id] = {r.run_id for r in session.query(DagRun).filter_by(dag_id=dag_id)} - before
        return run_id


def run_tasks(dag, run_id: str, timeout: float = 300) -> str:
    """Runs an existing DAG run's tasks as dag.test() does (in process, through the Task
    SDK) until the run ends; returns its state."""
    import time

    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.sdk import timezone
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.state import DagRunState, TaskInstanceState

    deadline = time.monotonic() + timeout
    with _session(None) as session:
        run = session.query(DagRun).filter_by(dag_id=dag.dag_id, run_id=run_id).one()
        run.dag = DBDagBag().get_dag_for_run(run, session=session)
        run.state, run.start_date = DagRunState.RUNNING, timezone.utcnow()
        session.commit()
        while run.state == DagRunState.RUNNING and time.monotonic() < deadline:
            session.expire_all()
            schedulable, _ = run.update_state(session=session)
            for ti in schedulable:
                if ti.state != TaskInstanceState.UP_FOR_RESCHEDULE:
                    ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
            session.commit()
            for ti in run.get_task_instances(state=[TaskInstanceState.SCHEDULED],
                                             session=session):
                _run_task(ti=ti, task=dag.task_dict[ti.task_id])
        return str(run.state)
