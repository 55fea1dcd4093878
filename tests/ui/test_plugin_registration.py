"""`airflow plugins` (the CLI, in a fresh process) lists our plugin with its app and views."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_airflow_plugins_lists_the_views(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db",
        "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(ROOT, "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": os.path.join(ROOT, "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    })
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "airflow"), "plugins", "-o", "json"],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )
    plugins = {p["name"]: p for p in json.loads(proc.stdout)}
    ours = plugins["imagenet_datasets"]
    assert ours["fastapi_apps"] == [
        {"app": "imagenet_airflow.ui.LazyApp", "url_prefix": "/imagenet-datasets",
         "name": "ImageNet datasets"}
    ]
    views = {v["name"]: v for v in ours["external_views"]}
    assert views["ImageNet datasets"]["destination"] == "nav"
    assert views["ImageNet datasets"]["href"] == "/imagenet-datasets/"
    assert views["ImageNet dataset"]["destination"] == "dag_run"
    assert views["ImageNet dataset"]["href"] == (
        "/imagenet-datasets/runs?dag_id={DAG_ID}&run_id={RUN_ID}")
