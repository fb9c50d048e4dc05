"""Notifications against real local receivers: an SMTP sink (stdlib `smtpd`) and an HTTP webhook
(`http.server`), driven through real code:

* a real promotion and rejection (`train_and_evaluate`: MLflow, gates, audit) -> `deliver`;
* a drift trigger message -> `deliver` (dedupe: one message per decision);
* a failed rollback and a refused day through `dag.test()` (the DAGs' `on_failure_callback`);
* an unreachable receiver: the decision stands, the failed delivery is logged, retried (bounded)
  and recorded; a receiver failing once is retried into a delivery;
* the audit rows' trigger reason and actor, and the ledger gaining those columns in place.
"""

from __future__ import annotations

import asyncore  # noqa: F401 - deprecated but present in 3.11; smtpd needs it
import datetime as dt
import email
import json
import os
import smtpd
import socket
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from tests.synthetic import TEST_OVERRIDES, make_training_set, publish, train_and_evaluate
from tests.webhook_receiver import running_webhook
from training.config import Config, with_overrides
from training.paths import StatePaths

pytestmark = pytest.mark.timeout(300)
DAGS = Path(__file__).parents[2] / "dags"


class _Sink(smtpd.SMTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), None, decode_data=False)
        self.received: list[email.message.Message] = []

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):  # type: ignore[override]
        self.received.append(email.message_from_bytes(data))


@pytest.fixture(scope="module")
def smtp_sink():
    sink = _Sink()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            asyncore.loop(timeout=0.05, count=1)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield sink
    stop.set()
    sink.close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def webhook():
    with running_webhook() as server:
        yield server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _smtp_conn(port: int) -> str:
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port,
                       "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 3}})


@pytest.fixture(scope="module")
def env(tmp_path_factory, base_config, smtp_sink, webhook, airflow_db):
    """A state dir with a published data version and a config routing every message to both receivers."""
    root = tmp_path_factory.mktemp("notify")
    routes = {"routes": [{"email": ["ops@example.test"], "webhook": f"http://127.0.0.1:{webhook.server_port}/hook"}],
              "smtp_conn_id": "notify_sink", "airflow_base_url": "http://airflow.test",
              "attempts": 3, "retry_wait_s": 0.05, "timeout_s": 3}
    cfg = with_overrides(base_config, **TEST_OVERRIDES, notifications=routes)
    cfg_file = root / "closedloop.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    mp = pytest.MonkeyPatch()
    mp.setenv("CLOSEDLOOP_HOME", str(root / "state"))
    mp.setenv("CLOSEDLOOP_CONFIG", str(cfg_file))
    mp.setenv("AIRFLOW_CONN_NOTIFY_SINK", _smtp_conn(smtp_sink.socket.getsockname()[1]))
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "CLOSEDLOOP_OPS_DB_URL", "CLOSEDLOOP_MODEL"):
        mp.delenv(key, raising=False)
    paths = StatePaths(root / "state").ensure()
    data_version = publish(paths, make_training_set(), "training_set")
    yield paths, cfg, data_version
    mp.undo()


@pytest.fixture(scope="module")
def decisions(env):
    """A first promotion, then a rejected challenger on the same data (both real)."""
    paths, cfg, data_version = env
    _, first = train_and_evaluate(paths, cfg, data_version, "drift_monitor:performance", actor="user:alice")
    strict = with_overrides(cfg, gates={"floors": {"pr_auc": 0.99}})
    _, rejected = train_and_evaluate(paths, strict, data_version, "manual")
    return first, rejected


def _received(smtp_sink, webhook, subject_part: str) -> tuple[list, list]:
    mails = [m for m in smtp_sink.received if subject_part in m["Subject"]]
    hooks = [h for h in webhook.received if subject_part in h["closedloop"]["subject"]]
    return mails, hooks


def _mail_text(message) -> str:
    part = next(p for p in message.walk() if p.get_content_type() == "text/html")
    return part.get_payload(decode=True).decode()


def test_promotion_and_rejection_reach_both_receivers_once(env, decisions, smtp_sink, webhook):
    from closedloop.notifiers import deliver

    from training import notify

    paths, cfg, _ = env
    first, rejected = decisions
    assert first.action == "first_promote" and rejected.action == "reject"
    for result in (first, rejected):
        msg = notify.gate_decision(cfg, result.to_dict(), run_url="http://airflow.test/dags/train_model/runs/r1")
        assert [o["status"] for o in deliver(paths, cfg, msg)] == ["sent", "sent"]
        assert [o["status"] for o in deliver(paths, cfg, msg)] == ["already_sent"] * 2  # no storm
    mails, hooks = _received(smtp_sink, webhook, f"v{first.challenger_version} promoted")
    assert len(mails) == 1 and len(hooks) == 1
    text = _mail_text(mails[0])
    assert "Decision: promoted" in text and "trigger reason: drift_monitor:performance" in text
    assert first.report_uri in text and "rollback_champion" in text  # link and next action
    assert mails[0]["X-Closedloop-Severity"] == "info"
    assert hooks[0]["closedloop"]["links"]["decision report"] == first.report_uri
    assert hooks[0]["text"].startswith("*[closedloop")  # Slack-compatible
    print(f"\n--- promotion e-mail as received ---\nSubject: {mails[0]['Subject']}\nTo: {mails[0]['To']}\n"
          + _mail_text(mails[0]))
    mails, hooks = _received(smtp_sink, webhook, f"challenger v{rejected.challenger_version} rejected")
    assert len(mails) == 1 and len(hooks) == 1
    hook = hooks[0]["closedloop"]
    assert hook["severity"] == "warning" and f"failed {rejected.failed_gates[0]}" in hook["body"] and "force-promote" in hook["next_action"]
    print("--- rejection webhook as received ---\n" + json.dumps(hooks[0], indent=1))


def test_audit_rows_carry_trigger_reason_and_actor(env, decisions):
    from training.model import registry

    paths, cfg, _ = env
    first, rejected = decisions
    rows = {r["idempotency_key"]: r for r in registry.audit_log(paths, cfg.model.name)}
    promoted, refused = rows[first.idempotency_key], rows[rejected.idempotency_key]
    assert (promoted["trigger_reason"], promoted["actor"]) == ("drift_monitor:performance", "user:alice")
    assert refused["trigger_reason"] == "manual" and refused["actor"].startswith("cli:")  # the CLI's OS user


def test_drift_trigger_is_told_once_per_window(env, smtp_sink, webhook):
    from closedloop.notifiers import deliver

    from training import notify

    paths, cfg, _ = env
    result = {"trigger": True, "decision": "trigger", "reason": "drift_monitor:performance", "champion_version": "1",
              "why": "performance breached in 2 of the last 3 windows", "window_start": "2026-02-01",
              "window_end": "2026-02-01", "rows": 3000, "drift_share": 0.42, "prediction_drift": 0.31,
              "matured_pr_auc": 0.18, "report_path": str(paths.reports / "drift" / "v1" / "2026-02-01.html")}
    msg = notify.drift_trigger(cfg, result, triggered_run_id="manual__retrain1")
    assert notify.drift_trigger(cfg, {**result, "trigger": False}) is None
    for _ in range(2):
        deliver(paths, cfg, msg)
    mails, hooks = _received(smtp_sink, webhook, "drift: retrain of v1")
    assert len(mails) == 1 and len(hooks) == 1
    body = hooks[0]["closedloop"]["body"]
    assert "drift share: 0.42" in body and "retrain run: manual__retrain1" in body
    assert hooks[0]["closedloop"]["links"]["evidently report"].endswith("2026-02-01.html")
    print("\n--- drift trigger webhook as received ---\n" + hooks[0]["text"])


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / f"{dag_id}.py"), safe_mode=True)
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


def test_failed_rollback_run_is_told_by_the_failure_callback(env, smtp_sink, webhook):
    run = _dag("rollback_champion").test(run_conf={"reason": "test: nothing earlier"})
    assert run.state == "failed"
    mails, hooks = _received(smtp_sink, webhook, "rollback_champion failed at rollback")
    assert len(mails) == 1 and len(hooks) == 1
    hook = hooks[0]["closedloop"]
    assert hook["kind"] == "dag_failure" and hook["severity"] == "critical"
    assert "NothingToRollBack" in hook["body"] and run.run_id in hook["links"]["airflow run"].replace("%3A", ":") \
        .replace("%2B", "+")
    print("\n--- DAG failure e-mail as received ---\n" + _mail_text(mails[0]))


def test_refused_day_is_told_once_per_run(env, smtp_sink, webhook):
    """A day after a hole is refused at `land`; `verify_published` fails too (same run): one message."""
    from tests.synthetic import publish_day_features

    paths, cfg, _ = env
    frame = make_training_set()
    published = max(frame["batch_date"])
    publish_day_features(paths, frame, published)
    day = published + dt.timedelta(days=2)  # the day before it was never published
    run = _dag("data_pipeline").test(run_conf={"batch_date": day.isoformat()})
    assert run.state == "failed"
    key = f"failure:data_pipeline:{run.run_id}"
    hooks = [h for h in webhook.received if h["closedloop"]["dedupe_key"] == key]
    mails = [m for m in smtp_sink.received if m["X-Closedloop-Dedupe-Key"] == key]
    assert len(mails) == 1 and len(hooks) == 1
    hook = hooks[0]["closedloop"]
    assert (hook["kind"], hook["severity"]) == ("day_refused", "critical")
    assert f"day {day} refused at land" in hook["subject"] and "the day before it was never published" in hook["body"]
    assert f'"batch_date": "{day}"' in hook["next_action"]
    print("\n--- refused day webhook as received ---\n" + hooks[0]["text"])


def test_a_refused_day_names_the_gate_and_the_rerun(base_config):
    from training import notify

    msg = notify.failure(base_config, dag_id="data_pipeline", run_id="scheduled__2026-01-04", task_id="raw_gate",
                         error="DataQualityGateFailed: amount below min in 3 rows", day=dt.date(2026, 1, 4),
                         quarantine_dir="/state/quarantine")
    assert (msg.kind, msg.severity) == ("day_refused", "critical")
    assert "raw_gate" in msg.subject and '"batch_date": "2026-01-04"' in msg.next_action
    assert "amount below min" in msg.body and msg.links["quarantine"] == "/state/quarantine"
    assert notify.failure(base_config, dag_id="train_model", run_id="r", task_id="train", error="x").kind == "dag_failure"


def test_unreachable_receiver_never_fails_the_decision(env, decisions, smtp_sink, webhook, monkeypatch):
    from closedloop.notifiers import deliver

    from training import notify
    from training.model import registry

    paths, cfg, _ = env
    first, _ = decisions
    dead = with_overrides(cfg, notifications={
        **cfg.notifications.model_dump(), "smtp_conn_id": "dead_smtp",
        "routes": [{"email": ["ops@example.test"], "webhook": f"http://127.0.0.1:{_closed_port()}/hook"}]})
    monkeypatch.setenv("AIRFLOW_CONN_DEAD_SMTP", _smtp_conn(_closed_port()))
    msg = notify.gate_decision(dead, {**first.to_dict(), "idempotency_key": "unreachable-test"})
    outcomes = deliver(paths, dead, msg)  # does not raise
    assert [(o["status"], o["attempts"]) for o in outcomes] == [("failed", 3), ("failed", 3)]
    assert any(r["idempotency_key"] == first.idempotency_key for r in registry.audit_log(paths, cfg.model.name))
    failed = [d for d in notify.deliveries(paths) if d["dedupe_key"] == "gate:unreachable-test"]
    assert {d["status"] for d in failed} == {"failed"} and all("Error" in d["error"] for d in failed)

    # a receiver failing once is retried into a delivery within the same call
    webhook.fail_next = 1
    flaky = with_overrides(cfg, notifications={
        **cfg.notifications.model_dump(),
        "routes": [{"webhook": f"http://127.0.0.1:{webhook.server_port}/hook"}]})
    out = deliver(paths, flaky, notify.gate_decision(flaky, {**first.to_dict(), "idempotency_key": "flaky-test"}))
    assert [(o["status"], o["attempts"]) for o in out] == [("sent", 2)]


def test_no_routes_sends_nothing(env, decisions, base_config: Config):
    from closedloop.notifiers import deliver

    from training import notify

    paths, _, _ = env
    assert base_config.notifications.routes == []
    assert deliver(paths, base_config, notify.gate_decision(base_config, decisions[0].to_dict())) == []


def test_older_audit_table_gains_the_new_columns(tmp_path):
    from training.model import registry
    from training.storage import ledger

    eng = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with eng.begin() as con:  # registry_audit as ledgers before the actor/trigger_reason columns made it
        con.exec_driver_sql(
            "create table registry_audit (id integer primary key autoincrement, at datetime not null, "
            "model_name varchar(200) not null, action varchar(32) not null, from_version varchar(32), "
            "to_version varchar(32), run_id varchar(64), reason text, metrics text, report_uri text, "
            "airflow_run_id varchar(250), idempotency_key varchar(500) not null unique)")
        con.exec_driver_sql("insert into registry_audit (at, model_name, action, idempotency_key) "
                            "values ('2026-01-01 00:00:00', 'm', 'promote', 'k1')")
    ledger.ensure_tables(eng, registry.registry_audit)
    columns = {c["name"] for c in sa.inspect(eng).get_columns("registry_audit")}
    assert {"trigger_reason", "actor"} <= columns
    with eng.connect() as con:
        assert con.execute(sa.select(registry.registry_audit)).first().actor is None
    assert os.path.exists(tmp_path / "old.db")


def test_rollback_is_told_with_its_actor(env, decisions, smtp_sink, webhook):
    """A real force-promote then rollback (audited with the actor), told once as critical."""
    from closedloop.notifiers import deliver

    from training import notify
    from training.model import registry

    paths, cfg, _ = env
    first, rejected = decisions
    registry.force_promote(paths, cfg, rejected.challenger_version, "test: try v2 live", actor="user:alice")
    record = registry.rollback(paths, cfg, "test: v2 precision collapsed", actor="api:bob").to_dict()
    assert (record["actor"], record["trigger_reason"]) == ("api:bob", "rollback: test: v2 precision collapsed")
    msg = notify.rollback(cfg, record, run_url="http://airflow.test/dags/rollback_champion/runs/r9")
    deliver(paths, cfg, msg)
    deliver(paths, cfg, msg)
    mails, hooks = _received(smtp_sink, webhook, f"rolled back: v{rejected.challenger_version} -> v{first.challenger_version}")
    assert len(mails) == 1 and len(hooks) == 1
    assert mails[0]["X-Closedloop-Severity"] == "critical" and "actor: api:bob" in _mail_text(mails[0])
    print("\n--- rollback e-mail as received ---\n" + _mail_text(mails[0]))


def test_a_deferred_retrain_is_told_once(env, smtp_sink, webhook):
    """A `retrain_deferrals` row as `pending()` returns it -> one info message, however often runs see it."""
    from closedloop.notifiers import deliver

    from training import notify

    paths, cfg, _ = env
    pending = {"id": 7, "status": "pending", "reason": "drift_monitor:performance", "onset": dt.date(2026, 2, 1),
               "onset_source": "evidence.onset", "post_onset_days": 1, "needed_days": 2,
               "why": "1 matured day(s) from the onset 2026-02-01 (< 2): deferred", "created_at": "2026-02-02T01:00:00"}
    for _ in range(3):  # every later train_model run's `decide` sees the same pending deferral
        deliver(paths, cfg, notify.deferral_waiting(cfg, pending, run_url="http://airflow.test/dags/train_model/runs/r2"))
    hooks = [h for h in webhook.received if h["closedloop"]["kind"] == "deferral_waiting"]
    assert len(hooks) == 1 and hooks[0]["closedloop"]["severity"] == "info"
    assert "needed_days: 2" in hooks[0]["text"] and "champion keeps serving" in hooks[0]["text"]
    print("\n--- deferral webhook as received ---\n" + hooks[0]["text"])
