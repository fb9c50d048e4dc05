"""`dag.test()` runs of the ML DAGs on a published synthetic data version (real MLflow, real models).

* train_model with a drift-style `conf`: the reason and evidence reach the MLflow run and the model
  version; with no champion the first passing challenger is promoted and the champion Asset fires.
* a second run for the same data with no reason and a fresh champion is short-circuited (no churn).
* batch_inference scores a published day with the champion; re-running replaces, never duplicates.
* rollback_champion with a reason restores the previous champion and is audited.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import duckdb
import pytest
import yaml

from tests.synthetic import TEST_OVERRIDES, make_training_set, publish, publish_day_features
from training.config import load_config, with_overrides
from training.paths import StatePaths

pytestmark = pytest.mark.timeout(900)
DAGS = Path(__file__).parents[2] / "dags"


@pytest.fixture(scope="module")
def ml_env(tmp_path_factory, airflow_db, dbt_manifest):
    root = tmp_path_factory.mktemp("ml_dags")
    cfg = with_overrides(load_config(), **TEST_OVERRIDES)
    cfg_file = root / "closedloop.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    saved = {k: os.environ.get(k) for k in ("CLOSEDLOOP_HOME", "CLOSEDLOOP_CONFIG", "MLFLOW_TRACKING_URI")}
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # MLflow in this state dir (tracking.tracking_uri)
    os.environ["CLOSEDLOOP_HOME"] = str(root / "state")
    os.environ["CLOSEDLOOP_CONFIG"] = str(cfg_file)
    paths = StatePaths(root / "state").ensure()
    frame = make_training_set()
    data_version = publish(paths, frame, "training_set")
    yield paths, cfg, data_version, frame
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / f"{dag_id}.py"), safe_mode=True)
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


@pytest.fixture(scope="module")
def drift_triggered_run(ml_env):
    evidence = {"signal": "performance", "windows": ["2026-01-30", "2026-01-31"], "value": 0.21, "floor": 0.4}
    run = _dag("train_model").test(run_conf={"reason": "drift_monitor:performance", "evidence": evidence})
    return run, evidence


def test_drift_reason_and_evidence_reach_mlflow(drift_triggered_run, ml_env):
    from training.model import tracking

    paths, cfg, data_version, _ = ml_env
    run, evidence = drift_triggered_run
    states = _states(run)
    assert run.state == "success", states
    assert states["announce_champion"] == "success"  # first champion (explicit policy)
    mc = tracking.client(paths)
    champion = mc.get_model_version_by_alias(cfg.model.name, "champion")
    tags = champion.tags
    assert tags["trigger_reason"] == "drift_monitor:performance"
    assert json.loads(tags["trigger_evidence"]) == evidence
    assert tags["data_version"] == data_version
    assert tags["airflow_dag_id"] == "train_model" and tags["airflow_run_id"] == run.run_id
    run_tags = mc.get_run(champion.run_id).data.tags
    assert run_tags["trigger_reason"] == "drift_monitor:performance"


def test_no_reason_and_fresh_champion_means_no_training(drift_triggered_run, ml_env):
    from training.model import tracking

    paths, cfg, _, _ = ml_env
    mc = tracking.client(paths)
    before = len(mc.search_model_versions(f"name='{cfg.model.name}'"))
    run = _dag("train_model").test()
    states = _states(run)
    assert states["decide"] == "success" and states["train"] == "skipped", states
    assert len(mc.search_model_versions(f"name='{cfg.model.name}'")) == before


def _predictions(paths: StatePaths, day: dt.date) -> list[tuple]:
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        return con.execute(
            "select alias, count(*), count(distinct entity_id) from published.predictions "
            "where batch_date = ? group by 1",
            [day],
        ).fetchall()
    finally:
        con.close()


def test_batch_inference_scores_a_day_idempotently(drift_triggered_run, ml_env):
    paths, cfg, _, frame = ml_env
    day = max(frame["batch_date"])
    features = publish_day_features(paths, frame, day)
    dag = _dag("batch_inference")
    for _ in range(2):
        run = dag.test(run_conf={"batch_date": day.isoformat()})
        assert run.state == "success", _states(run)
    rows = _predictions(paths, day)
    assert rows == [("champion", len(features), len(features))]


def test_rollback_without_a_previous_champion_fails_clearly_and_changes_nothing(drift_triggered_run, ml_env):
    from training.model import tracking

    paths, cfg, _, _ = ml_env
    mc = tracking.client(paths)
    champion = mc.get_model_version_by_alias(cfg.model.name, "champion").version
    run = _dag("rollback_champion").test(run_conf={"reason": "test: nothing to roll back to"})
    assert run.state == "failed"
    assert mc.get_model_version_by_alias(cfg.model.name, "champion").version == champion
