"""A real Airflow for the DAG tests: its own AIRFLOW_HOME with a SQLite metadata DB.

The environment is set before anything imports Airflow, which reads it at import time.
"""

from __future__ import annotations

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
