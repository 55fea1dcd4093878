"""The "ImageNet datasets" page and each run's "ImageNet dataset" tab, in a real Chromium
against a real Airflow (tests/ui/conftest.py).

A user logs in, triggers imagenet2012 from the trigger form on a small generated input
(train and validation), reads the convert task's log, opens the run's tab and the nav page
and sees lineage.json's counts; the report shows when the version has one. Without a login
nothing is served, and only files the version's completion marker lists are.
About three minutes on two shared cores: 40 s to start Airflow, 1-2 min for the run.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest
import requests

from imagenet_beam import publish
from tests.conftest import ROOT, run_cli, version_dir
from tests.dags import test_rest_api as rest
from tests.ui.conftest import PASSWORD, USER

pytestmark = pytest.mark.browser

DAG_ID = "imagenet2012"
SPLITS = ["train", "validation"]
PLUGIN = "/imagenet-datasets"
# What the convert task's log shows as it converts: the launcher's progress line, here the
# last one of the split (progress.py).
PROGRESS_LINE = re.compile(r"(train|validation): (\d+)/\2 shards, [\d,]+/[\d,]+ images \(100%\)")
WAIT = 30


def wait_for(what: str, check, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as e:  # noqa: BLE001 - the page is still loading
            last = e
            result = None
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


def by_css(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def set_text(element, text: str) -> None:
    """Replaces a React input's value the way a user does: select all, type."""
    from selenium.webdriver.common.keys import Keys

    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.BACKSPACE)
    element.send_keys(text)


def login(driver, base: str) -> None:
    driver.get(f"{base}/")
    wait_for("the login form", lambda: by_css(driver, "input[name=username]"))
    by_css(driver, "input[name=username]")[0].send_keys(USER)
    by_css(driver, "input[name=password]")[0].send_keys(PASSWORD)
    by_css(driver, "button[type=submit]")[0].click()
    wait_for("the UI after login", lambda: "/auth/login" not in driver.current_url
             and any(c["name"] == "_token" for c in driver.get_cookies()))


def open_plugin_frame(driver, url: str, ready_css: str):
    """Opens a UI page holding one of our views and switches into its iframe."""
    driver.switch_to.default_content()
    driver.get(url)
    frame = wait_for("the plugin's iframe", lambda: by_css(driver, "iframe")[0])
    driver.switch_to.frame(frame)
    wait_for(ready_css, lambda: by_css(driver, ready_css))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    manual = str(tmp_path_factory.mktemp("ui-manual"))
    run_cli("generate", f"--manual_dir={manual}", "--splits=train,validation",
            "--num_classes=2", "--train_per_class=3", "--num_validation=4", "--awkward")
    return manual


@pytest.fixture(scope="module")
def triggered(airflow_ui, browser, generated, tmp_path_factory, screenshots):
    """A run triggered from the UI's trigger form, waited for until it succeeds."""
    data_dir = str(tmp_path_factory.mktemp("ui-data"))
    login(browser, airflow_ui.base)
    browser.get(f"{airflow_ui.base}/dags/{DAG_ID}")
    trigger = wait_for("the Trigger button", lambda: [
        b for b in by_css(browser, "button") if b.text.strip() == "Trigger"][0])
    trigger.click()
    dialog = wait_for("the trigger form", lambda: [
        d for d in by_css(browser, "[role=dialog]") if d.is_displayed()
        and by_css(d, "#element_manual_dir")][0])
    # the params' sections start collapsed; all these fields are in "Input and output"
    section = by_css(dialog, "button[data-part=item-trigger][id$=':trigger:Input and output']")[0]
    if section.get_attribute("aria-expanded") != "true":
        section.click()
    wait_for("the form's fields", lambda: by_css(dialog, "#element_manual_dir")[0].is_displayed())
    set_text(by_css(dialog, "#element_manual_dir")[0], generated)
    set_text(by_css(dialog, "#element_data_dir")[0], data_dir)
    # splits: a multi-select holding every split by default (not a text box); leave out test
    assert not by_css(dialog, "textarea#element_splits")
    for split in set(("train", "validation", "test")) - set(SPLITS):
        wait_for(f"{split} in the splits multi-select", lambda s=split: by_css(
            dialog, f"[aria-label='Remove {s}']")[0]).click()
        wait_for(f"{split} removed", lambda s=split: not by_css(
            dialog, f"[aria-label='Remove {s}']"))
    assert all(by_css(dialog, f"[aria-label='Remove {s}']") for s in SPLITS)
    verify = by_css(dialog, "input[name=element_verify_checksums]")[0]
    if verify.is_selected():  # generated archives cannot match image-net.org's checksums
        browser.execute_script("arguments[0].closest('label').click()", verify)
    assert not verify.is_selected()
    browser.save_screenshot(str(screenshots / "trigger-form.png"))
    before = rest._run_ids(airflow_ui)
    [b for b in by_css(dialog, "button") if b.text.strip() == "Trigger"][-1].click()
    run_id = wait_for("the triggered run", lambda: next(iter(
        rest._run_ids(airflow_ui) - before), None))
    conf = airflow_ui.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["conf"]
    assert conf["data_dir"] == data_dir and conf["splits"] == SPLITS, conf
    assert conf["verify_checksums"] is False, conf
    rest._wait_for_success(airflow_ui, run_id)
    return run_id, version_dir(data_dir)


def lineage(vdir: str) -> dict:
    with open(os.path.join(vdir, "lineage.json")) as f:
        return json.load(f)


def event_id(server, run_id: str) -> int:
    resp = server.api("GET", "/assets/events", params={"source_run_id": run_id})
    events = [e for e in resp.json()["asset_events"] if e["source_dag_id"] == DAG_ID]
    assert events, resp.text
    return min(e["id"] for e in events)


# --- no login, no page -------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    f"{PLUGIN}/",
    f"{PLUGIN}/runs?dag_id={DAG_ID}&run_id=anything",
    f"{PLUGIN}/events/1/files/lineage.json",
])
def test_every_page_needs_an_airflow_login(airflow_ui, path):
    url = airflow_ui.base + path
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer not-a-jwt"},
                        timeout=10).status_code == 403
    assert requests.get(url, cookies={"_token": "not-a-jwt"}, timeout=10).status_code == 403
    ok = requests.get(url, headers={"Authorization": f"Bearer {rest_token(airflow_ui)}"},
                      timeout=10)
    assert ok.status_code in (200, 404), ok.text  # 404: no such run or event yet


def rest_token(server) -> str:
    return server.http.headers["Authorization"].split(" ", 1)[1]


# --- the run, seen in the browser ---------------------------------------------------------

def test_convert_log_shows_progress(airflow_ui, browser, triggered, screenshots):
    run_id, _ = triggered
    browser.switch_to.default_content()
    # The DirectRunner's one convert instance converts every split; its log page in the UI
    # shows each split's progress.
    browser.get(f"{airflow_ui.base}/dags/{DAG_ID}/runs/{run_id}/tasks/convert/mapped/0")
    shown = wait_for(
        "every split's last progress line in the convert log",
        lambda: (found := {m.group(1) for m in PROGRESS_LINE.finditer(
            browser.find_element("tag name", "body").text)}) == set(SPLITS) and found,
        timeout=60,
    )
    browser.save_screenshot(str(screenshots / "convert-log.png"))
    assert sorted(shown) == SPLITS


def test_run_tab_shows_the_lineage(airflow_ui, browser, triggered, screenshots):
    run_id, vdir = triggered
    expected = lineage(vdir)
    open_plugin_frame(
        browser,
        f"{airflow_ui.base}/dags/{DAG_ID}/runs/{run_id}/plugin/imagenet-dataset",
        ".lineage-examples",
    )
    assert by_css(browser, "#version-dir")[0].text == vdir
    counts = {e.get_attribute("data-split"): int(e.text.replace(",", ""))
              for e in by_css(browser, "span.examples")}
    in_lineage = {s: expected["splits"][s]["num_examples"] for s in SPLITS}
    assert counts == in_lineage
    lineage_counts = {e.get_attribute("data-split"): int(e.text.replace(",", ""))
                      for e in by_css(browser, ".lineage-examples")}
    assert lineage_counts == in_lineage
    page = browser.page_source
    for split in SPLITS:
        for shard in expected["splits"][split]["shards"]:
            assert shard["sha256"] in page and shard["file"] in page
    for archive in expected["archives"]:
        assert archive["sha256"] in page
    assert "not checked against published values" in page  # verify_checksums was off
    assert expected["fixed_images"], "the awkward input has images to fix"
    for fixed in expected["fixed_images"]:
        assert fixed["file_name"] in page
    for warning in expected["warnings"]:
        assert warning in browser.find_element("tag name", "body").text
    browser.switch_to.default_content()
    browser.save_screenshot(str(screenshots / "run-tab.png"))
    _check_report_shown(browser, vdir)


def _check_report_shown(browser, vdir: str) -> None:
    """The report inline when the version's marker lists one, else "no report"."""
    files = publish.read_completion_marker(vdir)["files"]
    frame = by_css(browser, "iframe")[0]
    browser.switch_to.frame(frame)
    if "report.png" in files:
        image = wait_for("the report image", lambda: by_css(browser, "#report-image")[0])
        width = wait_for("the report image to load", lambda: browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", image))
        assert width > 0
    else:
        assert by_css(browser, "#no-report") and not by_css(browser, "#report-image")
    if "report.html" in files:
        assert by_css(browser, "#report-html")
    browser.switch_to.default_content()


def test_nav_page_lists_the_version(airflow_ui, browser, triggered, screenshots):
    run_id, vdir = triggered
    expected = lineage(vdir)
    open_plugin_frame(browser, f"{airflow_ui.base}/plugin/imagenet-datasets", ".version")
    section = [s for s in by_css(browser, ".version")
               if s.get_attribute("data-version-dir") == vdir][0]
    assert run_id in section.text and "converted" in section.text
    assert expected["options"]["file_format"] in section.text
    counts = {e.get_attribute("data-split"): int(e.text.replace(",", ""))
              for e in by_css(section, "span.examples")}
    assert counts == {s: expected["splits"][s]["num_examples"] for s in SPLITS}
    browser.switch_to.default_content()
    browser.save_screenshot(str(screenshots / "nav-page.png"))
    _check_report_shown(browser, vdir)


# --- the report, and which files are served -----------------------------------------------

def test_only_files_the_marker_lists_are_served(airflow_ui, browser, triggered):
    run_id, vdir = triggered
    files = f"{airflow_ui.base}{PLUGIN}/events/{event_id(airflow_ui, run_id)}/files"
    marker = publish.read_completion_marker(vdir)
    listed = marker["files"]
    assert "report.png" in listed and "report.html" in listed  # the publication wrote them
    # On disk but not in the marker: not served, and the page says "no report".
    report = ("report.png", "report.html")
    unlisted = {**marker, "files": {k: v for k, v in listed.items() if k not in report}}
    publish.write_completion_marker(vdir, unlisted)
    try:
        for name in report:
            assert airflow_ui.http.get(f"{files}/{name}", timeout=10).status_code == 404
        open_plugin_frame(
            browser, f"{airflow_ui.base}/dags/{DAG_ID}/runs/{run_id}/plugin/imagenet-dataset",
            ".lineage-examples")
        assert by_css(browser, "#no-report")
        browser.switch_to.default_content()
    finally:
        publish.write_completion_marker(vdir, marker)
    resp = airflow_ui.http.get(f"{files}/lineage.json", timeout=10)
    assert resp.status_code == 200 and resp.json()["airflow"]["run_id"] == run_id
    shard = lineage(vdir)["splits"]["train"]["shards"][0]["file"]
    assert shard in listed  # listed, but a shard: not served through the page
    assert airflow_ui.http.get(f"{files}/{shard}", timeout=10).status_code == 404
    for name in ["..%2Flineage.json", "..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd",
                 "%2e%2e%2flineage.json", "_COMPLETE", "..", "lineage.json%00"]:
        resp = airflow_ui.http.get(f"{files}/{name}", timeout=10)
        assert resp.status_code == 404, (name, resp.status_code)
    # a raw ../ (requests sends the path as written)
    resp = airflow_ui.http.get(f"{files}/../../{PLUGIN.strip('/')}/", timeout=10)
    assert resp.status_code == 404 or "ImageNet datasets" in resp.text
    assert airflow_ui.http.get(f"{airflow_ui.base}{PLUGIN}/events/999999/files/lineage.json",
                               timeout=10).status_code == 404
    assert airflow_ui.http.get(f"{airflow_ui.base}{PLUGIN}/events/..%2F/files/lineage.json",
                               timeout=10).status_code in (404, 422)


def test_report_is_shown_when_the_version_has_one(airflow_ui, browser, triggered, screenshots):
    run_id, vdir = triggered
    assert "report.png" in publish.read_completion_marker(vdir)["files"]
    open_plugin_frame(
        browser, f"{airflow_ui.base}/dags/{DAG_ID}/runs/{run_id}/plugin/imagenet-dataset",
        "#report-image")
    browser.switch_to.default_content()
    _check_report_shown(browser, vdir)
    browser.save_screenshot(str(screenshots / "run-tab-report.png"))
    open_plugin_frame(browser, f"{airflow_ui.base}/plugin/imagenet-datasets", "#report-image")
    browser.switch_to.default_content()
    _check_report_shown(browser, vdir)
    browser.save_screenshot(str(screenshots / "nav-page-report.png"))
    # the HTML report, as its link opens it: served, its scripts blocked by the CSP
    browser.switch_to.frame(by_css(browser, "iframe")[0])
    href = by_css(browser, "#report-html")[0].get_attribute("href")
    browser.switch_to.default_content()
    title = "imagenet2012 5.1.0 report"  # report.py's page, as the publication wrote it
    resp = airflow_ui.http.get(href, timeout=10)
    assert resp.status_code == 200 and f"<title>{title}</title>" in resp.text
    assert "script-src" not in resp.headers["Content-Security-Policy"]  # default-src 'none'
    browser.get(href)
    wait_for("the HTML report", lambda: browser.title == title)
    # Its images are inline (data: URIs), so they load under the page's policy too.
    images = by_css(browser, "img")
    assert images and all(browser.execute_script("return arguments[0].naturalWidth", i) > 0
                          for i in images)
    print(f"screenshots: {screenshots}  (docs: {os.path.join(ROOT, 'docs')})")


# --- what a run found up to date shows, the Asset page, the consumer DAG -------------------
# (last: its run makes the version's newest publication an up-to-date one)

def test_the_consumer_dag_ran_on_the_published_splits(airflow_ui, triggered):
    """The real scheduler starts imagenet2012_consumer on the split events; it succeeds."""
    run_id, _ = triggered
    consumer = "imagenet2012_consumer"

    def finished_run():
        runs = airflow_ui.api("GET", f"/dags/{consumer}/dagRuns").json()["dag_runs"]
        done = [r for r in runs if r["state"] in ("success", "failed")]
        return done[0] if done else None

    run = wait_for("a finished run of imagenet2012_consumer", finished_run, timeout=180)
    assert run["run_type"] == "asset_triggered" and run["state"] == "success", run
    events = airflow_ui.api(
        "GET", f"/dags/{consumer}/dagRuns/{run['dag_run_id']}/upstreamAssetEvents"
    ).json()["asset_events"]
    assert {e["source_run_id"] for e in events} == {run_id}, events
    read = airflow_ui.api(
        "GET", f"/dags/{consumer}/dagRuns/{run['dag_run_id']}/taskInstances/read_batches/"
        "xcomEntries/return_value", params={"deserialize": True}).json()["value"]
    if isinstance(read, str):
        read = json.loads(read.replace("'", '"'))
    assert sorted(read) == SPLITS and read["train"]["images"][0][1:] == [224, 224, 3], read


def test_an_up_to_date_run_says_why_convert_was_skipped(airflow_ui, browser, triggered,
                                                        screenshots):
    run_id, vdir = triggered
    conf = airflow_ui.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["conf"]
    resp = airflow_ui.api("POST", f"/dags/{DAG_ID}/dagRuns",
                          json={"logical_date": None, "conf": conf})
    assert resp.status_code in (200, 201), resp.text
    again = resp.json()["dag_run_id"]
    rest._wait_for_success(airflow_ui, again)
    tis = airflow_ui.api("GET", f"/dags/{DAG_ID}/dagRuns/{again}/taskInstances").json()
    [convert] = [ti for ti in tis["task_instances"] if ti["task_id"] == "convert"]
    assert convert["state"] == "skipped" and convert["rendered_map_index"] == "up to date"
    # One click on the skipped convert task: its log says why.
    browser.switch_to.default_content()
    browser.get(f"{airflow_ui.base}/dags/{DAG_ID}/runs/{again}/tasks/convert/mapped/0")
    wait_for("the reason in the convert log", lambda: "nothing converted: " in browser.find_element(
        "tag name", "body").text, timeout=60)
    assert "no logs available" not in browser.find_element("tag name", "body").text
    browser.save_screenshot(str(screenshots / "convert-up-to-date-log.png"))
    # The Asset page: each event's source links to the task that recorded it.
    events = airflow_ui.api("GET", "/assets/events", params={"source_run_id": again}).json()
    [event, *_] = [e for e in events["asset_events"] if e["source_dag_id"] == DAG_ID]
    assert event["source_task_id"] == "validate_and_record"
    browser.get(f"{airflow_ui.base}/assets/{event['asset_id']}")
    link = wait_for("the event's source link", lambda: by_css(
        browser, f"a[href$='/runs/{again}/tasks/validate_and_record']")[0], timeout=60)
    assert link.text == DAG_ID
    browser.save_screenshot(str(screenshots / "asset-page.png"))
