"""The `imagenet2012` DAG as the UI triggers it: a real `airflow standalone` and its REST API.

Slow-ish (about two minutes): starts scheduler, DAG processor, triggerer and API server in
a subprocess with its own AIRFLOW_HOME and SQLite DB (not the one tests/dags/conftest.py
sets up), triggers a run through `POST /api/v2/dags/imagenet2012/dagRuns` on a small
generated input, waits for it, and checks the published output. Also checks that a conf
breaking the params' JSON schema is refused with 400 before any run is created.

Auth: standalone forces the SimpleAuthManager; with `simple_auth_manager_all_admins` its
middleware adds an admin token to every request, so the API needs no `/auth/token` call.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from benchmarks import scheduler
from imagenet_beam import synthetic
from tests.conftest import ROOT, version_dir

DAG_ID = "imagenet2012"
SPLITS = ["train", "validation", "test"]
STARTUP_TIMEOUT = 180
RUN_TIMEOUT = 420
# A task going up for retry already means the run went wrong: report it instead of waiting
# out the DAG's retry delays.
BAD_TASK_STATES = {"failed", "upstream_failed", "up_for_retry"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Standalone:
    """A running `airflow standalone` and the bits needed to talk to it or explain failures."""

    def __init__(self, home: str, port: int, proc: subprocess.Popen, log_path: str):
        self.home = home
        self.base = f"http://127.0.0.1:{port}"
        self.proc = proc
        self.log_path = log_path
        self.http = requests.Session()

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, f"{self.base}/api/v2{path}", **kwargs)

    def output_tail(self, lines: int = 60, width: int = 600) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(line[:width].rstrip() + "\n" for line in f.readlines()[-lines:])
        except OSError as e:
            return f"(no standalone output: {e})"

    def task_log_tails(self, run_id: str, task_ids: set[str], lines: int = 15) -> str:
        """The last lines of each attempt's log of the given tasks (AIRFLOW_HOME/logs)."""
        out = []
        pattern = os.path.join(self.home, "logs", f"dag_id={DAG_ID}", f"run_id={run_id}", "**",
                               "*.log")
        for path in sorted(glob.glob(pattern, recursive=True)):
            if any(f"task_id={t}{os.sep}" in path for t in task_ids):
                with open(path, errors="replace") as f:
                    tail = [_log_line(line) for line in f.readlines()[-lines:]]
                out.append(f"--- {os.path.relpath(path, self.home)}\n" + "\n".join(tail))
        return "\n".join(out) or "(no task logs found)"

    def explain(self, what: str, run_id: str | None = None) -> str:
        parts = [what]
        if run_id is not None:
            try:
                tis = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()
                states = {_ti_name(ti): ti["state"] for ti in tis["task_instances"]}
                parts.append(f"task instances: {json.dumps(states, indent=1)}")
                bad = {ti["task_id"] for ti in tis["task_instances"]
                       if ti["state"] in BAD_TASK_STATES}
                if bad:
                    parts.append(f"task logs:\n{self.task_log_tails(run_id, bad)}")
            except (requests.RequestException, ValueError, KeyError) as e:
                parts.append(f"(could not list task instances: {e!r})")
        parts.append(f"standalone exit code: {self.proc.poll()}")
        parts.append(f"standalone output (tail):\n{self.output_tail()}")
        return "\n\n".join(parts)


def _log_line(line: str) -> str:
    """A task log line (JSON) as level, event and, for a failure, the exception."""
    try:
        record = json.loads(line)
    except ValueError:
        return line.rstrip()
    text = f"{record.get('level', '?')}: {record.get('event', '')}"
    for error in record.get("error_detail") or []:
        text += f"\n    {error.get('exc_type')}: {error.get('exc_value')}"
    return text


def _ti_name(ti: dict) -> str:
    return ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"


def _standalone_env(home: str, port: int) -> dict[str, str]:
    """The process env minus any Airflow settings of this test process (conftest sets some)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "IMAGENET"))}
    venv_bin = os.path.dirname(sys.executable)
    env.update({
        # standalone starts its components as plain `airflow ...`
        "PATH": os.pathsep.join([venv_bin, env.get("PATH", "")]),
        "AIRFLOW_HOME": home,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(ROOT, "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": os.path.join(ROOT, "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",  # fewer idle LocalExecutor workers
        **scheduler.deployment_settings(ROOT),  # as Docker Compose runs it
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        # the task supervisors reach the Execution API under base_url (default :8080)
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
        # fixed up front so no component races to generate its own into airflow.cfg
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "IMAGENET2012_SCHEDULE": "",  # no schedule: unpausing creates no run of its own
        "NO_COLOR": "1",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to standalone's whole process group (its components shut down on that, in a few
    seconds; standalone itself only handles SIGINT, which waits on them far longer), then
    SIGKILL to whatever is left (e.g. a task's Beam workers)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        proc.poll()  # reap standalone itself so it does not linger as a zombie
        time.sleep(0.2)
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _wait_until_ready(server: Standalone) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = "nothing yet"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(server.explain("airflow standalone exited during startup"))
        try:
            health = server.api("GET", "/monitor/health", timeout=5)
            if health.status_code != 200:
                last = f"health: HTTP {health.status_code} {health.text[:300]}"
            else:
                body = health.json()
                unhealthy = {name: part for name, part in body.items()
                             if part and part.get("status") != "healthy"}
                if unhealthy:
                    last = f"health: {unhealthy}"
                else:
                    dag = server.api("GET", f"/dags/{DAG_ID}", timeout=5)
                    if dag.status_code == 200:
                        assert dag.json()["is_paused"] is False, dag.json()
                        return
                    last = f"GET /dags/{DAG_ID}: HTTP {dag.status_code} {dag.text[:300]}"
        except requests.RequestException as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(2)
    try:
        errors = server.api("GET", "/importErrors", timeout=5).text[:3000]
    except requests.RequestException as e:
        errors = repr(e)
    pytest.fail(server.explain(
        f"Airflow not ready with {DAG_ID} parsed after {STARTUP_TIMEOUT} s; last: {last}\n"
        f"import errors: {errors}"
    ))


@pytest.fixture(scope="module")
def airflow_server(tmp_path_factory):
    home = str(tmp_path_factory.mktemp("standalone-airflow-home"))
    port = _free_port()
    log_path = os.path.join(home, "standalone.out")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "airflow"), "standalone"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_standalone_env(home, port),
            cwd=home,
            start_new_session=True,
        )
    server = Standalone(home, port, proc, log_path)
    try:
        _wait_until_ready(server)
        yield server
    finally:
        server.http.close()
        _stop(proc)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("rest_manual")),
        num_classes=2,
        train_per_class=3,
        num_validation=4,
        num_test=4,
        num_patched=1,
        test_archives=("2012", "patch"),
    )


def _run_ids(server: Standalone) -> set[str]:
    resp = server.api("GET", f"/dags/{DAG_ID}/dagRuns", params={"limit": 100})
    assert resp.status_code == 200, resp.text
    return {r["dag_run_id"] for r in resp.json()["dag_runs"]}


@pytest.fixture(scope="module")
def triggered_run(airflow_server, generated, tmp_path_factory):
    """A run triggered like the UI's Trigger button does, waited for until it succeeds."""
    server = airflow_server
    conf = {
        "manual_dir": generated.manual_dir,
        "data_dir": str(tmp_path_factory.mktemp("rest_data")),
        "splits": SPLITS,
        "test_patch": synthetic.PATCH_ARCHIVE,
        "verify_checksums": False,
        "num_workers": 1,
    }
    resp = server.api("POST", f"/dags/{DAG_ID}/dagRuns",
                      json={"logical_date": None, "conf": conf})
    assert resp.status_code in (200, 201), server.explain(
        f"trigger: HTTP {resp.status_code} {resp.text}")
    run_id = resp.json()["dag_run_id"]
    _wait_for_success(server, run_id)
    return conf, run_id


def _wait_for_success(server: Standalone, run_id: str) -> None:
    """Polls the run until it succeeds; fails fast, with the task states and logs, otherwise."""
    deadline = time.monotonic() + RUN_TIMEOUT
    state = None
    while time.monotonic() < deadline:
        run = server.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
        assert run.status_code == 200, server.explain(f"run: HTTP {run.status_code} {run.text}")
        state = run.json()["state"]
        if state == "success":
            return
        if state == "failed":
            pytest.fail(server.explain(f"run {run_id} failed", run_id))
        tis = server.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()
        bad = [_ti_name(ti) for ti in tis["task_instances"] if ti["state"] in BAD_TASK_STATES]
        if bad:
            pytest.fail(server.explain(f"run {run_id}: tasks went wrong: {bad}", run_id))
        if server.proc.poll() is not None:
            pytest.fail(server.explain("airflow standalone exited during the run", run_id))
        time.sleep(2)
    pytest.fail(server.explain(f"run {run_id} still {state} after {RUN_TIMEOUT} s", run_id))


@pytest.mark.parametrize(
    "bad_conf, param",
    [
        ({"splits": ["bogus"]}, "splits"),
        ({"file_format": "parquet"}, "file_format"),
        ({"num_shards": 0}, "num_shards"),
    ],
    ids=["unknown-split", "unknown-format", "zero-shards"],
)
def test_conf_breaking_the_params_schema_is_refused(airflow_server, bad_conf, param):
    before = _run_ids(airflow_server)
    resp = airflow_server.api("POST", f"/dags/{DAG_ID}/dagRuns",
                              json={"logical_date": None, "conf": bad_conf})
    assert resp.status_code == 400, resp.text
    assert f"param {param}" in resp.json()["detail"], resp.text
    assert _run_ids(airflow_server) == before


def test_triggered_run_succeeds_every_task(airflow_server, triggered_run):
    _, run_id = triggered_run
    resp = airflow_server.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
    states = {_ti_name(ti): ti["state"] for ti in resp.json()["task_instances"]}
    assert set(states) == {
        "wait_for_archives", "take_lease", "verify_archives", "plan_conversion", "convert[0]",
        "publish", "validate_and_record", "release_lease",
    }
    assert set(states.values()) == {"success"}, states


def test_lineage_counts_match_the_generated_input(triggered_run, generated):
    conf, run_id = triggered_run
    with open(os.path.join(version_dir(conf["data_dir"]), "lineage.json")) as f:
        lineage = json.load(f)
    assert {s: lineage["splits"][s]["num_examples"] for s in SPLITS} == {
        s: len(generated.split(s)) for s in SPLITS
    }
    assert lineage["airflow"]["run_id"] == run_id


def test_output_loads_in_tfds_with_the_generated_counts(triggered_run, generated):
    import tensorflow_datasets as tfds

    conf, _ = triggered_run
    builder = tfds.builder_from_directory(version_dir(conf["data_dir"]))
    assert {s: builder.info.splits[s].num_examples for s in SPLITS} == {
        s: len(generated.split(s)) for s in SPLITS
    }


def _task_log(server: Standalone, run_id: str, task_dir: str) -> list[dict]:
    """The records of a task's first attempt log (AIRFLOW_HOME/logs, JSON lines);
    task_dir: `task_id=…` or `task_id=…/map_index=N`."""
    path = os.path.join(server.home, "logs", f"dag_id={DAG_ID}", f"run_id={run_id}", task_dir,
                        "attempt=1.log")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_the_convert_logs_show_progress_at_info_and_the_run_nothing_red(
    airflow_server, triggered_run, generated
):
    """What a user reads in the task logs of a successful run: in the convert task's (one
    job for every split on the DirectRunner) each split's progress lines, ending at 100%
    with its image count, as INFO; no warning or error anywhere (TensorFlow's
    start-up notes on stderr would be errors, Beam's launcher's output on stderr warnings)."""
    _, run_id = triggered_run
    final = {}
    records = _task_log(airflow_server, run_id, "task_id=convert/map_index=0")
    events = [r["event"] for r in records]
    assert not any("dataflow_config" in e for e in events), events
    lines = [r for r in records if "imagenet_beam.progress: " in r["event"]]
    assert lines and {r["level"] for r in lines} == {"info"}, events
    for line in lines:
        split, _, text = line["event"].split("imagenet_beam.progress: ")[1].partition(": ")
        final[split] = text  # the split's last line
    assert set(final) == set(SPLITS)
    for split, text in final.items():
        n = len(generated.split(split))
        assert text.startswith(f"1/1 shards, {n}/{n} images (100%), "), (split, text)

    pattern = os.path.join(airflow_server.home, "logs", f"dag_id={DAG_ID}", f"run_id={run_id}",
                           "**", "attempt=1.log")
    paths = glob.glob(pattern, recursive=True)
    assert any("task_id=validate_and_record" in p for p in paths), paths
    for path in paths:
        with open(path) as f:
            loud = [(r["level"], r["event"]) for r in map(json.loads, filter(str.strip, f))
                    if r.get("level") not in ("info", "debug")]
        assert loud == [], (os.path.relpath(path, airflow_server.home), loud)
