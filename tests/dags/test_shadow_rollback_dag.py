"""An automatic rollback from a `dag.test()` run of drift_monitor (real MLflow, DuckDB, Evidently, ledger).

A full-data champion is replaced by hand with a model trained with two signals scrambled; batch
inference then scores the days with the new champion and, in shadow, the previous one. Once their
labels have matured, drift_monitor's `shadow` task finds the new champion significantly worse on
the same rows, rolls `@champion` back (audited), tells a real local webhook through the DAG's
callback, and `announce_champion` emits the champion Asset.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from pathlib import Path

import pytest
import yaml

from tests.synthetic import TEST_OVERRIDES, holdout_start, make_training_set, permute_features, publish
from tests.webhook_receiver import running_webhook
from training.config import load_config, with_overrides
from training.paths import StatePaths

pytestmark = pytest.mark.timeout(600)
DAGS = Path(__file__).parents[2] / "dags"


@pytest.fixture
def webhook():
    with running_webhook() as server:
        yield server


@pytest.fixture
def worse_champion(tmp_path, monkeypatch, airflow_db, webhook):
    """v1 (full data) promoted, then v2 (scrambled) forced in; days scored by both, labels published."""
    from training.model import registry
    from training.model.evaluate import evaluate_challenger
    from training.model.train import TrainRequest, train_model
    from training.serving.inference import score_interval
    from training.storage import warehouse

    cfg = with_overrides(
        with_overrides(load_config(), **TEST_OVERRIDES),
        windows={"label_maturity": {"learn": False}},
        shadow={"min_rows": 500, "min_positives": 20, "n_bootstrap": 300},
        notifications={"routes": [{"webhook": f"http://127.0.0.1:{webhook.server_port}/hook"}],
                       "retry_wait_s": 0.05, "timeout_s": 3},
    )
    cfg_file = tmp_path / "closedloop.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    monkeypatch.setenv("CLOSEDLOOP_CONFIG", str(cfg_file))
    monkeypatch.setenv("CLOSEDLOOP_HOME", str(tmp_path / "state"))
    for key in ("CLOSEDLOOP_OPS_DB_URL", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "CLOSEDLOOP_MODEL"):
        monkeypatch.delenv(key, raising=False)
    paths = StatePaths(tmp_path / "state").ensure()
    frame = make_training_set()
    cut = holdout_start(frame, cfg)
    weak_data = publish(paths, permute_features(frame, ["is_new_device", "is_new_country"], cut), "weak")
    full_data = publish(paths, frame, "full")  # the newest data version: the labels the monitor reads
    good = train_model(paths, cfg, TrainRequest(reason="first", data_version=full_data))
    assert evaluate_challenger(paths, cfg, version=good.version).action == "first_promote"
    bad = train_model(paths, cfg, TrainRequest(reason="bad", data_version=weak_data))
    registry.force_promote(paths, cfg, bad.version, "test: a worse model pushed by hand")

    last = max(frame["batch_date"])
    days = [last - dt.timedelta(days=i) for i in range(8, -1, -1)]  # 4 matured days + the maturity
    with warehouse.connect(paths) as con:
        con.execute("create schema if not exists published")
        con.con.register("f", frame[frame["batch_date"].isin(days)].drop(columns=["is_fraud", "label_reported_at"]))
        con.execute("create or replace table published.transaction_features as select * from f")
    for day in days:
        assert score_interval(paths, cfg, day)["versions"]["previous_champion"] == good.version
    return paths, cfg, last, good.version, bad.version


def test_drift_monitor_rolls_back_a_worse_new_champion(worse_champion, webhook):
    from airflow.dag_processing.dagbag import DagBag

    from training.model import registry
    from training.monitoring import shadow

    paths, cfg, day, good, bad = worse_champion
    bag = DagBag(dag_folder=str(DAGS / "drift_monitor.py"), safe_mode=True)
    assert not bag.import_errors, bag.import_errors
    run = bag.get_dag("drift_monitor").test(run_conf={"batch_date": day.isoformat()})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert states["shadow"] == states["champion_moved"] == states["announce_champion"] == "success", states

    assert registry.current_champion(paths, cfg) == good
    row = registry.audit_log(paths, cfg.model.name, limit=1)[0]
    assert (row["action"], row["from_version"], row["to_version"]) == ("rollback", bad, good)
    assert row["trigger_reason"].startswith("shadow_rollback: ") and row["actor"] == "scheduler:shadow_monitor"
    assert row["airflow_run_id"] == run.run_id and row["metrics"]["shadow_upper"] < 0
    evaluation = shadow.history(paths, cfg.model.name)[0]
    assert (evaluation["kind"], evaluation["verdict"], evaluation["action"]) == ("rollback_watch", "worse", "rollback")
    print("\nshadow evaluation from the run:", evaluation["why"])
    (hook,) = [h["closedloop"] for h in webhook.received if h["closedloop"]["kind"] == "rollback"]
    assert hook["subject"].endswith(f"rolled back: v{bad} -> v{good}") and hook["links"]["airflow run"].endswith(
        "/dags/drift_monitor/runs/" + urllib.parse.quote(run.run_id, safe=""))
    print("rollback message from the run:", json.dumps(hook, indent=1))
    with pytest.raises(registry.RollbackBlocked):
        registry.promote(paths, cfg, bad, reason="gates passed", idempotency_key="again")
