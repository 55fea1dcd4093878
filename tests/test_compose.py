"""The production stack (docker-compose.yaml + Dockerfile) is wired the way Airflow 3 needs.

No Docker engine is needed: the compose file is read with PyYAML (anchors and merge keys
resolved) and interpolated with Compose's rules and an empty environment, i.e. with the
defaults a user gets with no .env file. Setting names are checked against the installed
Airflow's own config.yml, so a typo in an AIRFLOW__SECTION__KEY variable fails here instead
of being silently ignored by Airflow. `docker compose config` runs too where Compose is
installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
REQUIREMENTS = ROOT / "requirements.txt"

POSTGRES = "postgres"
INIT = "airflow-init"
APISERVER = "airflow-apiserver"
SCHEDULER = "airflow-scheduler"
DAG_PROCESSOR = "airflow-dag-processor"
TRIGGERER = "airflow-triggerer"
AIRFLOW_SERVICES = (INIT, APISERVER, SCHEDULER, DAG_PROCESSOR, TRIGGERER)
LONG_RUNNING = (APISERVER, SCHEDULER, DAG_PROCESSOR, TRIGGERER)
# Tasks run inside the scheduler (LocalExecutor); the sensor may defer to the triggerer.
RUNS_TASKS = (SCHEDULER, TRIGGERER)
COMMAND_OF = {
    APISERVER: "airflow api-server",
    SCHEDULER: "airflow scheduler",
    DAG_PROCESSOR: "airflow dag-processor",
    TRIGGERER: "airflow triggerer",
    INIT: "airflow db migrate",
}

MANUAL_MOUNT = "/data/imagenet/manual"
DATA_MOUNT = "/data/imagenet/tfds"
LOCAL_ONLY_MARKER = "# local-only default: change for any shared deployment"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$")
NOT_A_SECRET = re.compile(r"_(FILE|PATH|CMD)$")
DEFAULTED_SUBSTITUTION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-[^{}$]*\}")
AIRFLOW_SETTING = re.compile(r"AIRFLOW__([A-Z0-9_]+?)__([A-Z0-9_]+)")


# --- Compose's variable interpolation ---------------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+?])(.*))?", re.S)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """`$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}`, `${VAR+alt}`,
    `${VAR:?err}` and `${VAR?err}`, nested, as the Compose specification defines them."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_expand(text[i + 2 : end], env))
            i = end + 1
        elif m := _NAME.match(text, i + 1):
            out.append(env.get(m.group(), ""))
            i = m.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for j in range(start, len(text)):
        if text.startswith("${", j):
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unclosed ${{ in {text!r}")


def _expand(expr: str, env: Mapping[str, str]) -> str:
    m = _BRACED.fullmatch(expr)
    if not m:
        raise ValueError(f"not a Compose substitution: ${{{expr}}}")
    name, op, arg = m.groups()
    value = env.get(name)
    if op is None:
        return value or ""
    arg = interpolate(arg, env)
    if op == ":-":
        return value if value else arg
    if op == "-":
        return value if value is not None else arg
    if op == ":+":
        return arg if value else ""
    if op == "+":
        return arg if value is not None else ""
    if (op == ":?" and not value) or (op == "?" and value is None):
        raise ValueError(f"{name} is required: {arg}")
    return value


def _interpolate_all(node, env: Mapping[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_all(x, env) for x in node]
    if isinstance(node, dict):
        return {k: _interpolate_all(v, env) for k, v in node.items()}
    return node


# --- reading the compose file ------------------------------------------------------------


@cache
def raw_compose() -> dict:
    """The compose file as YAML: anchors and `<<` merge keys resolved, not interpolated."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@cache
def compose() -> dict:
    """What Compose sees with no .env file and none of its variables set."""
    return _interpolate_all(raw_compose(), {})


def services(doc: dict | None = None) -> dict:
    return (doc or compose())["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def mounts(service: dict) -> dict[str, tuple[str, str]]:
    """container path → (source, mode), from the short `src:dst[:mode]` syntax."""
    out = {}
    for volume in service.get("volumes") or []:
        parts = volume.split(":")
        assert len(parts) in (2, 3), f"unexpected volume syntax: {volume!r}"
        out[parts[1]] = (parts[0], parts[2] if len(parts) == 3 else "rw")
    return out


def command_text(service: dict) -> str:
    cmd = service.get("command") or service.get("entrypoint") or ""
    return cmd if isinstance(cmd, str) else " ".join(cmd)


def bash_script(service: dict) -> str | None:
    """The script of a `bash -c SCRIPT` command, if the command is one."""
    cmd = service.get("command")
    if isinstance(cmd, list) and cmd[:2] == ["bash", "-c"]:
        return cmd[2]
    return None


# --- Airflow's configuration reference ---------------------------------------------------


@cache
def airflow_options() -> dict[str, set[str]]:
    """section → option names: Airflow core's config.yml plus every installed provider's."""
    import airflow

    config_yml = Path(airflow.__file__).parent / "config_templates" / "config.yml"
    sections = {
        section: set((body or {}).get("options", {}))
        for section, body in yaml.safe_load(config_yml.read_text()).items()
    }
    for entry_point in metadata.entry_points(group="apache_airflow_provider"):
        info = entry_point.load()()
        for section, body in (info.get("config") or {}).items():
            sections.setdefault(section, set()).update((body or {}).get("options", {}))
    return sections


def unknown_airflow_setting(env_name: str) -> str | None:
    """Why AIRFLOW__SECTION__KEY is not an Airflow setting, or None if it is one."""
    m = AIRFLOW_SETTING.fullmatch(env_name)
    if not m:
        return None if not env_name.startswith("AIRFLOW__") else f"{env_name}: malformed"
    section, key = m.group(1).lower(), m.group(2).lower()
    options = airflow_options()
    if section not in options:
        return f"{env_name}: Airflow has no [{section}] section"
    if key in options[section]:
        return None
    for suffix in ("_cmd", "_secret"):  # AIRFLOW__X__Y_CMD / _SECRET read Y from elsewhere
        if key.endswith(suffix) and key.removesuffix(suffix) in options[section]:
            return None
    return f"{env_name}: [{section}] has no option {key!r}"


# --- the services --------------------------------------------------------------------------


def test_the_airflow_3_services_and_postgres_are_there():
    assert set(services()) == {POSTGRES, *AIRFLOW_SERVICES}
    assert not any("worker" in name for name in services()), "LocalExecutor needs no worker"


@pytest.mark.parametrize("name", [POSTGRES, *AIRFLOW_SERVICES])
def test_every_service_has_an_image_and_a_command(name):
    service = services()[name]
    assert service.get("image") or service.get("build"), name
    assert command_text(service).strip(), f"{name} has no command or entrypoint"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_services_build_this_repo_into_one_image(name):
    service = services()[name]
    assert service["build"] in (".", {"context": "."}), name
    assert service["image"] == services()[APISERVER]["image"]
    assert service["platform"] == "linux/amd64", "tensorflow-cpu has no ARM wheels"
    assert COMMAND_OF[name] in command_text(service), f"{name}: {command_text(service)!r}"


def test_airflow_services_run_as_a_non_root_user():
    for name in LONG_RUNNING:
        uid = services()[name]["user"].split(":")[0]
        assert uid not in ("0", "root"), f"{name} runs as root"
    assert services()[APISERVER]["user"] == "50000:0", "the default uid is the image's"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_local_executor_and_postgres_metadata_db_everywhere(name):
    env = environment(services()[name])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"

    url = make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    pg = environment(services()[POSTGRES])
    assert url.get_backend_name() == "postgresql"
    assert url.host == POSTGRES, "the DB URL must name the postgres service"
    assert (url.port or 5432) == 5432
    assert url.username == pg["POSTGRES_USER"]
    assert url.password == pg["POSTGRES_PASSWORD"]
    assert url.database == pg["POSTGRES_DB"]


def test_db_password_is_one_setting_for_postgres_and_airflow():
    changed = _interpolate_all(raw_compose(), {"POSTGRES_PASSWORD": "s3cret"})
    assert environment(changed["services"][POSTGRES])["POSTGRES_PASSWORD"] == "s3cret"
    for name in AIRFLOW_SERVICES:
        env = environment(changed["services"][name])
        assert make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).password == "s3cret", name


@pytest.mark.parametrize(
    "setting",
    [
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    ],
)
def test_settings_every_component_must_share(setting):
    """Unset, each process would generate its own key and the components could not talk."""
    values = {name: environment(services()[name]).get(setting) for name in AIRFLOW_SERVICES}
    assert len(set(values.values())) == 1 and None not in values.values(), values


def test_fernet_key_default_is_a_valid_key():
    from cryptography.fernet import Fernet

    Fernet(environment(services()[SCHEDULER])["AIRFLOW__CORE__FERNET_KEY"])


def test_workers_reach_the_execution_api_on_the_api_server():
    url = environment(services()[SCHEDULER])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    assert url == f"http://{APISERVER}:8080/execution/"


def test_api_server_publishes_its_port():
    ports = services()[APISERVER]["ports"]
    published = [p.rsplit(":", 2) for p in map(str, ports)]
    assert any(container == "8080" for *_, container in published), ports
    assert ["127.0.0.1", "8080", "8080"] in published, "by default the UI is local-only"
    for name in set(services()) - {APISERVER}:
        assert not services()[name].get("ports"), f"{name} needs no published port"


def test_ui_login_is_configured_for_simple_auth_manager():
    env = environment(services()[APISERVER])
    users = [u.split(":") for u in env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(",")]
    assert users == [["admin", "admin"]]
    assert env["AIRFLOW_ADMIN_USER"] == "admin"
    assert env["AIRFLOW_ADMIN_PASSWORD"] == "admin"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"].startswith("/opt/airflow/")


def test_api_server_writes_a_passwords_file_airflow_reads(tmp_path):
    """Run the API server's start-up snippet, then ask Airflow's SimpleAuthManager."""
    script = bash_script(services()[APISERVER])
    snippet = re.search(r"<<'EOF'\n(.*?)\nEOF\n", script, re.S).group(1)
    assert script.rstrip().endswith("exec airflow api-server")

    passwords_file = tmp_path / "passwords.json"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "ops:admin",
        "AIRFLOW_ADMIN_USER": "ops",
        "AIRFLOW_ADMIN_PASSWORD": 'pa"ss word',
    }
    subprocess.run([sys.executable, "-c", snippet], env=env, check=True, timeout=60)
    assert json.loads(passwords_file.read_text()) == {"ops": 'pa"ss word'}
    assert passwords_file.stat().st_mode & 0o077 == 0

    read_back = (
        "import json\n"
        "from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import "
        "SimpleAuthManager as M\n"
        "print(json.dumps([M.get_passwords(), [(u.username, u.role) for u in M.get_users()]]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", read_back], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == [{"ops": 'pa"ss word'}, [["ops", "admin"]]]


@pytest.mark.parametrize("name", [n for n in AIRFLOW_SERVICES if bash_script(services()[n])])
def test_shell_scripts_parse(name):
    proc = subprocess.run(
        ["bash", "-n", "-c", bash_script(services()[name])], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


# --- volumes ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_dags_and_plugins_are_mounted_where_airflow_looks(name):
    service = services()[name]
    env, mounted = environment(service), mounts(service)
    assert mounted[env["AIRFLOW__CORE__DAGS_FOLDER"]] == ("./dags", "rw")
    assert mounted[env["AIRFLOW__CORE__PLUGINS_FOLDER"]] == ("./plugins", "rw")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/dags"


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_task_logs_are_shared_with_the_api_server(name):
    assert mounts(services()[name])["/opt/airflow/logs"][0] == "airflow-logs"
    assert "airflow-logs" in compose()["volumes"]


@pytest.mark.parametrize("name", RUNS_TASKS)
def test_imagenet_folders_are_mounted_where_tasks_run(name):
    mounted = mounts(services()[name])
    assert mounted[MANUAL_MOUNT] == ("./manual", "ro"), "the tarballs are read-only"
    assert mounted[DATA_MOUNT] == ("./data", "rw")

    raw = services(raw_compose())[name]["volumes"]
    assert "${IMAGENET_MANUAL_DIR:-./manual}:" + MANUAL_MOUNT + ":ro" in raw
    assert "${IMAGENET_DATA_DIR:-./data}:" + DATA_MOUNT in raw

    moved = _interpolate_all(
        raw_compose(), {"IMAGENET_MANUAL_DIR": "/srv/in", "IMAGENET_DATA_DIR": "/srv/out"}
    )
    assert mounts(moved["services"][name])[MANUAL_MOUNT] == ("/srv/in", "ro")
    assert mounts(moved["services"][name])[DATA_MOUNT] == ("/srv/out", "rw")


@pytest.mark.parametrize("name", [SCHEDULER, TRIGGERER, DAG_PROCESSOR])
def test_dag_defaults_are_the_container_paths(name):
    """The DAG's manual_dir/data_dir defaults come from these (it is parsed in the
    dag-processor, run in the scheduler and triggerer); host paths never reach it."""
    env = environment(services()[name])
    assert env["IMAGENET_MANUAL_DIR"] == MANUAL_MOUNT
    assert env["IMAGENET_DATA_DIR"] == DATA_MOUNT
    moved = _interpolate_all(raw_compose(), {"IMAGENET_MANUAL_DIR": "/srv/in"})
    assert environment(moved["services"][name])["IMAGENET_MANUAL_DIR"] == MANUAL_MOUNT


@pytest.mark.parametrize("name", RUNS_TASKS)
def test_gcp_credentials_are_optional(name):
    credentials = "/opt/airflow/gcp/credentials.json"
    without = services()[name]
    assert environment(without)["GOOGLE_APPLICATION_CREDENTIALS"] == "", "unset without a key"
    assert mounts(without)[credentials] == ("/dev/null", "ro")

    given = _interpolate_all(raw_compose(), {"GOOGLE_APPLICATION_CREDENTIALS_HOST": "/k.json"})
    with_key = given["services"][name]
    assert environment(with_key)["GOOGLE_APPLICATION_CREDENTIALS"] == credentials
    assert mounts(with_key)[credentials] == ("/k.json", "ro")
    for other in set(AIRFLOW_SERVICES) - set(RUNS_TASKS):
        service = given["services"][other]
        assert not environment(service).get("GOOGLE_APPLICATION_CREDENTIALS"), other


# --- start order and health -------------------------------------------------------------


def test_postgres_and_long_running_services_have_healthchecks():
    for name in (POSTGRES, *LONG_RUNNING):
        test = services()[name].get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        if test[:3] == ["CMD", "python", "-c"]:
            compile(test[3], f"{name} healthcheck", "exec")
    assert environment(services()[SCHEDULER])["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"


def test_the_scheduler_loops_sooner_than_airflows_default_as_the_benchmark_runs_it():
    from benchmarks import scheduler

    sleep = environment(services()[SCHEDULER])["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"]
    assert 0 < float(sleep) < 1  # Airflow's default: 1 s a loop with nothing to do
    assert scheduler.deployment_settings(ROOT) == {
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": sleep}


def test_start_order():
    def needs(name: str) -> dict[str, str]:
        return {dep: cond["condition"] for dep, cond in services()[name]["depends_on"].items()}

    assert needs(INIT) == {POSTGRES: "service_healthy"}
    for name in LONG_RUNNING:
        assert needs(name)[POSTGRES] == "service_healthy", name
        assert needs(name)[INIT] == "service_completed_successfully", name
    for name in RUNS_TASKS:
        assert needs(name)[APISERVER] == "service_healthy", f"{name} needs the Execution API"
    assert services()[INIT]["restart"] == "no"


# --- secrets -----------------------------------------------------------------------------


def _secret_settings():
    for name, service in services(raw_compose()).items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) and not NOT_A_SECRET.search(key):
                yield name, key, value


def test_secrets_are_overridable_with_marked_local_only_defaults():
    found = list(_secret_settings())
    assert {key for _, key, _ in found} >= {
        "POSTGRES_PASSWORD",
        "AIRFLOW_ADMIN_PASSWORD",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CORE__FERNET_KEY",
    }
    for name, key, value in found:
        assert DEFAULTED_SUBSTITUTION.fullmatch(value), (
            f"{name}: {key} must be a ${{VAR:-local-only default}} substitution, not {value!r}"
        )

    url = environment(services(raw_compose())[SCHEDULER])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    password = re.fullmatch(r"[^:]+://[^:]+:(.*)@[^@]+", url).group(1)
    assert DEFAULTED_SUBSTITUTION.fullmatch(password), url


def test_every_secret_default_carries_the_local_only_marker():
    lines = COMPOSE_FILE.read_text().splitlines()
    keys = {key for _, key, _ in _secret_settings()} | {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"}
    checked = 0
    for i, line in enumerate(lines):
        m = re.match(r"\s*([A-Z0-9_]+):", line)
        if not m or m.group(1) not in keys:
            continue
        comments = []
        for above in reversed(lines[:i]):
            if not above.strip().startswith("#"):
                break
            comments.append(above.strip())
        assert LOCAL_ONLY_MARKER in comments, f"line {i + 1} lacks {LOCAL_ONLY_MARKER!r}"
        checked += 1
    assert checked >= len(keys)


# --- setting names -------------------------------------------------------------------------


def test_every_airflow_setting_exists_in_the_installed_airflow():
    problems = [
        f"{name}: {problem}"
        for name, service in services(raw_compose()).items()
        for key in environment(service)
        if (problem := unknown_airflow_setting(key))
    ]
    assert not problems, "\n".join(problems)
    assert sum(key.startswith("AIRFLOW__") for key in environment(services()[SCHEDULER])) >= 10


@pytest.mark.parametrize(
    "typo",
    [
        "AIRFLOW__CORE__EXECUTR",
        "AIRFLOW__COR__EXECUTOR",
        "AIRFLOW__API__JWT_SECRET",  # right key, wrong section (it is [api_auth])
        "AIRFLOW__CORE__EXECUTOR_SECRET_CMD",
    ],
)
def test_a_misspelt_setting_is_caught(typo):
    assert unknown_airflow_setting(typo)


def test_setting_checker_knows_suffixes_and_provider_sections():
    assert unknown_airflow_setting("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD") is None
    assert unknown_airflow_setting("AIRFLOW__API_AUTH__JWT_SECRET") is None
    assert unknown_airflow_setting("AIRFLOW__API_AUTH__JWT_SECRET_SECRET") is None
    assert unknown_airflow_setting("GOOGLE_APPLICATION_CREDENTIALS") is None


# --- Dockerfile --------------------------------------------------------------------------


@cache
def dockerfile() -> str:
    """The Dockerfile with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def test_dockerfile_base_home_and_user():
    text = dockerfile()
    assert re.search(r"^FROM python:3\.11(-slim)?\b", text, re.M)
    assert re.search(r"^ENV .*\bAIRFLOW_HOME=/opt/airflow\b", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the image must not run as root"
    assert re.search(r"^COPY dags /opt/airflow/dags$", text, re.M)
    assert re.search(r"^COPY plugins /opt/airflow/plugins$", text, re.M)


def test_dockerfile_installs_requirements_and_the_beam_package():
    text = dockerfile()
    assert re.search(r"^COPY requirements\.txt ", text, re.M)
    # Every pinned line except the editable beam one, which the image installs non-editable.
    m = re.search(r"grep -v '(\^-e \./beam\$)' requirements\.txt > (\S+)", text)
    assert m, "the image installs requirements.txt without its `-e ./beam` line"
    requirement_lines = REQUIREMENTS.read_text().splitlines()
    assert sum(bool(re.match(m.group(1), line)) for line in requirement_lines) == 1
    assert re.search(rf"pip install -r {re.escape(m.group(2))}", text)
    assert re.search(r"^COPY beam/pyproject\.toml beam/setup\.py /opt/airflow/beam/$", text, re.M)
    assert re.search(r"^COPY beam/imagenet_beam /opt/airflow/beam/imagenet_beam$", text, re.M)
    assert re.search(r"pip install --no-deps \./beam\b", text)
    assert "pip check" in text
    # The DAG's Dataflow runs ship the package with this setup.py.
    assert re.search(r"^ENV IMAGENET_BEAM_SETUP_FILE=/opt/airflow/beam/setup\.py$", text, re.M)


def test_the_postgres_drivers_are_pinned_in_requirements_txt():
    """The compose DB URL needs psycopg2 (sync) and asyncpg (the async engine Airflow 3
    derives from the same URL); both come from the one pinned environment."""
    pinned = {
        line.split("==")[0].lower()
        for line in REQUIREMENTS.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert {"psycopg2-binary", "asyncpg"} <= pinned
    assert "import imagenet_beam, airflow, psycopg2, asyncpg" in dockerfile()


# --- Docker Compose itself, where it is installed ----------------------------------------


def _compose_cli_missing() -> str | None:
    if not shutil.which("docker"):
        return "no docker client on PATH"
    try:
        proc = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`docker compose version` failed: {e}"
    if proc.returncode != 0:
        first_line = (proc.stderr.strip().splitlines() or ["(no output)"])[0]
        return f"the docker client has no compose plugin ({first_line})"
    return None


def test_docker_compose_accepts_the_file():
    if reason := _compose_cli_missing():
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGENET_", "AIRFLOW_"))}
    proc = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
