"""Champion/challenger gates: behaviour on simulated holdouts with known relative model quality."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from training.config import Config, with_overrides
from training.model.gates import (
    NO_CHAMPION_WHY,
    GateConfigError,
    GateDecision,
    GateInputError,
    GateInputs,
    evaluate_gates,
)
from training.model.reports import render_model_card, render_report

N = 6000
SIGNATURE = [{"name": "amount", "type": "double"}, {"name": "channel", "type": "string"}]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class World:
    """A holdout whose fraud probability is a known function of a latent signal `z`.

    A model's score is that function applied to `z` plus noise; more noise = a worse model.
    """

    def __init__(self, seed: int = 0, n: int = N) -> None:
        self.rng = np.random.default_rng(seed)
        self.z = self.rng.normal(size=n)
        self.holdout = pd.DataFrame(
            {
                "is_fraud": (self.rng.random(n) < _sigmoid(-6.5 + 3 * self.z)).astype(int),
                "channel": self.rng.choice(["online", "in_store"], size=n, p=[0.88, 0.12]),
                "country_bucket": self.rng.choice(["domestic", "foreign"], size=n, p=[0.7, 0.3]),
                # ge_500 is rare: ~180 rows, below min_rows=500, so it must be skipped
                "amount_band": self.rng.choice(
                    ["lt_10", "10_100", "100_500", "ge_500"], size=n, p=[0.3, 0.4, 0.27, 0.03]
                ),
            }
        )

    def model(self, noise: float | np.ndarray, seed: int) -> np.ndarray:
        eps = np.random.default_rng(seed).normal(size=self.z.size)
        return _sigmoid(-6.5 + 3 * (self.z + noise * eps))

    def inputs(self, challenger, champion, **kw) -> GateInputs:
        base = dict(
            holdout=self.holdout,
            challenger_scores=challenger,
            champion_scores=champion,
            challenger_signature=SIGNATURE,
            champion_signature=None if champion is None else SIGNATURE,
            signature_override_reason=None,
            latency_ms_per_1k_rows=12.0,
            model_size_mb=1.5,
        )
        base.update(kw)
        return GateInputs(**base)


@pytest.fixture(scope="module")
def cfg() -> Config:
    from training.config import load_config

    return load_config()


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture(scope="module")
def clearly_better(cfg: Config, world: World) -> GateDecision:
    return evaluate_gates(cfg, world.inputs(world.model(0.0, 1), world.model(0.6, 2)))


def _failed(decision: GateDecision) -> list[str]:
    return [g.name for g in decision.failed]


def test_gates_run_in_order_with_human_reasons(clearly_better: GateDecision) -> None:
    names = [g.name for g in clearly_better.gates]
    assert names == [
        "floor_pr_auc",
        "floor_roc_auc",
        "non_regression",
        "slices",
        "signature",
        "calibration_ece",
        "latency",
        "model_size",
    ]
    assert all(len(g.why) > 20 for g in clearly_better.gates)


def test_clearly_better_challenger_is_promoted(clearly_better: GateDecision) -> None:
    d = clearly_better
    assert d.policy == "champion_challenger"
    assert d.promote, [(g.name, g.why) for g in d.gates]
    assert d.bootstrap is not None and d.bootstrap.lower > 0
    assert d.gate("non_regression").value == d.bootstrap.lower
    assert d.metrics["challenger_pr_auc"] > d.metrics["champion_pr_auc"]
    assert "demonstrated" in d.gate("non_regression").why


def test_identical_models_do_not_replace_the_champion(cfg: Config, world: World) -> None:
    s = world.model(0.3, 1)
    d = evaluate_gates(cfg, world.inputs(s, s.copy()))
    assert d.bootstrap is not None and d.bootstrap.lower <= 0 <= d.bootstrap.upper
    assert not d.promote
    assert _failed(d) == ["non_regression"]
    assert "does not replace the champion" in d.gate("non_regression").why


def test_better_by_chance_is_not_promoted(cfg: Config, world: World) -> None:
    # two equally good models with independent noise; order them so the challenger wins on this holdout
    a, b = world.model(0.3, 11), world.model(0.3, 12)
    d = evaluate_gates(cfg, world.inputs(a, b))
    if d.bootstrap is not None and d.bootstrap.observed_diff < 0:
        d = evaluate_gates(cfg, world.inputs(b, a))
    assert d.bootstrap is not None and d.bootstrap.observed_diff > 0  # better on the holdout ...
    assert d.bootstrap.lower <= 0  # ... but not demonstrably
    assert not d.promote and _failed(d) == ["non_regression"]
    assert "not demonstrably better" in d.gate("non_regression").why


def _worse_in_store(world: World) -> np.ndarray:
    """Excellent online; in store ranked poorly (and scored low, so the overall ranking still improves)."""
    in_store = (world.holdout["channel"] == "in_store").to_numpy()
    scores = world.model(np.where(in_store, 1.5, 0.0), 1)
    return np.where(in_store, 0.2 * scores, scores)


def test_better_overall_but_worse_on_a_slice_is_rejected(cfg: Config, world: World) -> None:
    d = evaluate_gates(cfg, world.inputs(_worse_in_store(world), world.model(0.6, 2)))
    assert d.gate("non_regression").verdict == "pass"  # better overall ...
    assert not d.promote and _failed(d) == ["slices"]  # ... yet rejected for one slice
    why = d.gate("slices").why
    assert "channel=in_store" in why and "channel=online" not in why.split("skipped")[0]
    row = d.slice_metrics.set_index(["slice_column", "slice_value"]).loc[("channel", "in_store")]
    assert row["status"] == "fail" and row["diff"] < -cfg.gates.slices.tolerance


def test_under_populated_slices_are_skipped_with_reason(clearly_better: GateDecision) -> None:
    t = clearly_better.slice_metrics.set_index(["slice_column", "slice_value"])
    rare = t.loc[("amount_band", "ge_500")]
    assert rare["status"] == "skipped" and not rare["evaluated"]
    assert "under-populated" in rare["why"] and "500 rows" in rare["why"]
    assert "amount_band=ge_500" in clearly_better.gate("slices").why
    assert set(t[t["evaluated"]].index.get_level_values(0)) == {"channel", "country_bucket", "amount_band"}


def test_slice_tolerance_is_configurable(cfg: Config, world: World) -> None:
    inputs = world.inputs(_worse_in_store(world), world.model(0.6, 2))
    loose = with_overrides(cfg, gates={"slices": {"tolerance": 1.0}})
    assert evaluate_gates(loose, inputs).promote


def test_signature_change_needs_a_reason(cfg: Config, world: World) -> None:
    changed = [{"name": "amount", "type": "long"}, {"name": "country", "type": "string"}]
    inputs = world.inputs(world.model(0.0, 1), world.model(0.6, 2), challenger_signature=changed)
    d = evaluate_gates(cfg, inputs)
    assert not d.promote and _failed(d) == ["signature"]
    why = d.gate("signature").why
    assert "added ['country']" in why and "removed ['channel']" in why and "amount: double → long" in why
    reason = "amount now in cents (ticket FR-12), consumers updated"
    ok = evaluate_gates(cfg, replace(inputs, signature_override_reason=reason))
    assert ok.promote and ok.gate("signature").verdict == "pass" and reason in ok.gate("signature").why


def test_signature_column_order_is_not_a_change(cfg: Config, world: World) -> None:
    inputs = world.inputs(world.model(0.0, 1), world.model(0.6, 2), challenger_signature=SIGNATURE[::-1])
    assert evaluate_gates(cfg, inputs).gate("signature").verdict == "pass"


def test_no_champion_promotes_first_passing_challenger(cfg: Config, world: World) -> None:
    d = evaluate_gates(cfg, world.inputs(world.model(0.3, 1), None))
    assert d.policy == "first_champion" and d.promote and d.bootstrap is None
    skipped = {g.name: g.why for g in d.gates if g.verdict == "skipped"}
    assert skipped == dict.fromkeys(["non_regression", "slices", "signature"], NO_CHAMPION_WHY)
    # slice values are still reported for the model card
    assert d.slice_metrics["challenger"].notna().any()


def test_no_champion_failing_floors_is_not_promoted(cfg: Config, world: World) -> None:
    d = evaluate_gates(cfg, world.inputs(world.model(3.0, 1), None))
    assert d.policy == "first_champion" and not d.promote
    assert "floor_pr_auc" in _failed(d)
    assert "below the absolute floor" in d.gate("floor_pr_auc").why


@pytest.mark.parametrize(
    ("field", "value", "gate"),
    [("latency_ms_per_1k_rows", 251.0, "latency"), ("model_size_mb", 50.5, "model_size")],
)
def test_budget_breach_rejects(cfg: Config, world: World, field: str, value: float, gate: str) -> None:
    for champion in (None, world.model(0.6, 2)):
        d = evaluate_gates(cfg, world.inputs(world.model(0.0, 1), champion, **{field: value}))
        assert not d.promote and _failed(d) == [gate]
        assert "over the budget" in d.gate(gate).why


def test_lower_is_better_floor_is_a_ceiling(cfg: Config, world: World) -> None:
    strict = with_overrides(cfg, gates={"floors": {"brier": 0.001}})
    d = evaluate_gates(strict, world.inputs(world.model(0.0, 1), None))
    assert _failed(d) == ["floor_brier"] and "lower is better" in d.gate("floor_brier").why
    lenient = with_overrides(cfg, gates={"floors": {"brier": 0.5}})
    assert evaluate_gates(lenient, world.inputs(world.model(0.0, 1), None)).promote


def test_decision_is_deterministic_by_seed(cfg: Config, world: World) -> None:
    inputs = world.inputs(world.model(0.3, 11), world.model(0.3, 12))
    a, b = evaluate_gates(cfg, inputs), evaluate_gates(cfg, inputs)
    assert json.dumps(a.to_dict(), allow_nan=False) == json.dumps(b.to_dict(), allow_nan=False)
    c = evaluate_gates(cfg, inputs, seed=cfg.training.seed + 1)
    assert a.bootstrap is not None and c.bootstrap is not None
    assert (a.bootstrap.lower, a.bootstrap.upper) != (c.bootstrap.lower, c.bootstrap.upper)


def test_inputs_that_cannot_be_judged_raise(cfg: Config, world: World) -> None:
    good, champ = world.model(0.0, 1), world.model(0.6, 2)
    with pytest.raises(GateInputError, match="target column 'is_fraud'"):
        evaluate_gates(cfg, world.inputs(good, champ, holdout=world.holdout.drop(columns="is_fraud")))
    no_pos = world.holdout.assign(is_fraud=0)
    with pytest.raises(GateInputError, match="0 positives"):
        evaluate_gates(cfg, world.inputs(good, champ, holdout=no_pos))
    with pytest.raises(GateInputError, match="one score per holdout row"):
        evaluate_gates(cfg, world.inputs(good[:-1], champ))
    with pytest.raises(GateInputError, match="slice columns"):
        evaluate_gates(cfg, world.inputs(good, champ, holdout=world.holdout.drop(columns="channel")))
    with pytest.raises(GateInputError, match="latency"):
        evaluate_gates(cfg, world.inputs(good, champ, latency_ms_per_1k_rows=float("nan")))
    with pytest.raises(GateInputError, match="signature entries"):
        evaluate_gates(cfg, world.inputs(good, champ, challenger_signature=["amount"]))
    with pytest.raises(GateConfigError, match="unknown metric"):
        evaluate_gates(with_overrides(cfg, gates={"floors": {"f1": 0.5}}), world.inputs(good, champ))


def test_report_lists_every_gate_and_verdict(cfg: Config, world: World, clearly_better: GateDecision) -> None:
    ctx = {
        "model_name": "card_fraud",
        "challenger_version": "7",
        "champion_version": "6",
        "holdout_hash": "abc123",
        "data_version": "d41d8cd9",
        "trigger_reason": "drift: 2 of 3 windows breached",
    }
    text = render_report(clearly_better, ctx)
    for g in clearly_better.gates:
        assert f"| {g.name} |" in text and f"{g.verdict}" in text
    for key in (
        "abc123",
        "d41d8cd9",
        "drift: 2 of 3 windows breached",
        "PROMOTE",
        "## Slices",
        "What happens next",
    ):
        assert key in text
    assert "| amount_band | ge_500 |" in text

    rejected = evaluate_gates(cfg, world.inputs(world.model(0.3, 1), world.model(0.3, 1)))
    text = render_report(rejected, ctx)
    assert "KEEP CHAMPION" in text and "failed gates: non_regression" in text and "❌ fail" in text
    assert "version 6 stays `@champion`" in text


def test_model_card_states_use_data_slices_limits_and_decision(clearly_better: GateDecision) -> None:
    ctx = {
        "training_window_start": "2026-01-01",
        "training_window_end": "2026-01-21",
        "data_version": "d41d8cd9",
    }
    card = render_model_card("card_fraud", 7, clearly_better, {**ctx, "label_maturity_days": 5})
    for key in (
        "# Model card — card_fraud v7",
        "## Intended use",
        "2026-01-01 → 2026-01-21",
        "d41d8cd9",
        "## Metrics by slice",
        "older than 5 days",
        "Simulated data",
        "amount_band=ge_500",
        "promoted to `@champion`",
    ):
        assert key in card, key
    assert "Simulated data" not in render_model_card("m", 1, clearly_better, {"simulated_data": False})
    # the card speaks the contract's words (evaluate passes them), not the card example's
    loans = render_model_card("loans", 2, clearly_better, {
        "positive_label": "default", "positive_decision": "review", "events": "applications", "labels": "outcomes",
    })
    assert "Ranks incoming applications by the probability of default" in loans
    assert "`review`" in loans and "the labels (outcomes) arrive" in loans
    assert "fraud" not in loans.lower()


# --- recovery policy: replacing a champion that has collapsed below its floors -------------------

NO_ECE = {"calibration": {"max_ece": None}}  # these worlds' noisy models are not calibrated


@pytest.fixture(scope="module")
def recovery_cfg(cfg: Config) -> Config:
    return with_overrides(cfg, gates={**NO_ECE, "recovery": {"enabled": True, "floors": {"pr_auc": 0.15, "roc_auc": 0.70}}})


def test_collapsed_champion_is_replaced_under_the_recovery_policy(recovery_cfg: Config, world: World) -> None:
    champion, challenger = world.model(2.0, 2), world.model(0.9, 1)  # PR-AUC ~0.08 vs ~0.21, floor 0.30
    d = evaluate_gates(recovery_cfg, world.inputs(challenger, champion))
    assert d.metrics["champion_pr_auc"] < 0.15 and 0.15 < d.metrics["challenger_pr_auc"] < 0.30
    assert d.promote and d.policy == "recovery", [(g.name, g.why) for g in d.failed]
    assert d.gate("non_regression").verdict == "pass"
    assert d.gate("floor_pr_auc").threshold == 0.15 and "recovery floor" in d.gate("floor_pr_auc").why
    assert d.recovery is not None and d.recovery["active"] and d.recovery["champion_collapsed"]
    assert set(d.recovery["champion_below_floor"]) == {"pr_auc", "roc_auc"}
    assert d.to_dict()["recovery"]["floors_applied"] == {"pr_auc": 0.15, "roc_auc": 0.70}
    report = render_report(d, {"challenger_version": "7", "champion_version": "3"})
    assert "## Recovery" in report and "| policy | recovery |" in report and "recovery policy" in report


def test_without_the_recovery_policy_a_collapsed_champion_stays(recovery_cfg: Config, world: World) -> None:
    off = with_overrides(recovery_cfg, gates={"recovery": {"enabled": False}})
    d = evaluate_gates(off, world.inputs(world.model(0.9, 1), world.model(2.0, 2)))
    assert not d.promote and d.policy == "champion_challenger"
    assert _failed(d) == ["floor_pr_auc"] and d.gate("floor_pr_auc").threshold == 0.30
    assert d.recovery is not None and d.recovery["champion_collapsed"] and not d.recovery["active"]
    assert "disabled" in d.recovery["why"]


def test_recovery_still_needs_a_significant_win(recovery_cfg: Config, world: World) -> None:
    low = with_overrides(recovery_cfg, gates={"recovery": {"floors": {"pr_auc": 0.05, "roc_auc": 0.6}}})
    a, b = world.model(1.2, 5), world.model(1.2, 6)  # equally poor: the challenger is no rescue
    d = evaluate_gates(low, world.inputs(a, b))
    if d.bootstrap is not None and d.bootstrap.observed_diff < 0:
        d = evaluate_gates(low, world.inputs(b, a))
    assert d.policy == "recovery" and not d.promote
    assert _failed(d) == ["non_regression"]


def test_recovery_floor_is_still_a_floor(recovery_cfg: Config, world: World) -> None:
    d = evaluate_gates(recovery_cfg, world.inputs(world.model(1.5, 1), world.model(3.0, 2)))
    assert d.metrics["challenger_pr_auc"] < 0.15 < 0.30
    assert d.gate("non_regression").verdict == "pass"  # better than the wreck, yet not good enough
    assert not d.promote and "floor_pr_auc" in _failed(d)


def test_healthy_champion_keeps_the_normal_floors(recovery_cfg: Config, world: World) -> None:
    # the champion meets the floors: a challenger below them is not let in by the recovery policy
    d = evaluate_gates(recovery_cfg, world.inputs(world.model(0.9, 1), world.model(0.6, 2)))
    assert d.recovery is not None and not d.recovery["champion_collapsed"] and not d.recovery["active"]
    assert d.policy == "champion_challenger" and not d.promote
    assert d.gate("floor_pr_auc").threshold == 0.30


# --- calibration gate ------------------------------------------------------------------------------


def test_ece_gate_rejects_a_badly_calibrated_model(cfg: Config, world: World) -> None:
    calibrated = world.model(0.0, 1)
    overstated = 6.0 * calibrated / (1.0 + 5.0 * calibrated)  # odds x6: same ranking, ~6x the fraud rate
    ok = evaluate_gates(cfg, world.inputs(calibrated, None))
    bad = evaluate_gates(cfg, world.inputs(overstated, None))
    assert ok.gate("calibration_ece").verdict == "pass" and ok.promote
    assert bad.metrics["challenger_pr_auc"] == pytest.approx(ok.metrics["challenger_pr_auc"])
    assert not bad.promote and _failed(bad) == ["calibration_ece"]
    assert bad.gate("calibration_ece").value > cfg.gates.calibration.max_ece
    assert "above the ceiling" in bad.gate("calibration_ece").why


def test_calibration_ceilings_are_configurable(cfg: Config, world: World) -> None:
    s = world.model(0.0, 1)
    overstated = 6.0 * s / (1.0 + 5.0 * s)
    off = with_overrides(cfg, gates=NO_ECE)
    assert "calibration_ece" not in [g.name for g in evaluate_gates(off, world.inputs(overstated, None)).gates]
    brier = with_overrides(cfg, gates={"calibration": {"max_ece": None, "max_brier": 0.01}})
    d = evaluate_gates(brier, world.inputs(overstated, None))
    assert _failed(d) == ["calibration_brier"]


def test_recovery_config_is_validated(cfg: Config) -> None:
    from training.config import ConfigError, parse_config

    data = cfg.model_dump(mode="json")
    data["gates"]["recovery"] = {"enabled": True, "floors": {}}
    with pytest.raises(ConfigError, match="recovery.floors"):
        parse_config(data)
    with pytest.raises(ConfigError, match="relaxes a normal floor"):
        with_overrides(cfg, gates={"recovery": {"floors": {"log_loss": 0.5}}})


def _collapsed_but_good_in_store(world: World) -> np.ndarray:
    """A champion that has lost the online fraud (most of it) yet still ranks in-store fraud well."""
    in_store = (world.holdout["channel"] == "in_store").to_numpy()
    return world.model(np.where(in_store, 0.0, 3.0), 2)


def test_recovery_waives_a_slice_the_collapsed_champion_still_wins(recovery_cfg: Config, world: World) -> None:
    champion = _collapsed_but_good_in_store(world)
    challenger = _worse_in_store(world)
    d = evaluate_gates(recovery_cfg, world.inputs(challenger, champion))
    assert d.recovery is not None and d.recovery["active"], d.metrics
    slices = d.gate("slices")
    assert slices.verdict == "waived" and "channel=in_store" in slices.why and "recovery policy" in slices.why
    assert d.promote and d.policy == "recovery" and d.recovery["waived_gates"] == ["slices"]
    report = render_report(d, {})
    assert "waived" in report and "| gates waived | slices |" in report
    # the same challenger with the slice gate enforced under recovery is rejected for that slice
    strict = with_overrides(recovery_cfg, gates={"recovery": {"slice_gate": "enforce"}})
    d2 = evaluate_gates(strict, world.inputs(challenger, champion))
    assert not d2.promote and _failed(d2) == ["slices"]
    # and without a collapse, a slice regression blocks as always
    healthy = evaluate_gates(recovery_cfg, world.inputs(challenger, world.model(0.6, 2)))
    assert healthy.gate("slices").verdict == "fail" and not healthy.promote


# --- recovery relative to what is achievable: a baseline fitted on the same days -----------------


@pytest.fixture(scope="module")
def baseline_cfg(cfg: Config) -> Config:
    return with_overrides(cfg, gates={**NO_ECE, "recovery": {"enabled": True, "relative_to": "baseline"}})


def test_recovery_relative_to_baseline_replaces_floors_with_what_is_achievable(
    baseline_cfg: Config, world: World
) -> None:
    # a harder world: the best anyone gets on the new days is below every absolute floor
    champion, challenger, baseline = world.model(3.0, 2), world.model(1.5, 1), world.model(1.6, 7)
    d = evaluate_gates(
        baseline_cfg, world.inputs(challenger, champion, baseline_scores=baseline, baseline_name="logistic_regression")
    )
    assert d.metrics["challenger_pr_auc"] < 0.15, d.metrics  # under the old recovery floor too
    assert d.promote and d.policy == "recovery", [(g.name, g.why) for g in d.failed]
    assert d.gate("floor_pr_auc").verdict == "waived" and "recovery_baseline" in d.gate("floor_pr_auc").why
    assert d.gate("recovery_baseline").verdict == "pass" and d.gate("non_regression").verdict == "pass"
    assert d.recovery is not None and d.recovery["relative_to"] == "baseline"
    assert d.recovery["baseline"] == "logistic_regression" and "floor_pr_auc" in d.recovery["waived_gates"]
    assert "baseline_pr_auc" in d.metrics and "recovery_baseline_upper" in d.metrics
    report = render_report(d, {})
    assert "recovery_baseline" in report and "| recovery relative to | baseline |" in report
    # a challenger clearly worse than the simple baseline on the same days is not what the days allow
    strong = world.model(0.8, 7)
    worse = evaluate_gates(baseline_cfg, world.inputs(challenger, champion, baseline_scores=strong))
    assert not worse.promote and _failed(worse) == ["recovery_baseline"]
    assert "does better" in worse.gate("recovery_baseline").why
    # still needs the significant win over the champion
    tie = evaluate_gates(baseline_cfg, world.inputs(champion, champion, baseline_scores=champion))
    assert "non_regression" in _failed(tie)
    # the baseline is the challenger itself (the simplest candidate won): passes trivially
    same = evaluate_gates(baseline_cfg, world.inputs(challenger, champion, baseline_scores=challenger))
    assert same.promote


def test_recovery_without_baseline_scores_falls_back_to_floors(baseline_cfg: Config, world: World) -> None:
    champion, challenger = world.model(2.0, 2), world.model(0.9, 1)
    d = evaluate_gates(baseline_cfg, world.inputs(challenger, champion))  # an older challenger: no baseline
    assert d.recovery is not None and d.recovery["relative_to"] == "floors" and "no baseline scores" in d.recovery["why"]
    assert d.gate("floor_pr_auc").verdict in ("pass", "fail") and "recovery_baseline" not in [g.name for g in d.gates]
    # a healthy champion: the baseline plays no part
    healthy = evaluate_gates(baseline_cfg, world.inputs(challenger, world.model(0.6, 2), baseline_scores=challenger))
    assert healthy.policy == "champion_challenger" and "recovery_baseline" not in [g.name for g in healthy.gates]


def test_recovery_baseline_config(cfg: Config) -> None:
    from training.config import ConfigError, parse_config

    data = cfg.model_dump(mode="json")
    data["gates"]["recovery"] = {"enabled": True, "relative_to": "baseline"}  # floors optional (a fallback)
    ok = parse_config(data)
    assert ok.gates.recovery.needs_baseline and ok.gates.recovery.baseline_family == "logistic_regression"
    data["gates"]["recovery"] = {"enabled": True, "relative_to": "floors"}
    with pytest.raises(ConfigError, match="relative_to: baseline"):
        parse_config(data)
    with pytest.raises(ConfigError, match="baseline_family"):
        with_overrides(cfg, gates={"recovery": {"baseline_family": "random_forest"}})
