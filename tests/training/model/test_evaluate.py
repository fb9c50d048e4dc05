"""Champion/challenger evaluation end to end: real trained models (degraded copies of the data make
the worse ones), real MLflow registry, real gates. Every scenario is one registered model name in a
shared state directory, so they do not disturb each other."""

from __future__ import annotations

import numpy as np
import pytest

from training.config import with_overrides
from training.data import datasets
from training.model import registry, tracking
from training.model.evaluate import evaluate_challenger

STRONG_FEATURES = ["is_new_device", "is_new_country", "amount_to_customer_avg"]


@pytest.fixture(scope="module")
def versions(module_state, training_frame, train_cfg, synth):
    """Data versions: the full set and degraded copies that differ only before the holdout."""
    cut = synth.holdout_start(training_frame, train_cfg)
    return {
        "full": synth.publish(module_state, training_frame, "full"),
        "weak": synth.publish(module_state, synth.permute(training_frame, STRONG_FEATURES, cut), "weak"),
        "no_device": synth.publish(
            module_state, synth.permute(training_frame, ["is_new_device"], cut), "nodev"
        ),
    }


def _artifact_text(paths, uri: str) -> str:
    """An artifact behind a portable `runs:/` URI, read through MLflow (wherever the run is)."""
    import mlflow.artifacts

    assert uri.startswith("runs:/"), uri
    tracking.client(paths)
    return mlflow.artifacts.load_text(uri)


@pytest.fixture(scope="module")
def cfg(train_cfg):
    return with_overrides(train_cfg, model={"name": "fraud_eval"})


@pytest.fixture(scope="module")
def first_then_better(module_state, cfg, versions, train_eval):
    """No champion -> a weak model passing the floors is promoted; then a clearly better one."""
    weak = train_eval(module_state, cfg, versions["weak"], "first")
    strong = train_eval(module_state, cfg, versions["full"], "better")
    return weak, strong


def test_first_passing_model_promoted_when_no_champion(first_then_better, module_state, cfg):
    (weak_t, weak_e), _ = first_then_better
    assert weak_e.action == "first_promote" and weak_e.promote
    assert weak_e.policy == "first_champion" and weak_e.champion_version is None
    rows = [r for r in registry.audit_log(module_state, cfg.model.name) if r["to_version"] == weak_t.version]
    assert [r["action"] for r in rows] == ["first_promote"]
    assert rows[0]["metrics"]["policy"] == "first_champion"
    assert "first_champion" in rows[0]["reason"]


def test_clearly_better_challenger_is_promoted(first_then_better, module_state, cfg):
    (weak_t, _), (strong_t, strong_e) = first_then_better
    assert strong_e.action == "promote", strong_e.failed_gates
    assert strong_e.champion_version == weak_t.version
    assert strong_e.metrics["non_regression_lower"] > 0
    mc = tracking.client(module_state)
    champion = mc.get_model_version_by_alias(cfg.model.name, "champion")
    assert str(champion.version) == strong_t.version
    assert champion.tags["previous_champion"] == weak_t.version
    row = registry.audit_log(module_state, cfg.model.name, limit=1)[0]
    assert (row["action"], row["from_version"], row["to_version"]) == (
        "promote",
        weak_t.version,
        strong_t.version,
    )
    assert row["report_uri"] == strong_e.report_uri == champion.tags["decision_report"]
    report = _artifact_text(module_state, strong_e.report_uri)
    assert "PROMOTE" in report and strong_t.holdout_hash in report
    assert f"{cfg.model.name} v{strong_t.version}" in _artifact_text(module_state, champion.tags["model_card"])
    assert "Gate decision: PROMOTE" in champion.description
    # the description links the report UI-relatively (opens on whichever MLflow server shows the run)
    run = mc.get_run(champion.run_id)
    route = f"#/experiments/{run.info.experiment_id}/runs/{champion.run_id}/artifacts/decision/decision_report.md"
    assert f"({route}?workflowType=machine_learning)" in champion.description


def test_same_holdout_for_champion_and_challenger(first_then_better):
    (weak_t, _), (strong_t, _) = first_then_better
    assert weak_t.holdout_hash == strong_t.holdout_hash  # degradations never touch the holdout rows


def _assert_champion_kept(module_state, cfg, champion_version, holdout_hash):
    mc = tracking.client(module_state)
    assert str(mc.get_model_version_by_alias(cfg.model.name, "champion").version) == champion_version
    holdout = datasets.load_holdout(module_state, holdout_hash, "transaction_id")
    model = tracking.load_model(f"models:/{cfg.model.name}@champion")
    scores = tracking.score(model, datasets.prepare_features(holdout, cfg.model))
    assert scores.shape == (len(holdout),) and np.isfinite(scores).all()


@pytest.fixture(scope="module")
def worse(first_then_better, module_state, cfg, versions, train_eval):
    """Trained without its strongest features (labels unchanged): clearly worse than the champion."""
    return train_eval(module_state, cfg, versions["weak"], "worse")


def test_worse_challenger_rejected_and_champion_stays_loadable(first_then_better, worse, module_state, cfg):
    _, (strong_t, _) = first_then_better
    worse_t, e = worse
    assert e.action == "reject" and not e.promote
    assert "non_regression" in e.failed_gates
    assert e.metrics["non_regression_upper"] < 0  # clearly worse, not just not-better
    mc = tracking.client(module_state)
    mv = mc.get_model_version(cfg.model.name, worse_t.version)
    assert mv.tags["gate_decision"] == "reject" and "non_regression" in mv.tags["gate_failed"]
    report = _artifact_text(module_state, mv.tags["decision_report"])
    assert "KEEP CHAMPION" in report and "| non_regression |" in report
    row = registry.audit_log(module_state, cfg.model.name, limit=1)[0]
    assert (row["action"], row["to_version"], row["from_version"]) == (
        "reject",
        worse_t.version,
        strong_t.version,
    )
    assert "non_regression" in row["reason"]
    _assert_champion_kept(module_state, cfg, strong_t.version, strong_t.holdout_hash)


def test_statistically_equal_challenger_is_not_promoted(
    first_then_better, module_state, cfg, versions, train_eval
):
    _, (strong_t, _) = first_then_better
    same_t, same_e = train_eval(module_state, cfg, versions["full"], "equal")
    assert same_t.version != strong_t.version
    assert same_t.holdout_metrics["pr_auc"] == pytest.approx(strong_t.holdout_metrics["pr_auc"], abs=1e-9)
    assert same_e.action == "reject"
    assert same_e.failed_gates == ["non_regression"]
    _assert_champion_kept(module_state, cfg, strong_t.version, strong_t.holdout_hash)


def test_challenger_regressing_on_one_slice_is_rejected(
    first_then_better, module_state, cfg, versions, train_eval
):
    """is_new_device matters only online: without it the online slice drops. The non-regression
    margin is opened wide so that only the slice gate can be what rejects."""
    _, (strong_t, _) = first_then_better
    lax = with_overrides(cfg, gates={"non_regression": {"margin": -1.0}})
    _, e = train_eval(module_state, lax, versions["no_device"], "slice")
    assert e.action == "reject"
    assert e.failed_gates == ["slices"]
    row = registry.audit_log(module_state, cfg.model.name, limit=1)[0]
    assert row["action"] == "reject" and "channel=online" in row["reason"]
    assert "channel=in_store" not in row["reason"].split("slices:")[1].split("skipped")[0]
    _assert_champion_kept(module_state, cfg, strong_t.version, strong_t.holdout_hash)


def test_schema_changed_challenger_rejected_without_override(
    first_then_better, module_state, cfg, versions, train_eval
):
    _, (strong_t, _) = first_then_better
    numeric = [f for f in cfg.model.numeric_features if f != "tx_count_24h"]
    lax = with_overrides(cfg, model={"numeric_features": numeric}, gates={"non_regression": {"margin": -1.0}})
    changed_t, e = train_eval(module_state, lax, versions["full"], "schema")
    assert e.action == "reject" and e.failed_gates == ["signature"]
    assert "tx_count_24h" in registry.audit_log(module_state, cfg.model.name, limit=1)[0]["reason"]
    _assert_champion_kept(module_state, cfg, strong_t.version, strong_t.holdout_hash)
    # the same challenger with a stated reason passes the signature gate (dry run: registry untouched)
    dry = evaluate_challenger(
        module_state,
        lax,
        version=changed_t.version,
        signature_override_reason="tx_count_24h retired",
        act=False,
    )
    assert dry.action == "dry_run" and dry.failed_gates == [] and dry.promote
    # a passing signature change is a promotion risk (approval.mode never here: reported, not asked)
    assert [r["kind"] for r in dry.risks] == ["signature_change"] and not dry.needs_approval
    _assert_champion_kept(module_state, cfg, strong_t.version, strong_t.holdout_hash)


def test_rejected_version_cannot_be_promoted_without_force(worse, module_state, cfg):
    worse_t, e = worse
    assert e.action == "reject"
    with pytest.raises(registry.RegistryError, match="force-promote"):
        registry.promote(module_state, cfg, worse_t.version, reason="try", idempotency_key="sneaky")


def test_reevaluating_a_decided_challenger_changes_nothing(first_then_better, module_state, cfg):
    _, (strong_t, strong_e) = first_then_better
    before = registry.audit_log(module_state, cfg.model.name, limit=1000)
    again = evaluate_challenger(module_state, cfg, version=strong_t.version)
    assert again.reused and again.action == "promote" and again.report_uri == strong_e.report_uri
    assert registry.audit_log(module_state, cfg.model.name, limit=1000) == before


def test_no_tag_or_description_names_a_local_file(first_then_better, worse, module_state, cfg):
    """Embedded store: links are `runs:/` URIs and UI routes, never `file://` or the state dir's path."""
    from tests.mlflow_portability import local_references

    assert local_references(tracking.client(module_state), cfg.model.name, module_state) == []


def test_collapsed_champion_replaced_only_under_the_audited_recovery_policy(
    module_state, cfg, versions, train_eval
):
    """A champion below the floors on the current holdout: with the recovery policy off the better
    challenger (itself below the normal floor) is rejected; with it on, the same challenger is
    promoted, and the audit row and the report say `recovery`."""
    from training.model.train import TrainRequest, train_model

    floors = {"pr_auc": 0.95, "roc_auc": 0.6}  # nobody meets pr_auc 0.95: the champion has "collapsed"
    off = with_overrides(
        cfg, model={"name": "fraud_recovery"}, gates={"floors": floors, "recovery": {"enabled": False}}
    )
    on = with_overrides(off, gates={"recovery": {"enabled": True, "floors": {"pr_auc": 0.1}}})
    weak = train_model(module_state, off, TrainRequest(reason="old champion", data_version=versions["weak"]))
    registry.force_promote(module_state, off, weak.version, reason="test: the champion before the drift")
    strong = train_model(module_state, off, TrainRequest(reason="drift_monitor:performance", data_version=versions["full"]))

    rejected = evaluate_challenger(module_state, off, version=strong.version, idempotency_key="recovery-off")
    assert rejected.action == "reject" and rejected.failed_gates == ["floor_pr_auc"]
    assert rejected.policy == "champion_challenger"
    row = registry.audit_log(module_state, "fraud_recovery", limit=1)[0]
    assert row["metrics"]["recovery"]["champion_collapsed"] and not row["metrics"]["recovery"]["active"]

    promoted = evaluate_challenger(module_state, on, version=strong.version, idempotency_key="recovery-on")
    assert promoted.action == "promote" and promoted.policy == "recovery", promoted.failed_gates
    assert promoted.metrics["non_regression_lower"] > 0  # it beat the collapsed champion significantly
    row = registry.audit_log(module_state, "fraud_recovery", limit=1)[0]
    assert (row["action"], row["from_version"], row["to_version"]) == ("promote", weak.version, strong.version)
    assert row["reason"].startswith("recovery policy:")
    assert row["metrics"]["policy"] == "recovery" and row["metrics"]["recovery"]["active"]
    assert row["metrics"]["recovery"]["floors_applied"]["pr_auc"] == 0.1
    report = _artifact_text(module_state, promoted.report_uri)
    assert "## Recovery" in report and "| policy | recovery |" in report
    mv = tracking.client(module_state).get_model_version("fraud_recovery", strong.version)
    assert mv.tags["gate_recovery"] == "true" and mv.tags["gate_policy"] == "recovery"


def test_recovery_relative_to_a_baseline_trained_on_the_same_days(module_state, cfg, versions):
    """gates.recovery.relative_to: baseline - train stores a logistic regression's holdout scores beside
    the challenger, evaluate holds the recovering challenger to it instead of the absolute floors,
    and the audit row names the baseline."""
    from training.model.train import BASELINE_ARTIFACT, BASELINE_TAG, TrainRequest, train_model

    on = with_overrides(
        cfg,
        model={"name": "fraud_recovery_baseline"},
        gates={"floors": {"pr_auc": 0.95, "roc_auc": 0.6},  # nobody meets them: the champion has collapsed
               "recovery": {"enabled": True, "relative_to": "baseline"}},
    )
    weak = train_model(module_state, on, TrainRequest(reason="old champion", data_version=versions["weak"]))
    registry.force_promote(module_state, on, weak.version, reason="test: the champion before the drift")
    strong = train_model(module_state, on, TrainRequest(reason="drift_monitor:performance", data_version=versions["full"]))
    mc = tracking.client(module_state)
    mv = mc.get_model_version("fraud_recovery_baseline", strong.version)
    run = mc.get_run(mv.run_id)
    assert "logistic_regression" in run.data.tags[BASELINE_TAG]
    assert any(a.path == BASELINE_ARTIFACT for a in mc.list_artifacts(mv.run_id, "recovery"))

    promoted = evaluate_challenger(module_state, on, version=strong.version, idempotency_key="recovery-baseline")
    assert promoted.action == "promote" and promoted.policy == "recovery", promoted.failed_gates
    rec = promoted.metrics["recovery"]
    assert rec["relative_to"] == "baseline" and rec["baseline"] == "logistic_regression"
    assert "floor_pr_auc" in rec["waived_gates"] and rec["floors_applied"] == {}
    assert promoted.metrics["recovery_baseline_upper"] >= 0  # not significantly worse than the baseline
    row = registry.audit_log(module_state, "fraud_recovery_baseline", limit=1)[0]
    assert row["metrics"]["policy"] == "recovery" and row["reason"].startswith("recovery policy:")
    assert "baseline trained on the same days" in row["reason"]


@pytest.fixture(scope="module")
def held_first(module_state, cfg, versions, train_eval):
    """A first champion under `approval.mode: risky`, evaluated as train_model does (`hold=True`)."""
    risky = with_overrides(cfg, model={"name": "fraud_hold"}, approval={"mode": "risky", "on_timeout": "reject"})
    trained, held = train_eval(module_state, risky, versions["full"], "held", hold=True, actor="scheduler")
    return risky, trained, held


def test_a_risky_promotion_is_held_unaudited_until_answered(held_first, module_state):
    risky, trained, held = held_first
    assert held.action == "held" and held.promote and held.needs_approval
    assert [r["kind"] for r in held.risks] == ["first_champion"]
    assert registry.audit_log(module_state, risky.model.name) == []  # nothing decided yet
    assert tracking.alias_version(tracking.client(module_state), risky.model.name, "champion") is None
    assert "A person must approve this promotion" in _artifact_text(module_state, held.report_uri)
    from training.model.evaluate import EvaluationError, settle

    with pytest.raises(EvaluationError, match="needs an approval answer"):
        settle(module_state, risky, held, None)


def test_a_persons_rejection_then_approval_are_audited_with_approver_comment_and_time(held_first, module_state):
    from training.model import approval
    from training.model.evaluate import evaluate_challenger, settle

    risky, trained, held = held_first
    no = approval.Answer(approved=False, actor="user:bob", at="2026-12-07T09:00:00+00:00",
                         comment="wait for the audit", timed_out=False)
    rejected = settle(module_state, risky, held, no, airflow_run_id="run-1", actor="scheduler")
    assert rejected.action == "reject" and not rejected.promote and "approval" in rejected.failed_gates
    (row,) = registry.audit_log(module_state, risky.model.name)
    assert (row["action"], row["actor"], row["trigger_reason"]) == ("reject", "user:bob", "held")
    assert "rejected by user:bob at 2026-12-07T09:00:00+00:00: wait for the audit" in row["reason"]
    assert row["metrics"]["approval"]["answer"]["comment"] == "wait for the audit"
    report = _artifact_text(module_state, held.report_uri)
    assert "## Approval answer" in report and "user:bob" in report and "wait for the audit" in report
    # the same decision settled again (a retried task) changes nothing
    assert settle(module_state, risky, held, no).reused
    assert len(registry.audit_log(module_state, risky.model.name)) == 1

    # a new training of the same data is a new decision; this time the person approves
    again = evaluate_challenger(module_state, risky, version=trained.version, hold=True,
                                idempotency_key="fraud_hold#second")
    assert again.action == "held" and again.needs_approval
    yes = approval.Answer(approved=True, actor="user:alice", at="2026-12-07T09:05:00+00:00", comment="ok",
                          timed_out=False)
    promoted = settle(module_state, risky, again, yes, airflow_run_id="run-2")
    assert promoted.action == "first_promote" and promoted.approval["actor"] == "user:alice"
    row = registry.audit_log(module_state, risky.model.name, limit=1)[0]
    assert (row["action"], row["actor"]) == ("first_promote", "user:alice")
    assert "approved by user:alice" in row["reason"] and row["metrics"]["approval"]["risks"][0]["kind"] == "first_champion"
    mv = tracking.alias_version(tracking.client(module_state), risky.model.name, "champion")
    assert str(mv.version) == trained.version and mv.tags["approval"].startswith("approved by user:alice")


def test_evaluate_run_by_hand_promotes_a_risky_challenger_without_asking(module_state, cfg, versions, train_eval):
    """`python -m training evaluate` is a person deciding: under `approval.mode: risky` it still promotes,
    and the report and audit row say which risks it carried and that nobody was asked."""
    risky = with_overrides(cfg, model={"name": "fraud_by_hand"}, approval={"mode": "risky"})
    trained, e = train_eval(module_state, risky, versions["full"], "by hand", actor="cli:ops")
    assert e.action == "first_promote" and not e.needs_approval
    (row,) = registry.audit_log(module_state, risky.model.name)
    assert row["actor"] == "cli:ops" and row["metrics"]["approval"]["asked"] is False
    assert [r["kind"] for r in row["metrics"]["approval"]["risks"]] == ["first_champion"]
    assert "nobody is asked" in _artifact_text(module_state, e.report_uri)
