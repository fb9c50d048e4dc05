"""The model-health page: real registry, ledger, MLflow artifacts and Evidently report behind it.

A module state gets a champion trained and gated for real (first_promote), a worse challenger the
gates reject, and a drift-monitor decision with its Evidently HTML - all through `training/`. The
page must show each of them; an empty state must render a clear "no champion yet"; and inside the
real Airflow API app the plugin is mounted, listed in the navigation and closed to anonymous users.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

from tests import synthetic as fx
from training.config import Config, with_overrides
from training.paths import StatePaths

ROOT = Path(__file__).resolve().parents[2]


def _plugin_module() -> ModuleType:
    import closedloop.model_health_plugin as mh

    return mh


def _client(paths: StatePaths, cfg: Config) -> TestClient:
    """The plugin app bound to one state dir, with the Airflow login check satisfied."""
    mh = _plugin_module()
    app = mh.create_app(runtime=lambda: (cfg, paths))
    app.dependency_overrides[mh.require_airflow_user] = lambda: "test-user"
    return TestClient(app)


def _text(html: str) -> str:
    html = re.sub(r"<style>.*?</style>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory, base_config: Config):
    """A champion (v1, first_promote), a rejected challenger (v2) and one recorded drift window."""
    from training.model import registry, tracking
    from training.monitoring import decision_log, retrain_trigger, windows

    root = tmp_path_factory.mktemp("model-health-state")
    mp = pytest.MonkeyPatch()
    mp.setenv("CLOSEDLOOP_HOME", str(root))
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    mp.delenv("CLOSEDLOOP_OPS_DB_URL", raising=False)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # this state dir's own MLflow store
    mp.delenv("CLOSEDLOOP_MLFLOW_UI_URL", raising=False)
    paths = StatePaths(root).ensure()
    cfg = with_overrides(base_config, **fx.TEST_OVERRIDES)
    frame = fx.make_training_set()
    cut = fx.holdout_start(frame, cfg)
    full = fx.publish(paths, frame, "full")
    # the same rows with the two strongest signals scrambled before the holdout: a worse model
    weak = fx.publish(paths, fx.permute_features(frame, ["is_new_device", "is_new_country"], cut), "weak")
    champion, first = fx.train_and_evaluate(paths, cfg, full, "first champion")
    challenger, second = fx.train_and_evaluate(paths, cfg, weak, "scheduled")
    assert (first.action, second.action) == ("first_promote", "reject"), second.failed_gates

    # one monitoring window: reference = training rows, current = the holdout days scored by v1
    model = tracking.load_model(tracking.model_uri(cfg.model.name, version=champion.version))
    features = cfg.model.features
    reference = frame[frame.batch_date < cut].sample(6000, random_state=0)
    current = frame[frame.batch_date >= cut].copy()
    current["score"] = tracking.score(model, current[features])
    current["model_version"] = champion.version
    labels = current[["transaction_id", "is_fraud"]].assign(matured=True)
    window = windows.evaluate_window(
        paths,
        cfg,
        min(current.batch_date),
        max(current.batch_date),
        reference,
        tracking.score(model, reference[features]),
        registry.model_status(paths, cfg)["champion"]["holdout_metrics"],
        current,
        labels,
        champion_version=champion.version,
    )
    decision = retrain_trigger.decide(
        cfg,
        [window],
        now_window_end=window.window_end,
        last_promotion_or_retrain_at=None,
        retrain_in_flight=False,
        current_champion_version=champion.version,
    )
    decision_log.record_decision(paths, window, decision)

    # the rejected challenger scored in shadow beside the champion on the holdout days, then judged
    # on their matured labels (the full data version holds them)
    import datetime as dt

    from training.monitoring import shadow
    from training.serving.inference import score_interval
    from training.storage import warehouse

    with warehouse.connect(paths) as con:
        con.execute("create schema if not exists published")
        con.con.register("f", frame[frame.batch_date >= cut].drop(columns=["is_fraud", "label_reported_at"]))
        con.execute("create or replace table published.transaction_features as select * from f")
    for day in sorted(set(frame.batch_date[frame.batch_date >= cut])):
        score_interval(paths, cfg, day)
    judge_cfg = with_overrides(cfg, windows={"label_maturity": {"learn": False}},
                               shadow={"min_rows": 500, "min_positives": 20, "n_bootstrap": 200})
    as_of = max(frame.batch_date) + dt.timedelta(days=cfg.windows.label_maturity_days)
    assert shadow.judge(paths, judge_cfg, as_of)["comparisons"][0]["verdict"] == "worse"
    yield paths, cfg, champion, challenger, window, decision
    mp.undo()


def test_page_shows_champion_challenger_history_drift_and_gate_report(populated) -> None:
    paths, cfg, champion, challenger, window, decision = populated
    resp = _client(paths, cfg).get("/")
    assert resp.status_code == 200, resp.text
    html, text = resp.text, _text(resp.text)
    # champion and the rejected challenger, each with its holdout metrics
    assert f"@champion: version {champion.version}" in text
    assert f"@challenger: version {challenger.version}" in text
    assert "No champion yet" not in text
    cards = html.split("<h2>Latest gate decision</h2>")[0]
    for metric in ("pr_auc", "roc_auc", "recall_at_precision", "log_loss"):
        assert cards.count(f"<td>{metric}</td>") == 2, metric
    # the audit history with the reasons the registry recorded
    assert "first_promote" in text and "reject" in text
    assert "failed gates - " in text and "all evaluated gates passed" in text
    # the drift decision, linked to its report
    assert str(window.window_end) in text and decision.reason in text
    href = re.search(r'href="(reports/drift/[^"]+\.html)"', html)
    assert href, "no link to the Evidently report"
    # the latest gate decision is v2's rejection, rendered from its Markdown artifact
    assert 'id="gate-report"' in html and f"Promotion decision — {cfg.model.name} v{challenger.version}" in text
    assert "KEEP CHAMPION" in text and "<table>" in html.split('id="gate-report"')[1]
    # the shadow evaluation: the challenger significantly worse than the champion on the same live rows
    table = _text(html.split('<table id="shadow">')[1].split("</table>")[0])
    assert f"v{challenger.version} (challenger) vs v{champion.version} (champion)" in table
    assert "worse" in table and "4000 (" in table and "significantly worse than" in table


PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG header (IHDR)."""
    assert data[:8] == PNG, data[:40]
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_page_shows_the_loop_chart_drawn_from_the_ledger(populated) -> None:
    """The page embeds chart.png: the demo's chart (training.monitoring.health_chart), drawn server-side
    from this state's records - the recorded window's drift share is a bar on its day."""
    paths, cfg, champion, _challenger, window, _decision = populated
    client = _client(paths, cfg)
    html = client.get("/").text
    assert '<img id="loop-chart" src="chart.png"' in html and "The loop, day by day" in _text(html)
    resp = client.get("/chart.png")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png", resp.text
    assert _png_size(resp.content) == (1400, 900)

    fig = _plugin_module().loop_chart(paths, cfg)
    perf_ax, loop_ax, drift_ax = fig.axes
    assert "Loop not closed yet: the drift monitor never triggered a retrain" in fig._suptitle.get_text()
    bars = {round(float(b.get_x() + b.get_width() / 2), 3): b.get_height() for b in drift_ax.containers[0]}
    from matplotlib.dates import date2num

    assert bars[round(float(date2num(window.window_end)), 3)] == pytest.approx(window.drift_share)
    assert window.drift_share == pytest.approx(window.signal("data_drift").value)
    floor = cfg.gates.floors[cfg.model.primary_metric]
    assert any(set(line.get_ydata()) == {floor} for line in perf_ax.lines)  # the real floor, on its panel


def test_drift_report_is_served_through_the_plugin_and_nothing_else_is(populated) -> None:
    paths, cfg, *_rest, window, _decision = populated
    client = _client(paths, cfg)
    href = re.search(r'href="(reports/drift/[^"]+\.html)"', client.get("/").text).group(1)
    resp = client.get("/" + href)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert resp.content == Path(window.report_path).read_bytes()
    assert "merchant_category" in resp.text  # the per-feature drift tables
    # path traversal, non-HTML files and missing reports are refused
    (paths.reports / "notes.txt").write_text("secret")
    for bad in ("reports/../ops.db", "reports/%2e%2e/ops.db", "reports/notes.txt", "reports/drift/nope.html"):
        assert client.get("/" + bad).status_code == 404, bad


def test_status_json_matches_the_training_library(populated) -> None:
    from training.model import registry
    from training.monitoring import decision_log

    paths, cfg, champion, challenger, *_ = populated
    data = _client(paths, cfg).get("/api/status").json()
    status = registry.model_status(paths, cfg)
    assert data["status"]["data"]["champion"]["version"] == status["champion"]["version"] == champion.version
    assert data["status"]["data"]["challenger"]["version"] == challenger.version
    assert [r["id"] for r in data["audit"]["data"]] == [
        r["id"] for r in registry.audit_log(paths, cfg.model.name, 25)
    ]
    assert [r["id"] for r in data["drift"]["data"]] == [r["id"] for r in decision_log.latest_decisions(paths, 15)]
    from training.monitoring import shadow

    assert [r["id"] for r in data["shadow"]["data"]] == [r["id"] for r in shadow.history(paths, cfg.model.name, 15)]
    assert data["shadow"]["data"][0]["verdict"] == "worse" and data["shadow"]["data"][0]["upper"] < 0
    assert data["report"]["uri"].endswith("decision/decision_report.md")


def test_report_opens_in_the_mlflow_ui_from_its_portable_uri(populated, monkeypatch) -> None:
    """The report is linked as `runs:/...`; the page turns that into the UI route on the configured
    MLflow server, so the link follows the server, not a path on the machine that ran the gates."""
    from training.model import tracking

    paths, cfg, _champion, challenger, *_ = populated
    client = _client(paths, cfg)
    data = client.get("/api/status").json()
    assert data["report"]["uri"] == f"runs:/{challenger.run_id}/decision/decision_report.md"
    assert data["report"]["href"] is None and "open in MLflow" not in client.get("/").text  # no UI known

    monkeypatch.setenv("CLOSEDLOOP_MLFLOW_UI_URL", "http://mlflow.example:5000/")
    experiment_id = tracking.client(paths).get_run(challenger.run_id).info.experiment_id
    href = (
        f"http://mlflow.example:5000/#/experiments/{experiment_id}/runs/{challenger.run_id}"
        "/artifacts/decision/decision_report.md?workflowType=machine_learning"
    )
    assert client.get("/api/status").json()["report"]["href"] == href
    html = client.get("/").text
    assert f'href="{href}"' in html and 'id="report-in-mlflow"' in html
    model_href = f"http://mlflow.example:5000/#/models/{cfg.model.name}/versions/{challenger.version}"
    assert f'href="{model_href}?workflowType=machine_learning"' in html


def test_mlflow_ui_base_falls_back_to_a_tracking_server(monkeypatch) -> None:
    mh = _plugin_module()
    monkeypatch.delenv("CLOSEDLOOP_MLFLOW_UI_URL", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/x/mlflow.db")
    assert mh.mlflow_ui_base() is None  # a local store has no UI to link to
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000/")
    assert mh.mlflow_ui_base() == "http://mlflow:5000"
    monkeypatch.setenv("CLOSEDLOOP_MLFLOW_UI_URL", "http://localhost:5001")  # the browser's view wins
    assert mh.mlflow_ui_base() == "http://localhost:5001"


def test_drift_report_stored_relative_to_the_state_dir_is_linked(tmp_path: Path) -> None:
    mh = _plugin_module()
    paths = StatePaths(tmp_path / "state")
    assert mh._drift_report_href(paths, "reports/drift/w.html") == "reports/drift/w.html"
    assert mh._drift_report_href(paths, str(paths.reports / "drift" / "w.html")) == "reports/drift/w.html"
    assert mh._drift_report_href(paths, "/elsewhere/w.html") is None


def test_fresh_install_renders_no_champion_yet(tmp_path: Path, base_config: Config, monkeypatch, airflow_db) -> None:
    """(`airflow_db`: the api-server this page runs in always has its metadata DB, where the
    pending approvals are read.)"""
    monkeypatch.delenv("CLOSEDLOOP_OPS_DB_URL", raising=False)
    paths = StatePaths(tmp_path / "fresh")  # not even created: nothing has run yet
    resp = _client(paths, base_config).get("/")
    assert resp.status_code == 200, resp.text
    text = _text(resp.text)
    assert "No champion yet" in text and "airflow dags trigger train_model" in text
    assert "No registry actions recorded yet" in text
    assert "No monitoring windows evaluated yet" in text
    assert "No gate decision yet" in text
    assert "No promotion is waiting for a person" in text
    assert "Could not read" not in text
    chart = _client(paths, base_config).get("/chart.png")  # an empty chart, not an error
    assert chart.status_code == 200 and _png_size(chart.content) == (1400, 900)
    assert _plugin_module().loop_chart(paths, base_config).axes[0].texts[0].get_text() == "no day has been processed yet"


def test_a_broken_section_is_reported_in_place(tmp_path: Path, base_config: Config, monkeypatch) -> None:
    """An unreachable ledger (services profile, database down) names the problem; the page still renders."""
    monkeypatch.setenv("CLOSEDLOOP_OPS_DB_URL", "postgresql+psycopg2://nobody@127.0.0.1:1/none")
    resp = _client(StatePaths(tmp_path / "s"), base_config).get("/")
    assert resp.status_code == 200
    text = _text(resp.text)
    assert "Could not read the audit log: OperationalError" in text
    assert "Could not read the monitoring decisions: OperationalError" in text
    assert "No champion yet" in text  # the registry section still works
    chart = _client(StatePaths(tmp_path / "s"), base_config).get("/chart.png")
    assert chart.status_code == 503 and "the loop chart could not be drawn: OperationalError" in chart.json()["detail"]


def test_markdown_report_cannot_inject_html() -> None:
    html = _plugin_module().render_markdown("# T\n\n<script>alert(1)</script>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert "<script>" not in html and "&lt;script&gt;" in html and "<table>" in html


def test_airflow_api_server_mounts_the_plugin_behind_login(
    airflow_db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real Airflow API app: plugin listed with its nav entry, page 401 without a token, 200 with one."""
    monkeypatch.setenv("CLOSEDLOOP_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("CLOSEDLOOP_OPS_DB_URL", raising=False)
    from airflow.api_fastapi.app import create_app
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    client = TestClient(create_app())
    assert client.get("/model-health/").status_code == 401
    assert client.get("/model-health/chart.png").status_code == 401
    password = SimpleAuthManager.get_passwords()["admin"]
    token = client.post("/auth/token", json={"username": "admin", "password": password}).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    plugins = client.get("/api/v2/plugins", headers=auth).json()["plugins"]
    ours = [p for p in plugins if p["name"] == "closedloop_model_health"]
    assert len(ours) == 1, [p["name"] for p in plugins]
    assert ours[0]["fastapi_apps"][0]["url_prefix"] == "/model-health"
    view = ours[0]["external_views"][0]
    assert (view["url_route"], view["href"], view["destination"]) == ("model-health", "model-health/", "nav")
    plugin_errors = client.get("/api/v2/plugins/importErrors", headers=auth).json()
    assert plugin_errors["total_entries"] == 0, plugin_errors
    page = client.get("/model-health/", headers=auth)
    assert page.status_code == 200 and "No champion yet" in page.text
    client.cookies.set("_token", token)  # what the UI's iframe sends
    assert client.get("/model-health/api/status").json()["status"]["data"]["champion"] is None
