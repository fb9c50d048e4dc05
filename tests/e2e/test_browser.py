"""The three UIs as a person uses them, in headless Chromium against the real dev stack.

A module fixture builds a populated state from real calls - a few simulated days landed through
`training.data.ingest` and built by dbt (for the docs site's catalog), and a tiny champion trained and
promoted through `training.model.train` / `training.model.evaluate` - then starts the stack with
`devstack` (init, api-server, scheduler, dag-processor, triggerer, MLflow, dbt docs) on
free ports. Each test saves a screenshot under `<state>/screenshots/`.

Skipped (with the reason) only when Debian's chromium / chromium-driver are not installed and
could not be (`make browser-deps`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from devstack.airflow_api import RestApiError, get_json, get_token, trigger_via_rest
from devstack.demo import BURST_AIRFLOW_ENV
from devstack.environment import Ports
from devstack.services import PROFILE_SERVICES
from devstack.supervisor import alive, port_free, start_stack
from tests import synthetic as fx
from training.config import Config, with_overrides
from training.paths import StatePaths

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DAG_IDS = tuple(sorted(p.stem for p in (ROOT / "dags").glob("*.py")))  # one DAG per file, file name = dag_id
SIMULATED_DAYS = 2
SMALL_SOURCE = {"transactions_per_day": 1500, "n_customers": 400, "n_merchants": 80, "fraud_rate": 0.015}
WAIT_S = 60


def _chromium_missing() -> str | None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return f"{', '.join(missing)} not installed and could not be installed (`make browser-deps` uses apt-get)"
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, base_config: Config) -> Iterator[SimpleNamespace]:
    """A populated state dir and the dev stack serving it."""
    reason = _chromium_missing()
    if reason:
        pytest.skip(reason)
    from training.data import dbt, ingest

    root = tmp_path_factory.mktemp("browser-state")
    mp = pytest.MonkeyPatch()
    mp.setenv("CLOSEDLOOP_HOME", str(root))
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    mp.delenv("CLOSEDLOOP_OPS_DB_URL", raising=False)
    mp.delenv("CLOSEDLOOP_DBT_MANIFEST", raising=False)
    paths = StatePaths(root).ensure()
    t0 = time.monotonic()

    # a tiny champion: synthetic training set -> train -> gates -> first_promote
    train_cfg = with_overrides(base_config, **fx.TEST_OVERRIDES)
    version = fx.publish(paths, fx.make_training_set(n_days=24, rows_per_day=600), "browser")
    trained, decision = fx.train_and_evaluate(paths, train_cfg, version, "browser test")
    assert decision.action == "first_promote", decision.failed_gates

    # a few simulated days in the warehouse, built by dbt (the docs site then has a catalog)
    cfg = with_overrides(base_config, simulator=SMALL_SOURCE)
    for i in range(SIMULATED_DAYS):
        landed = ingest.land(paths, cfg, cfg.simulator.start_date + dt.timedelta(days=i))
        ingest.load_raw(paths, landed)
    dbt.run_dbt(["build"], paths, cfg)
    built = time.monotonic() - t0

    running = start_stack(paths, Ports.free(), extra_env=BURST_AIRFLOW_ENV)  # DAG files parsed once
    try:
        running.wait_healthy(timeout_s=240)
        running.wait_for_dags(DAG_IDS, timeout_s=240)
    except Exception:
        running.stop()
        mp.undo()
        raise
    print(f"state built in {built:.0f}s, stack up after {time.monotonic() - t0:.0f}s")
    shots = root / "screenshots"
    shots.mkdir()
    yield SimpleNamespace(stack=running, paths=paths, cfg=cfg, champion=trained.version, shots=shots)
    running.stop()
    mp.undo()


@pytest.fixture(scope="module")
def browser(stack) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1440,1000",
        f"--user-data-dir={stack.paths.root / 'chromium-profile'}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def wait_for(driver, predicate: Callable[[], object], what: str, timeout: float = WAIT_S) -> object:
    """Poll until `predicate()` is truthy; fail with what was expected and what the page shows."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # element not there yet, stale, ...
            last = exc
        time.sleep(0.5)
    body = driver.find_element("tag name", "body").text[:1500]
    pytest.fail(f"timed out waiting for {what} on {driver.current_url} ({last!r}); page shows:\n{body}")


def body_text(driver) -> str:
    return driver.find_element("tag name", "body").text


def shot(driver, stack, name: str) -> Path:
    path = stack.shots / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000, f"screenshot {path} looks empty"
    return path


def login(driver, stack) -> None:
    """Log in through the SimpleAuthManager form, as a person would."""
    driver.get(stack.stack.url + "/")
    wait_for(driver, lambda: driver.find_elements("css selector", "input[name='username']"), "the login form")
    driver.find_element("css selector", "input[name='username']").send_keys(stack.stack.user)
    driver.find_element("css selector", "input[name='password']").send_keys(stack.stack.password)
    driver.find_element("css selector", "button[type='submit']").click()
    wait_for(driver, lambda: "/auth/login" not in driver.current_url and driver.get_cookie("_token"), "the login to complete")


def test_airflow_ui_login_lists_every_dag_without_import_errors(stack, browser) -> None:
    login(browser, stack)
    browser.get(stack.stack.url + "/dags")
    wait_for(browser, lambda: all(d in body_text(browser) for d in DAG_IDS), f"the DAG list ({', '.join(DAG_IDS)})")
    text = body_text(browser)
    shot(browser, stack, "airflow_dags")
    assert "Import Error" not in text and "import error" not in text.lower(), text[:800]
    token = get_token(stack.stack.url, stack.stack.user, stack.stack.password)
    errors = get_json(f"{stack.stack.url}/api/v2/importErrors", token)
    assert errors["total_entries"] == 0, errors


def _click_text(driver, text: str) -> None:
    """Click the first visible element whose own text is `text` (a nav button, a menu item)."""
    def visible():
        return [e for e in driver.find_elements("xpath", f"//*[normalize-space(text())='{text}']") if e.is_displayed()]

    wait_for(driver, visible, f"a visible {text!r}")[0].click()


def test_model_health_page_in_the_airflow_ui_shows_the_champion(stack, browser) -> None:
    if not browser.get_cookie("_token"):
        login(browser, stack)
    browser.get(stack.stack.url + "/")
    _click_text(browser, "Browse")  # found the way a person finds it: Browse -> Model health
    _click_text(browser, "Model health")
    wait_for(browser, lambda: browser.current_url.endswith("/plugin/model-health"), "the plugin route")
    frame = wait_for(browser, lambda: browser.find_elements("css selector", "iframe[title='Model health']"), "the plugin iframe")
    browser.switch_to.frame(frame[0])
    try:
        wait_for(browser, lambda: f"@champion: version {stack.champion}" in body_text(browser), "the champion card")
        text = body_text(browser)
        assert "first_promote" in text and "Promotion decision" in text and "pr_auc" in text
    finally:
        browser.switch_to.default_content()
    shot(browser, stack, "model_health")


def test_dbt_docs_show_the_feature_models_lineage(stack, browser) -> None:
    manifest = json.loads((stack.paths.dbt_target / "manifest.json").read_text())
    node = "model.closedloop.ml_transaction_features"
    parents = [p.split(".")[-1] for p in manifest["parent_map"][node] if p.startswith("model.")]
    assert parents, "the feature model has no upstream models in the manifest"
    browser.get(f"{stack.stack.dbt_docs_url}/#!/model/{node}")
    wait_for(browser, lambda: "Depends On" in body_text(browser) and all(p in body_text(browser) for p in parents),
             f"the model page listing its parents {parents}")
    shot(browser, stack, "dbt_docs_model")
    # open the lineage graph as a person would; its nodes live in cytoscape (drawn on a canvas)
    browser.find_element("css selector", "a[title='View Lineage Graph']").click()
    visible_nodes = (
        "var c = document.getElementById('cy'); if (!c || !c._cyreg || !c._cyreg.cy) return [];"
        "return c._cyreg.cy.nodes().filter(function (n) { return n.visible(); }).map(function (n) { return n.id(); });"
    )
    wanted = {node, *manifest["parent_map"][node]}
    wait_for(browser, lambda: wanted <= set(browser.execute_script(visible_nodes)), f"the lineage graph with {sorted(wanted)}")
    time.sleep(1.5)  # let the layout settle before the picture
    shot(browser, stack, "dbt_docs_lineage")


def test_mlflow_ui_shows_the_registered_model_with_its_champion_alias(stack, browser) -> None:
    """Through the link the project hands out (notifications, model-health page): MLflow's classic-ML
    view, whose sidebar lists the registry (the UI's own default is its GenAI view, without it)."""
    from training.model import tracking

    name = stack.cfg.model.name
    browser.get(f"{stack.stack.mlflow_url}/{tracking.ui_model_route(name)}")
    wait_for(browser, lambda: name in body_text(browser) and "champion" in body_text(browser), f"{name} with @champion")
    sidebar_models = "//a[normalize-space(.)='Models' or normalize-space(.)='Model registry']"
    wait_for(browser, lambda: [e for e in browser.find_elements("xpath", sidebar_models) if e.is_displayed()],
             "the classic-ML sidebar's Models entry")
    shot(browser, stack, "mlflow_model")
    assert f"Version {stack.champion}" in body_text(browser) or f"v{stack.champion}" in body_text(browser)


def test_rest_trigger_helper_starts_a_run_with_its_conf(stack) -> None:
    """`trigger_via_rest` (token from /auth/token, POST dagRuns with logical_date null) as scripts use it."""
    s = stack.stack
    run_id = trigger_via_rest(s.url, s.user, s.password, "rollback_champion", {"reason": "rest helper test"})
    token = get_token(s.url, s.user, s.password)
    run = get_json(f"{s.url}/api/v2/dags/rollback_champion/dagRuns/{run_id}", token)
    assert run["conf"] == {"reason": "rest helper test"} and run["logical_date"] is None
    with pytest.raises(RestApiError) as wrong:
        trigger_via_rest(s.url, s.user, "not-the-password", "rollback_champion", {})
    assert wrong.value.status == 401


def test_retrains_triggered_from_outside_carry_their_reason_to_mlflow(stack) -> None:
    """`airflow dags trigger train_model --conf ...` and REST v2 both start a retrain whose reason
    ends up on the MLflow run and the registered version (README: Triggering from outside)."""

    from training.model import tracking

    s = stack.stack
    s.airflow("dags", "unpause", "train_model")
    s.airflow("dags", "trigger", "train_model", "--conf", json.dumps({"reason": "manual-cli"}))
    trigger_via_rest(s.url, s.user, s.password, "train_model", {"reason": "manual-rest", "evidence": {"ticket": 7}})
    token = get_token(s.url, s.user, s.password)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        runs = get_json(f"{s.url}/api/v2/dags/train_model/dagRuns", token)["dag_runs"]
        if len(runs) >= 2 and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(5)
    assert sorted(r["state"] for r in runs) == ["success", "success"], runs
    mc = tracking.client(stack.paths)
    versions = mc.search_model_versions(f"name='{stack.cfg.model.name}'")
    reasons = {v.tags.get("trigger_reason"): v for v in versions}
    assert {"manual-cli", "manual-rest"} <= set(reasons), sorted(map(str, reasons))
    rest_version = reasons["manual-rest"]
    assert json.loads(rest_version.tags["trigger_evidence"]) == {"ticket": 7}
    assert mc.get_run(rest_version.run_id).data.tags["trigger_reason"] == "manual-rest"


def test_make_down_stops_every_service_from_another_process(stack) -> None:
    """Last in the module: `dev_stack.py down` (what `make down` runs) finds the services by pid file."""
    import subprocess

    env = {**os.environ, "CLOSEDLOOP_HOME": str(stack.paths.root)}
    script = str(ROOT / "scripts" / "dev_stack.py")
    status = subprocess.run([sys.executable, script, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and stack.stack.url in status.stdout, status.stdout + status.stderr
    down = subprocess.run([sys.executable, script, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    for name in PROFILE_SERVICES["embedded"]:  # what start_stack started (no Celery workers)
        assert name in down.stdout
        assert not alive(stack.paths, name), name
    for port in (stack.stack.ports.airflow, stack.stack.ports.mlflow, stack.stack.ports.dbt_docs):
        assert port_free("127.0.0.1", port), f"port {port} still taken"
