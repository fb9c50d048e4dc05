"""A `dag.test()` run of drift_monitor on a synthetic window (real champion, Evidently, ledger).

A champion trained on the synthetic training set scores its last day; the DAG waits for that window
(scored, labels published), measures it and decides. One window cannot satisfy the k-of-n rule
(k = 2) and ends on the day the champion's data ends (inside the cooldown), so the decision is
certainly a hold: a `no_trigger` row is recorded and `train_model` is not triggered.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from tests.synthetic import TEST_OVERRIDES, make_training_set, publish, publish_day_features
from training.config import load_config, with_overrides
from training.paths import StatePaths

pytestmark = pytest.mark.timeout(300)
DAGS = Path(__file__).parents[2] / "dags"


@pytest.fixture
def scored_window(tmp_path, monkeypatch, airflow_db):
    """A state dir with a champion and its predictions for the training set's last day; that day."""

    from training.model.evaluate import evaluate_challenger
    from training.model.train import TrainRequest, train_model
    from training.serving.inference import score_interval

    cfg = with_overrides(load_config(), **TEST_OVERRIDES)
    cfg_file = tmp_path / "closedloop.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    monkeypatch.setenv("CLOSEDLOOP_CONFIG", str(cfg_file))
    monkeypatch.setenv("CLOSEDLOOP_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("CLOSEDLOOP_OPS_DB_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    paths = StatePaths(tmp_path / "state").ensure()
    frame = make_training_set()
    data_version = publish(paths, frame, "training_set")
    trained = train_model(paths, cfg, TrainRequest(reason="test", data_version=data_version))
    assert evaluate_challenger(paths, cfg, version=trained.version).action == "first_promote"

    day = max(frame["batch_date"])
    publish_day_features(paths, frame, day)
    score_interval(paths, cfg, day)
    return paths, day, trained.version


def test_drift_monitor_records_a_hold_for_a_window_that_cannot_trigger(scored_window):
    from airflow.dag_processing.dagbag import DagBag

    paths, day, version = scored_window
    bag = DagBag(dag_folder=str(DAGS / "drift_monitor.py"), safe_mode=True)
    assert not bag.import_errors, bag.import_errors
    run = bag.get_dag("drift_monitor").test(run_conf={"batch_date": day.isoformat()})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert states["wait_for_window"] == states["evaluate"] == states["breached"] == "success", states
    assert states["trigger_retrain"] == states["record_trigger"] == "skipped", states
    # one champion, no challenger in shadow: the shadow task judges nothing and the champion stays
    assert states["shadow"] == states["champion_moved"] == "success", states
    assert states["announce_champion"] == "skipped", states

    from training.storage import ledger

    with ledger.engine(paths).connect() as conn:
        rows = conn.execute(
            sa.text("select window_end, champion_version, decision, why from monitoring_decisions")
        ).all()
    assert len(rows) == 1, rows
    window_end, champion_version, decision, why = rows[0]
    assert str(window_end)[:10] == day.isoformat() and champion_version == str(version)
    assert decision == "no_trigger" and why
