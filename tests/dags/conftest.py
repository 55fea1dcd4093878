"""A real Airflow for the DAG tests: its own AIRFLOW_HOME with a SQLite metadata DB.

The environment is set before anything imports Airflow, which reads it at import time.
"""

from __future__ import annotations

import contextlib
import os
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
    return bag.get_dag("imagenet2012")


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
