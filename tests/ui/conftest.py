"""A real Airflow (`airflow standalone`: api-server, scheduler, dag-processor, triggerer) with
login required, and Debian's headless Chromium driven by selenium.

The server has its own AIRFLOW_HOME and SQLite DB (LocalExecutor, the one SQLite allows
besides SequentialExecutor; standalone picks it) and the simple auth manager with one known
user, admin / admin (a passwords file: no generated password). Chromium and chromedriver
come from Debian (`make browser`, which `make test` runs); without them these tests skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import requests

from tests.dags import test_rest_api as rest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
USER, PASSWORD = "admin", "admin"
WINDOW = (1400, 1000)
# Chromium as root on a machine without network: no sandbox, nothing that phones home.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", f"--window-size={WINDOW[0]},{WINDOW[1]}",
]


def _ui_env(home: str, port: int) -> dict[str, str]:
    env = rest._standalone_env(home, port)
    env.pop("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS")  # here every request logs in
    passwords = os.path.join(home, "passwords.json")
    with open(passwords, "w") as f:
        json.dump({USER: PASSWORD}, f)
    env.update({
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": passwords,
    })
    return env


def token(base: str) -> str:
    resp = requests.post(f"{base}/auth/token", json={"username": USER, "password": PASSWORD},
                         timeout=10)
    resp.raise_for_status()
    return resp.json()["access_token"]


@pytest.fixture(scope="session")
def airflow_ui(tmp_path_factory):
    """The running Airflow; its `http` session carries an admin's token."""
    home = str(tmp_path_factory.mktemp("ui-airflow-home"))
    port = rest._free_port()
    log_path = os.path.join(home, "standalone.out")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "airflow"), "standalone"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=_ui_env(home, port), cwd=home, start_new_session=True,
        )
    server = rest.Standalone(home, port, proc, log_path)
    try:
        deadline = time.monotonic() + rest.STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(server.explain("airflow standalone exited during startup"))
            try:
                server.http.headers["Authorization"] = f"Bearer {token(server.base)}"
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    pytest.fail(server.explain("no login token from the API server"))
                time.sleep(2)
        rest._wait_until_ready(server)
        yield server
    finally:
        server.http.close()
        rest._stop(proc)


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} missing: `make browser` installs Debian's "
                    "chromium and chromium-driver (needs root and apt-get)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ui-chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in [*CHROMIUM_ARGS, f"--user-data-dir={profile}"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory):
    return tmp_path_factory.mktemp("ui-screenshots")
