"""The Airflow UI in a real browser: Debian's Chromium, headless, driven by selenium through chromedriver.

A user signs in, reads the DAG list (every DAG, its tags, its description), opens the migration's
trigger form (every param with its title and description), fills source and target, triggers,
and watches the run succeed. Each step leaves a screenshot in test-artifacts/screenshots/, so a
person can see what a user sees. Waits are explicit (an element, a URL, a run state), never sleeps.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.live.conftest import DAG_ID, _target_counts

pytestmark = [pytest.mark.live, pytest.mark.timeout(600)]

SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_S = 60


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), \
        "the browser tests need Debian's chromium and chromium-driver: run `make tools` (scripts/install_tools.sh)"
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"  screenshot {path.relative_to(ROOT)}")
    return path


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S).until(condition)
    except Exception:
        _shot(driver, "failed-waiting")
        raise AssertionError(f"the UI never showed {what} (see test-artifacts/screenshots/failed-waiting.png)") from None


def _text_present(text: str):
    from selenium.webdriver.common.by import By

    return lambda d: text in d.find_element(By.TAG_NAME, "body").text


def _type_into(driver, field, value: str) -> None:
    """Replace a React-controlled input's value the way a user does: select all, type."""
    from selenium.webdriver.common.keys import Keys

    field.click()
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(value)


def test_a_user_signs_in_reads_the_dags_and_triggers_the_migration_from_its_form(live, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    airflow, d = live.airflow, browser
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()

    # 1. Sign in.
    d.get(f"{airflow.api_url}/auth/login?next=%2Fdags")
    user, password = _wait(d, lambda d: len(fields := d.find_elements(By.TAG_NAME, "input")) >= 2 and fields,
                           "the sign-in form")[:2]
    user.send_keys(airflow.user)
    password.send_keys(airflow.password)
    _shot(d, "01-sign-in")
    d.find_element(By.XPATH, "//button[normalize-space()='Sign in']").click()

    # 2. The DAG list: every DAG with its tags (the names and tags the API lists).
    dags = {dag["dag_id"]: dag for dag in airflow.api("GET", "/api/v2/dags?limit=100")["dags"]}
    _wait(d, _text_present(f"{len(dags)} Dags"), f"'{len(dags)} Dags' on the DAG list")
    body = d.find_element(By.TAG_NAME, "body").text
    for dag_id, dag in dags.items():
        assert dag_id in body, f"{dag_id} not on the DAG list"
        for tag in dag["tags"]:
            assert tag["name"] in body
    _shot(d, "02-dag-list")
    # Each DAG's description, on its Details tab.
    for dag_id, dag in sorted(dags.items()):
        d.get(f"{airflow.api_url}/dags/{dag_id}/details")
        _wait(d, _text_present(dag["description"]), f"{dag_id}'s description on its Details tab")
        if dag_id == DAG_ID:
            _shot(d, "03-migration-details")

    # 3. The trigger form: every param with its title and description.
    d.get(f"{airflow.api_url}/dags/{DAG_ID}")
    _wait(d, EC.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label='Trigger Dag']")), "the Trigger button").click()
    _wait(d, _text_present(f"Trigger Dag - {DAG_ID}"), "the trigger form")
    params = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/details")["params"]
    _wait(d, _text_present(params["source"]["schema"]["title"]), "the first param's title")
    body = d.find_element(By.TAG_NAME, "body").text
    missing = [(name, p["schema"]["title"]) for name, p in params.items()
               if p["schema"]["title"] not in body or " ".join(p["description"].split()) not in " ".join(body.split())]
    assert not missing, f"params without their title or description on the form: {missing}"
    _shot(d, "04-trigger-form")

    # 4. Fill source and target, trigger.
    def field(title: str):
        return d.find_element(By.XPATH, f"//label[contains(normalize-space(), '{title}')]"
                                        "/ancestor::*[.//input][1]//input")

    _type_into(d, field(params["target"]["schema"]["title"]), "live_target_browser")
    _type_into(d, field(params["source"]["schema"]["title"]), "checkpoints_sqlite")
    _shot(d, "05-trigger-form-filled")
    before = {r["dag_run_id"] for r in airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]}
    buttons = d.find_elements(By.XPATH, "//button[normalize-space()='Trigger']")
    _wait(d, lambda d: buttons[-1].is_enabled(), "an enabled Trigger button")
    buttons[-1].click()

    def new_run(_):
        runs = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]
        return next((r for r in runs if r["dag_run_id"] not in before), None)

    run = _wait(d, new_run, "a new run after Trigger")
    assert run["conf"]["target"] == "live_target_browser" and run["conf"]["source"] == "checkpoints_sqlite", run["conf"]
    run_id = run["dag_run_id"]
    _shot(d, "06-triggered")

    # 5. The run's page until it shows success.
    assert airflow.wait_for_run(DAG_ID, run_id) == "success", airflow.diagnostics(DAG_ID, run_id)
    d.get(f"{airflow.api_url}/dags/{DAG_ID}/runs/{run_id}")
    _wait(d, _text_present("Success"), "the run's Success badge on its page")
    _shot(d, "07-run-succeeded")
    verify = airflow.xcom(DAG_ID, run_id, "verify")  # the form's default: sample mode
    assert verify["ok"] is True and verify["mode"] == "sample" and verify["counts_ok"], verify
    assert _target_counts(live.targets["browser"]) == live.source_counts
