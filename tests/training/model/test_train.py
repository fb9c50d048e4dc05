"""train_model: time-based splits, frozen holdout, leakage check, MLflow lineage, idempotency,
reproducibility — against real MLflow (SQLite) and real DVC data versions."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.class_weight import compute_class_weight

from training.config import with_overrides
from training.data import datasets
from training.data.datasets import DatasetError, LeakageError
from training.model import tracking
from training.model.metrics import METRIC_NAMES
from training.model.train import (
    TrainingError,
    TrainRequest,
    _pos_weight,
    build_pipeline,
    fit_final,
    sample_params,
    train_model,
)

REQUEST = TrainRequest(
    reason="drift",
    evidence={"drift_share": 0.42, "window": "2026-01-29..2026-02-01"},
    airflow_dag_id="train_model",
    airflow_run_id="manual__2026-02-02T00:00:00",
)


@pytest.fixture(scope="module")
def data_version(module_state, training_frame, synth):
    return synth.publish(
        module_state, training_frame, "full", dbt_invocation_id="dbt-123", gx_run_id="gx-456"
    )


@pytest.fixture(scope="module")
def trained(module_state, train_cfg, data_version):
    return train_model(module_state, train_cfg, REQUEST)  # data version: newest published


@pytest.fixture(scope="module")
def mlflow_client(module_state):
    return tracking.client(module_state)


# --- splits and leakage (no MLflow) ---


def test_split_windows_are_consecutive_and_newest_last(training_frame, train_cfg):
    s = datasets.split_windows(training_frame, train_cfg.windows)
    last = max(training_frame["batch_date"])
    assert s.holdout_range == (last - dt.timedelta(days=3), last)
    assert s.validation_range[1] == s.holdout_range[0] - dt.timedelta(days=1)
    assert s.train_range[1] == s.validation_range[0] - dt.timedelta(days=1)
    assert (s.train_range[1] - s.train_range[0]).days + 1 == train_cfg.windows.training_days
    assert set(s.holdout["batch_date"]) == {last - dt.timedelta(days=i) for i in range(4)}
    assert max(s.train["batch_date"]) < min(s.validation["batch_date"]) <= max(s.validation["batch_date"])
    assert max(s.validation["batch_date"]) < min(s.holdout["batch_date"])


def test_split_too_little_data_names_the_window(training_frame, train_cfg):
    recent = training_frame[
        training_frame["batch_date"] >= max(training_frame["batch_date"]) - dt.timedelta(days=5)
    ]
    with pytest.raises(DatasetError, match="train window .* has no rows"):
        datasets.split_windows(recent, train_cfg.windows)


def test_holdout_transaction_in_training_raises_leakage(training_frame, train_cfg):
    s = datasets.split_windows(training_frame, train_cfg.windows)
    leaked = s.holdout.iloc[[0]].assign(batch_date=s.train_range[0])
    leaky = pd.concat([training_frame, leaked], ignore_index=True)
    with pytest.raises(LeakageError, match="holdout transactions also appear in train"):
        datasets.check_no_leakage(datasets.split_windows(leaky, train_cfg.windows), "transaction_id")
    datasets.check_no_leakage(s, "transaction_id")  # the clean frame passes


def test_train_model_refuses_leaky_data_version(
    module_state, train_cfg, training_frame, synth, mlflow_client
):
    s = datasets.split_windows(training_frame, train_cfg.windows)
    leaky = pd.concat(
        [training_frame, s.holdout.iloc[:5].assign(batch_date=s.train_range[0])], ignore_index=True
    )
    version = synth.publish(module_state, leaky, "leaky")
    before = mlflow_client.search_model_versions(f"name = '{train_cfg.model.name}'")
    with pytest.raises(LeakageError):
        train_model(module_state, train_cfg, TrainRequest(reason="leak", data_version=version))
    assert len(mlflow_client.search_model_versions(f"name = '{train_cfg.model.name}'")) == len(before)


def test_train_model_refuses_data_that_failed_gx(module_state, train_cfg, data_version):
    with pytest.raises(TrainingError, match="failed its Great Expectations gate"):
        train_model(
            module_state, train_cfg, TrainRequest(reason="x", data_version=data_version, gx_success=False)
        )


def test_holdout_hash_depends_on_content_not_order(training_frame, train_cfg):
    h = datasets.split_windows(training_frame, train_cfg.windows).holdout
    shuffled = h.sample(frac=1.0, random_state=3)[list(reversed(h.columns))]
    assert datasets.holdout_hash(h, "transaction_id") == datasets.holdout_hash(shuffled, "transaction_id")
    changed = h.copy()
    changed.loc[0, "is_fraud"] = 1 - changed.loc[0, "is_fraud"]
    assert datasets.holdout_hash(changed, "transaction_id") != datasets.holdout_hash(h, "transaction_id")


# --- candidates ---


def test_candidate_pipelines_handle_imbalance_and_unseen_categories(training_frame, train_cfg):
    spec = train_cfg.model
    sample = training_frame.iloc[:3000]
    X, y = datasets.prepare_features(sample, spec), sample["is_fraud"]
    lr = build_pipeline("logistic_regression", {"C": 1.0}, spec, 7, _pos_weight(y))
    xgb = build_pipeline("xgboost", sample_params("xgboost", 1, 7)[0], spec, 7, 20.0)
    # sklearn's "balanced" weights, from the class counts `_pos_weight` gives
    balanced = compute_class_weight("balanced", classes=np.array([0, 1]), y=y.astype(int).to_numpy())
    cw = lr.named_steps["clf"].class_weight
    assert [cw[0], cw[1]] == pytest.approx(list(balanced), rel=1e-12)
    assert xgb.named_steps["clf"].scale_pos_weight == 20.0
    unseen = X.head(3).assign(merchant_category="never_seen_before")
    for model in (lr.fit(X, y), xgb.fit(X, y)):
        assert model.predict_proba(unseen).shape == (3, 2)
    assert sample_params("xgboost", 2, 7) == sample_params("xgboost", 2, 7)
    assert sample_params("xgboost", 2, 7) != sample_params("xgboost", 2, 8)


# --- the MLflow run and registered version ---


def test_registered_as_challenger(trained, train_cfg, mlflow_client, data_version):
    assert not trained.reused
    assert trained.data_version == data_version
    mv = mlflow_client.get_model_version_by_alias(train_cfg.model.name, "challenger")
    assert str(mv.version) == trained.version
    assert trained.family in train_cfg.training.candidates
    assert trained.holdout_metrics["pr_auc"] > 0.3  # the synthetic signal was learned


def test_lineage_tags_on_run_and_version(trained, train_cfg, mlflow_client, data_version):
    run = mlflow_client.get_run(trained.run_id)
    mv = mlflow_client.get_model_version(train_cfg.model.name, trained.version)
    for tags in (run.data.tags, mv.tags):
        missing = [t for t in tracking.LINEAGE_TAGS if not tags.get(t)]
        assert not missing, f"missing lineage tags {missing}"
        assert tags["data_version"] == data_version
        assert tags["dbt_invocation_id"] == "dbt-123"  # from the data version's ledger row
        assert tags["gx_run_id"] == "gx-456"
        assert tags["gx_success"] == "true"
        assert tags["airflow_dag_id"] == "train_model"
        assert tags["airflow_run_id"] == REQUEST.airflow_run_id
        assert tags["trigger_reason"] == "drift"
        assert json.loads(tags["trigger_evidence"]) == REQUEST.evidence
        assert tags["holdout_hash"] == trained.holdout_hash
        assert tags["seed"] == str(train_cfg.training.seed)
        assert tags["git_commit"] != ""
        start = dt.date.fromisoformat(tags["training_window_start"])
        end = dt.date.fromisoformat(tags["training_window_end"])
        w = train_cfg.windows
        assert (end - start).days + 1 == w.training_days + w.validation_days


def test_run_logs_metrics_datasets_plots_and_signature(trained, mlflow_client, data_version, train_cfg):
    run = mlflow_client.get_run(trained.run_id)
    for prefix in ("val_", "holdout_"):
        assert {f"{prefix}{m}" for m in METRIC_NAMES} <= set(run.data.metrics)
    assert run.data.metrics["holdout_pr_auc"] == pytest.approx(trained.holdout_metrics["pr_auc"])
    digests = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert digests == {"training": data_version, "holdout": trained.holdout_hash}
    artifacts = {a.path for a in mlflow_client.list_artifacts(trained.run_id, "plots")}
    assert artifacts == {"plots/pr_curve.png", "plots/calibration.png", "plots/feature_importance.png"}
    trials = json.loads(
        Path(mlflow_client.download_artifacts(trained.run_id, "search/trials.json")).read_text()
    )
    assert len(trials["trials"]) == 2 * 2  # two families x search_budget
    sig = tracking.input_signature(trained.model_uri)
    assert [c["name"] for c in sig] == train_cfg.model.features
    assert {c["type"] for c in sig} == {"double", "string"}


def test_holdout_is_frozen_under_its_hash(trained, module_state, train_cfg, training_frame):
    path = module_state.holdouts / f"{trained.holdout_hash}.parquet"
    assert path.is_file()
    holdout = datasets.load_holdout(module_state, trained.holdout_hash, "transaction_id")
    expected = datasets.split_windows(training_frame, train_cfg.windows).holdout
    assert sorted(holdout["transaction_id"]) == sorted(expected["transaction_id"])
    assert holdout["is_fraud"].sum() == expected["is_fraud"].sum()


def test_same_request_does_not_train_twice(trained, module_state, train_cfg, mlflow_client):
    runs_before = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name("closedloop/card_fraud").experiment_id]
    )
    again = train_model(module_state, train_cfg, REQUEST)
    assert again.reused and again.version == trained.version and again.run_id == trained.run_id
    runs_after = mlflow_client.search_runs([runs_before[0].info.experiment_id])
    assert len(runs_after) == len(runs_before)


def test_retraining_from_recorded_version_reproduces_holdout_metrics(
    trained, module_state, train_cfg, mlflow_client
):
    mv = mlflow_client.get_model_version(train_cfg.model.name, trained.version)
    again = train_model(
        module_state,
        train_cfg,
        TrainRequest(reason="reproduce", data_version=mv.tags["data_version"], seed=int(mv.tags["seed"])),
    )
    assert not again.reused and again.version != trained.version
    assert again.holdout_hash == trained.holdout_hash
    assert again.family == trained.family
    for name, value in trained.holdout_metrics.items():
        assert again.holdout_metrics[name] == pytest.approx(value, abs=1e-9), name
    # and the two registered models score the frozen holdout identically
    holdout = datasets.load_holdout(module_state, trained.holdout_hash, "transaction_id")
    X = datasets.prepare_features(holdout, train_cfg.model)
    a = tracking.score(tracking.load_model(trained.model_uri), X)
    b = tracking.score(tracking.load_model(again.model_uri), X)
    np.testing.assert_allclose(a, b, atol=1e-12)


# --- calibrated scores and the version's decision threshold ---


def test_pyfunc_returns_calibrated_scores_near_the_fraud_rate(trained, module_state, train_cfg, mlflow_client):
    import mlflow.pyfunc

    holdout = datasets.load_holdout(module_state, trained.holdout_hash, "transaction_id")
    X = datasets.prepare_features(holdout, train_cfg.model)
    pyfunc_scores = mlflow.pyfunc.load_model(trained.model_uri).predict(X)["score"].to_numpy()
    sk_scores = tracking.score(tracking.load_model(trained.model_uri), X)
    np.testing.assert_allclose(pyfunc_scores, sk_scores, atol=1e-12)  # what serving gets is calibrated
    rate = holdout["is_fraud"].mean()
    assert rate / 1.5 < pyfunc_scores.mean() < rate * 1.5, (pyfunc_scores.mean(), rate)
    assert trained.holdout_metrics["ece"] < train_cfg.gates.calibration.max_ece


#: Run in a fresh interpreter where closedloop cannot be imported: only MLflow and the tracking URI.
PYFUNC_CALLER = """
import json, sys
sys.modules["training"] = None  # the model must not need closedloop's code
import mlflow, pandas as pd
rows = pd.read_parquet(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
out = model.predict(rows)
what_if = model.predict(rows, params={"threshold": 0.0})
print(json.dumps({
    "columns": list(out.columns), "dtypes": [str(t) for t in out.dtypes], "rows": len(out),
    "score": out["score"].tolist(), "decision": out["decision"].tolist(),
    "what_if": sorted(set(what_if["decision"])),
    "outputs": model.metadata.get_output_schema().to_dict(),
    "params": model.metadata.get_params_schema().to_dict(),
}))
"""


def test_champion_pyfunc_gives_score_and_decision_in_another_process(
    trained, module_state, train_cfg, mlflow_client, tmp_path
):
    """`mlflow.pyfunc.load_model("models:/<name>@champion").predict(rows)` in a process of its own
    returns named columns, and `decision` is the version's threshold applied to `score`."""
    import subprocess
    import sys

    from training.model import registry

    registry.force_promote(module_state, train_cfg, trained.version, "pyfunc contract test")
    holdout = datasets.load_holdout(module_state, trained.holdout_hash, "transaction_id")
    X = datasets.prepare_features(holdout, train_cfg.model)  # the contract's types, as published
    rows = tmp_path / "rows.parquet"
    X.assign(transaction_id=holdout["transaction_id"].to_numpy()).to_parquet(rows)  # + an extra column
    uri = tracking.model_uri(train_cfg.model.name, alias=tracking.CHAMPION)
    env = {**os.environ, "MLFLOW_TRACKING_URI": module_state.mlflow_tracking_uri}
    proc = subprocess.run(
        [sys.executable, "-c", PYFUNC_CALLER, str(rows), uri],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    assert out["columns"] == ["score", "decision"] and out["rows"] == len(holdout)
    assert out["dtypes"] == ["float64", "object"]
    threshold = float(mlflow_client.get_model_version(train_cfg.model.name, trained.version).tags["decision_threshold"])
    score = np.asarray(out["score"])
    expected = np.where(score >= threshold, "block", "allow")
    assert out["decision"] == expected.tolist()
    assert {"block", "allow"} == set(out["decision"])  # the threshold separates these rows
    np.testing.assert_allclose(score, tracking.score(tracking.load_model(trained.model_uri), X), atol=1e-12)
    assert out["what_if"] == ["block"]  # params={"threshold": 0.0} flags every row
    assert [(c["name"], c["type"]) for c in out["outputs"]] == [("score", "double"), ("decision", "string")]
    assert out["params"] == [{"name": "threshold", "type": "double", "default": threshold, "shape": None}]


def test_threshold_set_at_the_operating_point_and_stored_with_the_version(trained, train_cfg, mlflow_client):
    mv = mlflow_client.get_model_version(train_cfg.model.name, trained.version)
    run = mlflow_client.get_run(trained.run_id)
    threshold = float(mv.tags["decision_threshold"])
    assert threshold == trained.decision_threshold == float(run.data.params["decision_threshold"])
    assert 0 < threshold < 1 and threshold != train_cfg.model.decision_threshold
    point = json.loads(mv.tags["operating_point"])
    assert point["target_precision"] == train_cfg.model.recall_at_precision
    if point["rule"] == "recall_at_precision":
        assert point["precision"] >= train_cfg.model.recall_at_precision
    assert mv.tags["training_method"] == "standard_window"  # this trigger's evidence names no onset
    assert "no breaching window" in mv.tags["training_method_detail"]


def test_uncalibrated_scores_would_overstate_the_rate(training_frame, train_cfg):
    """Why calibration: the class-weighted candidates alone score far above the fraud rate."""
    s = datasets.split_windows(training_frame, train_cfg.windows)
    fit = pd.concat([s.train, s.validation], ignore_index=True)
    raw_cfg = train_cfg.model_copy(update={"model": train_cfg.model.model_copy(update={"calibration": "none"})})
    final = fit_final(raw_cfg, "logistic_regression", {"C": 1.0}, fit, 7)
    cal = fit_final(train_cfg, "logistic_regression", {"C": 1.0}, fit, 7)
    X = datasets.prepare_features(s.holdout, train_cfg.model)
    rate = s.holdout["is_fraud"].mean()
    assert tracking.score(final.model, X).mean() > 3 * rate
    assert rate / 1.5 < tracking.score(cal.model, X).mean() < 1.5 * rate


# --- drift-aware windows: anchored at the onset the trigger names ---


def test_onset_from_evidence_prefers_the_monitor_onset_then_the_earliest_breach():
    assert datasets.onset_from_evidence({"onset_window_start": "2026-01-09"}, 2) == (
        dt.date(2026, 1, 9),
        "evidence.onset_window_start",
    )
    ev = {
        "signals": {
            "data_drift": {"windows": [{"window_start": "2026-01-12", "status": "ok"}]},
            "performance": {
                "windows": [
                    {"window_start": "2026-01-11", "status": "breach"},
                    {"window_start": "2026-01-12", "status": "breach"},
                ]
            },
            "prediction_drift": {"windows": [{"window_start": "2026-01-12", "status": "breach"}]},
        }
    }
    # a performance window is measured on days matured label_maturity_days before the window
    assert datasets.onset_from_evidence(ev, 2)[0] == dt.date(2026, 1, 9)
    assert datasets.onset_from_evidence({"drift_share": 0.4}, 2) == (None, "evidence names no breaching window")
    assert datasets.onset_from_evidence({}, 2)[0] is None


def test_anchored_windows_learn_and_judge_after_the_onset(training_frame, train_cfg):
    last = max(training_frame["batch_date"])
    onset = last - dt.timedelta(days=5)  # 6 post-onset days: holdout 4, then 2 left
    s = datasets.split_anchored(training_frame, train_cfg, onset, seed=7)
    assert s is not None and s.method == "onset_anchored" and s.onset == onset
    assert s.holdout_range == (last - dt.timedelta(days=3), last)
    assert min(s.holdout["batch_date"]) > onset and min(s.train["batch_date"]) >= onset
    # too few post-onset days for a 3-day time-based validation: a stratified random half of them
    assert set(s.validation["batch_date"]) == set(s.train["batch_date"]) == {onset, onset + dt.timedelta(days=1)}
    pool = training_frame[training_frame["batch_date"].between(onset, onset + dt.timedelta(days=1))]
    assert len(s.validation) == pytest.approx(0.5 * len(pool), abs=2)
    assert s.validation["is_fraud"].sum() == pytest.approx(0.5 * pool["is_fraud"].sum(), abs=1)
    assert s.train_weight is not None and (s.train_weight == 1).all()
    datasets.check_no_leakage(s, "transaction_id")
    assert "onset" in s.method_detail and "random" in s.method_detail
    # 6 post-onset days < the config's min_post_onset_days: a direct call still anchors, and says so
    assert train_cfg.training.drift_aware.min_post_onset_days > 6
    assert "6 matured days from it - below training.drift_aware.min_post_onset_days" in s.method_detail


def test_anchored_windows_time_based_validation_and_pre_onset_weight(training_frame, train_cfg):
    last = max(training_frame["batch_date"])
    onset = last - dt.timedelta(days=11)  # 12 post-onset days: holdout 4, validation 3, train 5
    weighted = with_overrides(train_cfg, training={"drift_aware": {"pre_onset_weight": 0.2}})
    s = datasets.split_anchored(training_frame, weighted, onset, seed=7)
    assert s is not None
    assert s.validation_range == (last - dt.timedelta(days=6), last - dt.timedelta(days=4))
    pre = (s.train["batch_date"] < onset).to_numpy()
    assert pre.any() and (s.train_weight[pre] == 0.2).all() and (s.train_weight[~pre] == 1).all()
    assert min(s.train["batch_date"]) == onset - dt.timedelta(days=train_cfg.windows.training_days)
    datasets.check_no_leakage(s, "transaction_id")
    assert "12 matured days from it)" in s.method_detail  # enough evidence: no shortfall noted
    # an onset with too few matured days after it is not anchored
    assert datasets.split_anchored(training_frame, train_cfg, last - dt.timedelta(days=3), seed=7) is None


def test_retrain_with_onset_evidence_is_anchored_and_says_so(
    module_state, train_cfg, data_version, mlflow_client, training_frame
):
    last = max(training_frame["batch_date"])
    onset = last - dt.timedelta(days=5)
    request = TrainRequest(
        reason="drift_monitor:performance",
        evidence={"onset_window_start": onset.isoformat()},
        data_version=data_version,
        idempotency_key="anchored-test",
    )
    res = train_model(module_state, train_cfg, request)
    assert res.training_method == "onset_anchored"
    mv = mlflow_client.get_model_version(train_cfg.model.name, res.version)
    run = mlflow_client.get_run(res.run_id)
    assert mv.tags["training_method"] == run.data.tags["training_method"] == "onset_anchored"
    assert mv.tags["onset"] == onset.isoformat() and onset.isoformat() in mv.tags["training_method_detail"]
    assert mv.tags["training_window_start"] == onset.isoformat()
    holdout = datasets.load_holdout(module_state, res.holdout_hash, "transaction_id")
    assert min(holdout["batch_date"]) > onset
    assert run.data.params["training_method"] == "onset_anchored"


def test_bounded_train_split_logs_the_sampling_and_gates_on_the_full_holdout(
    module_state, train_cfg, data_version, trained, mlflow_client
):
    full = mlflow_client.get_run(trained.run_id).data.params
    bound = int(full["train_rows"]) // 2
    cfg = with_overrides(train_cfg, training={"max_train_rows": bound})
    request = TrainRequest(reason="bounded", data_version=data_version, idempotency_key="bounded-test")
    res = train_model(module_state, cfg, request)
    params = mlflow_client.get_run(res.run_id).data.params
    assert params["max_train_rows"] == str(bound)
    assert params["train_rows_before_downsample"] == full["train_rows"]
    assert params["train_rows_after_downsample"] == params["train_rows"] == str(bound)
    assert 0 < float(params["train_negative_rate"]) < 0.5
    # validation and holdout stay whole: the same frozen holdout as the unbounded run, every row scored
    assert params["validation_rows"] == full["validation_rows"]
    assert params["holdout_rows"] == full["holdout_rows"] and res.holdout_hash == trained.holdout_hash
    assert res.holdout_metrics["pr_auc"] > 0.3  # half the rows still learn the synthetic signal
    from training.model.reproduce import reproduce_version

    # retrained from its lineage (the recorded config, bound included) on the same sample
    assert reproduce_version(module_state, train_cfg, res.version).reproduced


def test_class_weighting_counts_downsampled_negatives_by_their_weight():
    """Negatives kept at rate 1/4 and weighted 4 balance the classes as the full split does."""
    y_full = pd.Series([1] * 10 + [0] * 400)
    y_kept = pd.Series([1] * 10 + [0] * 100)
    weight = np.array([1.0] * 10 + [4.0] * 100)
    assert _pos_weight(y_kept, weight) == _pos_weight(y_full) == 40.0
    assert _pos_weight(y_kept) == 10.0  # counting kept rows would tilt the weighted fit 4:1 to negatives
