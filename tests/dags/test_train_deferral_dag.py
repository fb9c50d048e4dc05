"""train_model's `decide` task applies the evidence-sufficiency rule (`dag.test()`, real MLflow):

a drift-triggered run with too few matured post-onset days is skipped (not failed) and leaves a
pending deferral; the next run without a reason - what the daily features Asset event starts - on a
data version that has the days trains it, with the trigger's reason and evidence, and marks it trained.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
import yaml

from tests.synthetic import TEST_OVERRIDES, make_training_set, publish
from training.config import load_config, with_overrides
from training.paths import StatePaths

pytestmark = pytest.mark.timeout(900)
DAGS = Path(__file__).parents[2] / "dags"


@pytest.fixture(scope="module")
def env(tmp_path_factory, airflow_db):
    root = tmp_path_factory.mktemp("deferral_dag")
    overrides = {**TEST_OVERRIDES, "training": {**TEST_OVERRIDES["training"], "drift_aware": {"min_post_onset_days": 7}}}
    cfg = with_overrides(load_config(), **overrides)
    cfg_file = root / "closedloop.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    saved = {k: os.environ.get(k) for k in ("CLOSEDLOOP_HOME", "CLOSEDLOOP_CONFIG", "MLFLOW_TRACKING_URI")}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["CLOSEDLOOP_HOME"] = str(root / "state")
    os.environ["CLOSEDLOOP_CONFIG"] = str(cfg_file)
    yield StatePaths(root / "state").ensure(), cfg, make_training_set()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _train_model_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / "train_model.py"), safe_mode=True)
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("train_model")


def test_drift_run_defers_then_the_features_run_trains_it(env):
    from training.model import tracking
    from training.monitoring import retrain_deferral

    paths, cfg, frame = env
    last = max(frame["batch_date"])
    onset = last - dt.timedelta(days=6)  # 7 matured post-onset days in the full set, 4 three days earlier
    publish(paths, frame[frame["batch_date"] <= last - dt.timedelta(days=3)], "early")
    evidence = {"onset_window_start": onset.isoformat(), "signal": "performance"}

    run = _train_model_dag().test(run_conf={"reason": "drift_monitor:performance", "evidence": evidence})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["decide"] == "success" and states["train"] == "skipped", states
    pend = retrain_deferral.pending(paths)
    assert pend is not None and pend["post_onset_days"] == 4 and pend["needed_days"] == 7
    assert pend["airflow_run_id"] == run.run_id and pend["evidence"] == evidence

    full_version = publish(paths, frame, "full")
    run = _train_model_dag().test()  # no reason: as the features Asset event starts it
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["train"] == "success" and states["evaluate"] == "success", states
    assert retrain_deferral.pending(paths) is None
    row = retrain_deferral.deferrals(paths)[0]
    assert row["status"] == "trained" and row["trained_data_version"] == full_version
    mv = tracking.client(paths).get_model_version(cfg.model.name, row["trained_version"])
    assert mv.tags["trigger_reason"] == "drift_monitor:performance"
    assert mv.tags["training_method"] == "onset_anchored" and mv.tags["onset"] == onset.isoformat()
    assert json.loads(mv.tags["trigger_evidence"])["deferral"]["id"] == row["id"]
