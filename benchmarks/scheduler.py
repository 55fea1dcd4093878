"""The `imagenet2012` DAG as a deployment runs it: a real scheduler with the LocalExecutor.

`airflow standalone` starts the scheduler (LocalExecutor), the DAG processor, the triggerer
and the API server, as Docker Compose's services do, on a SQLite DB of its own. Runs are
triggered through the REST API as the UI's Trigger button does, and timed from the
trigger to the run's end (the run's own `end_date`, so the polling interval does not
count); each task's time comes from its task instance.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import psutil
import requests

from benchmarks.measure import tree_rss

DAG_ID = "imagenet2012"
STARTUP_TIMEOUT_S = 240
RUN_TIMEOUT_S = 3600
POLL_S = 0.5
IDLE_S = 2.0
# The scheduler settings of docker-compose.yaml's Airflow containers that decide how soon a
# run's next task starts (not its ports, health check or secrets).
DEPLOYMENT_SETTINGS = ("AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME",)


def deployment_settings(root: str) -> dict[str, str]:
    """DEPLOYMENT_SETTINGS as the project's docker-compose.yaml gives them."""
    import yaml

    with open(os.path.join(root, "docker-compose.yaml")) as f:
        env = yaml.safe_load(f)["x-airflow-env"]
    return {name: str(env[name]) for name in DEPLOYMENT_SETTINGS}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _instant(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclasses.dataclass
class DagRun:
    run_id: str
    wall_s: float  # from the trigger request to the run's end_date
    tasks: dict[str, float]  # task (convert[i] for a mapped one) → its duration in seconds
    states: dict[str, str]
    peak_tree_rss_bytes: int


class Airflow:
    """A running `airflow standalone` in its own AIRFLOW_HOME, talked to over its REST API."""

    def __init__(self, home: str, root: str):
        self.home = home
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}/api/v2"
        self.http = requests.Session()
        venv_bin = os.path.dirname(sys.executable)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "IMAGENET"))}
        env.update({
            "PATH": os.pathsep.join([venv_bin, env.get("PATH", "")]),
            "AIRFLOW_HOME": home,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(root, "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": os.path.join(root, "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            **deployment_settings(root),
            # standalone's simple auth manager, every request an admin's (this API is on
            # 127.0.0.1 for the benchmark only)
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "IMAGENET2012_SCHEDULE": "",  # runs only when triggered
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "NO_COLOR": "1",
        })
        os.makedirs(home, exist_ok=True)
        self.log_path = os.path.join(home, "standalone.out")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [os.path.join(venv_bin, "airflow"), "standalone"], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=home,
                start_new_session=True,
            )
        self.tree = psutil.Process(self.proc.pid)

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, self.base + path, **kwargs)

    def _fail(self, what: str) -> SystemExit:
        with open(self.log_path, errors="replace") as f:
            tail = "".join(f.readlines()[-40:])
        return SystemExit(f"{what}\n--- {self.log_path} (tail):\n{tail}")

    def wait_ready(self) -> float:
        """Seconds until the API answers with the DAG parsed and unpaused."""
        started = time.monotonic()
        while time.monotonic() - started < STARTUP_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise self._fail("airflow standalone exited during startup")
            try:
                dag = self.api("GET", f"/dags/{DAG_ID}", timeout=5)
                if dag.status_code == 200 and not dag.json()["is_paused"]:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(1)
        raise self._fail(f"Airflow not ready with {DAG_ID} after {STARTUP_TIMEOUT_S} s")

    def wait_idle(self) -> list[str]:
        """Waits until no DAG run is queued or running, in any DAG: a run measured next
        does not share the cores with what the previous one set off (the example
        `imagenet2012_consumer`, run by each publication's Asset events, imports
        TensorFlow and reads a batch of each split: ~5-12 s of CPU). The runs waited for."""
        waited: list[str] = []
        deadline = time.monotonic() + RUN_TIMEOUT_S
        idle_since = None
        while True:
            resp = self.api("GET", "/dags/~/dagRuns",
                            params={"state": ["queued", "running"], "limit": 100})
            if resp.status_code != 200:
                raise self._fail(f"listing DAG runs: HTTP {resp.status_code} {resp.text}")
            active = [f"{r['dag_id']}/{r['dag_run_id']}" for r in resp.json()["dag_runs"]]
            if active:
                idle_since = None
            else:
                # idle for a while: the scheduler creates an Asset-triggered run a loop or
                # two after the events that trigger it
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= IDLE_S:
                    return waited
            waited += [r for r in active if r not in waited]
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise self._fail(f"DAG runs still active: {active}")
            time.sleep(POLL_S)

    def run(self, conf: dict) -> DagRun:
        """Triggers a run with `conf`, waits for it to succeed; its wall time and tasks."""
        started = time.time()
        resp = self.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None,
                                                               "conf": conf})
        if resp.status_code not in (200, 201):
            raise self._fail(f"trigger: HTTP {resp.status_code} {resp.text}")
        run_id = resp.json()["dag_run_id"]
        peak = 0
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            peak = max(peak, tree_rss(self.tree)[0])
            run = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()
            if run["state"] == "success":
                break
            if run["state"] == "failed" or time.monotonic() > deadline:
                states = self._task_instances(run_id)
                raise self._fail(f"run {run_id} {run['state']}: "
                                 f"{ {self._name(t): t['state'] for t in states} }")
            if self.proc.poll() is not None:
                raise self._fail("airflow standalone exited during a run")
            time.sleep(POLL_S)
        tis = self._task_instances(run_id)
        return DagRun(
            run_id,
            wall_s=_instant(run["end_date"]) - started,
            tasks={self._name(t): round(t["duration"] or 0.0, 2) for t in tis},
            states={self._name(t): t["state"] for t in tis},
            peak_tree_rss_bytes=peak,
        )

    @staticmethod
    def _name(ti: dict) -> str:
        return ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"

    def _task_instances(self, run_id: str) -> list[dict]:
        resp = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
        return resp.json()["task_instances"]

    def stop(self, grace: float = 20) -> None:
        """SIGTERM to the whole process group, then SIGKILL to what is left."""
        self.http.close()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.proc.poll()
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def __enter__(self) -> Airflow:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
