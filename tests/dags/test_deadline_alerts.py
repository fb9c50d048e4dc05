"""Deadline Alerts on a day's data: data_pipeline (not published by the day's start + N h) and
batch_inference (not scored within N h of being queued) carry Airflow `DeadlineAlert`s when the
config asks, none otherwise; the callback Airflow runs at a missed deadline tells the model's
routes once per run (a real local webhook receiver) and never raises, even when the receiver is down.
"""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest
import yaml

from tests.webhook_receiver import running_webhook
from training.config import load_config, with_overrides

pytestmark = pytest.mark.timeout(600)
DAGS = Path(__file__).parents[2] / "dags"


@pytest.fixture
def webhook():
    with running_webhook() as server:
        yield server


def _use_config(tmp_path: Path, monkeypatch, **sections) -> None:
    from tests.synthetic import TEST_OVERRIDES

    cfg = with_overrides(load_config(), **{**TEST_OVERRIDES, **sections})
    cfg_file = tmp_path / "closedloop.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    monkeypatch.setenv("CLOSEDLOOP_CONFIG", str(cfg_file))
    monkeypatch.setenv("CLOSEDLOOP_HOME", str(tmp_path / "state"))
    for key in ("MLFLOW_TRACKING_URI", "CLOSEDLOOP_OPS_DB_URL", "CLOSEDLOOP_MODEL"):
        monkeypatch.delenv(key, raising=False)


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / f"{dag_id}.py"), safe_mode=True)
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


def test_deadlines_are_attached_only_when_configured(tmp_path, monkeypatch, airflow_db, dbt_manifest):
    from airflow.sdk.definitions.deadline import DeadlineReference

    _use_config(tmp_path, monkeypatch)
    assert not _dag("data_pipeline").deadline and not _dag("batch_inference").deadline
    _use_config(tmp_path, monkeypatch, deadlines={"published_within_hours": 30, "scored_within_hours": 2})
    (pipeline,) = _dag("data_pipeline").deadline
    assert pipeline.reference == DeadlineReference.DAGRUN_LOGICAL_DATE and pipeline.interval == dt.timedelta(hours=30)
    assert pipeline.callback.path == "closedloop.notifiers.deadline_missed"
    assert pipeline.callback.kwargs == {"model": None, "what": "published"}
    (scoring,) = _dag("batch_inference").deadline
    assert scoring.reference == DeadlineReference.DAGRUN_QUEUED_AT and scoring.interval == dt.timedelta(hours=2)
    assert scoring.callback.kwargs == {"model": None, "what": "scored"}


def _context(run_id: str) -> dict:
    """What Airflow hands a deadline callback (models/deadline.py `handle_miss`): the run as the REST
    API serialises it, and the deadline."""
    return {
        "dag_run": {"dag_id": "data_pipeline", "dag_run_id": run_id, "state": "running", "conf": {},
                    "logical_date": "2026-01-05T00:00:00Z", "data_interval_start": "2026-01-05T00:00:00Z"},
        "deadline": {"id": "d1", "deadline_time": dt.datetime(2026, 1, 6, 6, 0, tzinfo=dt.UTC)},
    }


def test_a_missed_deadline_is_told_once_per_run(tmp_path, monkeypatch, airflow_db, webhook, dbt_manifest):
    from airflow.sdk._shared.module_loading import import_string

    from training import notify
    from training.paths import StatePaths

    _use_config(tmp_path, monkeypatch, deadlines={"published_within_hours": 30}, notifications={
        "routes": [{"severity": ["critical"], "webhook": f"http://127.0.0.1:{webhook.server_port}/hook"}],
        "airflow_base_url": "http://airflow.test", "retry_wait_s": 0.05})
    (alert,) = _dag("data_pipeline").deadline
    callback = import_string(alert.callback.path)  # as Airflow's executor resolves it
    for _ in range(2):  # the same run's deadline told twice (a re-queued callback): one message
        callback(context=_context("scheduled__2026-01-05"), **alert.callback.kwargs)
    (hook,) = webhook.received
    msg = hook["closedloop"]
    assert msg["kind"] == "deadline_missed" and msg["severity"] == "critical"
    assert msg["subject"] == "[closedloop card_fraud] day 2026-01-05 not published by 2026-01-06T06:00 UTC (data_pipeline)"
    assert msg["links"]["airflow run"] == "http://airflow.test/dags/data_pipeline/runs/scheduled__2026-01-05"
    assert "re-run it" in msg["next_action"]
    sent = notify.deliveries(StatePaths.from_env())
    assert [(d["kind"], d["status"]) for d in sent] == [("deadline_missed", "sent")]


def test_an_unreachable_receiver_never_fails_the_deadline_callback(tmp_path, monkeypatch, airflow_db):
    from closedloop.notifiers import deadline_missed

    from training import notify
    from training.paths import StatePaths

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens
    _use_config(tmp_path, monkeypatch, notifications={
        "routes": [{"webhook": f"http://127.0.0.1:{port}/hook"}], "attempts": 2, "retry_wait_s": 0.01, "timeout_s": 1})
    deadline_missed(context=_context("manual__x"), model=None, what="scored")  # does not raise
    (row,) = notify.deliveries(StatePaths.from_env())
    assert (row["kind"], row["status"], row["attempts"]) == ("deadline_missed", "failed", 2)
    assert "not scored" in row["subject"]
