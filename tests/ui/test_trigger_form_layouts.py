"""The trigger form's *Input layout* field in a real Chromium against a real Airflow
(tests/ui/conftest.py): a dropdown of the layouts (a nullable enum, which Airflow 3's form
once failed to render), left empty by default, and what is chosen reaches the run's conf."""

from __future__ import annotations

import pytest

from imagenet_beam import settings
from tests.dags import test_rest_api as rest
from tests.ui.test_datasets_page import by_css, login, set_text, wait_for

pytestmark = pytest.mark.browser

DAG_ID = "imagenet2012"


def _open_form(browser, base: str):
    browser.get(f"{base}/dags/{DAG_ID}")
    wait_for("the Trigger button", lambda: [
        b for b in by_css(browser, "button") if b.text.strip() == "Trigger"][0]).click()
    dialog = wait_for("the trigger form", lambda: [
        d for d in by_css(browser, "[role=dialog]") if d.is_displayed()
        and by_css(d, "#element_manual_dir")][0])
    section = by_css(dialog, "button[data-part=item-trigger][id$=':trigger:Input and output']")[0]
    if section.get_attribute("aria-expanded") != "true":
        section.click()
    wait_for("the layout field", lambda: [
        e for e in by_css(dialog, "[id^=element_layout]") if e.is_displayed()])
    return dialog


def _options(browser) -> list[str]:
    return [o.text.strip() for o in by_css(browser, "[role=option]") if o.is_displayed()]


@pytest.mark.parametrize("choice", [None, "imagefolder"])
def test_the_form_offers_every_layout(airflow_ui, browser, screenshots, tmp_path, choice):
    if not any(c["name"] == "_token" for c in browser.get_cookies()):
        login(browser, airflow_ui.base)
    dialog = _open_form(browser, airflow_ui.base)
    field = [e for e in by_css(dialog, "[id^=element_layout]") if e.is_displayed()][0]
    # the empty choice reads as what it means, not "null"
    assert "any: recognised from what is there" in field.text, field.text
    field.find_element("css selector", "input[role=combobox]").click()
    options = wait_for("the layouts listed", lambda: _options(browser))
    browser.save_screenshot(str(screenshots / "trigger-form-layouts.png"))
    for name in settings.LAYOUTS:
        assert any(option.startswith(f"{name}: ") for option in options), options
    label = f"{choice}: " if choice else "any: "
    [o for o in by_css(browser, "[role=option]") if o.text.strip().startswith(label)][0].click()
    dialog = wait_for("the choice shown", lambda: [
        d for d in by_css(browser, "[role=dialog]") if d.is_displayed()
        and [e for e in by_css(d, "[id^=element_layout]") if e.text.startswith(label)]][0])
    for element_id, value in (("#element_manual_dir", str(tmp_path / "nothing-here")),
                              ("#element_data_dir", str(tmp_path / "data"))):
        set_text(by_css(dialog, element_id)[0], value)
    before = rest._run_ids(airflow_ui)
    [b for b in by_css(dialog, "button") if b.text.strip() == "Trigger"][-1].click()
    run_id = wait_for("the triggered run", lambda: next(iter(
        rest._run_ids(airflow_ui) - before), None))
    conf = airflow_ui.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["conf"]
    assert conf["layout"] == choice, conf
    # nothing is there to wait for: end the run rather than let it wait a day
    airflow_ui.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}", json={"state": "failed"})
