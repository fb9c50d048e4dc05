"""Champion/challenger promotion gates: the policy and its evaluation (reports: `training.model.reports`).

A challenger replaces the champion only when every evaluated gate passes, in this order:

1. floors       - each metric in `cfg.gates.floors` reaches its absolute floor (for metrics where
                  lower is better, `log_loss` and `brier`, the floor is a ceiling);
2. non_regression - paired bootstrap CI of (challenger - champion) on `cfg.gates.non_regression.metric`;
                  passes only when the LOWER bound is above the margin, so a tie keeps the champion;
3. slices       - per slice value with enough rows and positives, the primary metric must not drop
                  by more than `cfg.gates.slices.tolerance`; under-populated slices are skipped;
4. signature    - the input schema equals the champion's, unless an override reason is given;
5. calibration  - `cfg.gates.calibration`: ceilings on the challenger's ECE / Brier score (when set);
6. latency, model_size - budgets.

Recovery (`cfg.gates.recovery`): when the champion itself is below `gates.floors` on this holdout
(it has collapsed, e.g. after concept drift) and the policy is enabled, the absolute floors give way
to what is achievable: with `relative_to: baseline` (and baseline scores from training) the floors
are waived and the challenger must not be significantly worse than a simple baseline fitted on the
same days (`recovery_baseline`, paired bootstrap); with `relative_to: floors` (or no baseline scores)
it faces the lower `recovery.floors`. It must still beat the champion significantly (non_regression)
and pass every other gate - except that a slice regression against the collapsed champion is `waived`
(reported, not blocking) unless `recovery.slice_gate` is `enforce`. The policy is then `recovery`,
and the decision says so (`GateDecision.recovery`).

Without a champion the policy is `first_champion`: the comparison gates (2-4) are skipped and the
first challenger that passes floors and budgets is promoted. Everything here is pure: the caller
brings scores, signatures and measurements; nothing touches MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.config import Config
from training.errors import ClosedloopError
from training.model.metrics import (
    LOWER_IS_BETTER,
    METRIC_NAMES,
    BootstrapResult,
    MetricError,
    compute_metrics,
    paired_bootstrap_diff,
    rank_metric,
)

Verdict = Literal["pass", "fail", "skipped", "waived"]
POLICY_FIRST_CHAMPION = "first_champion"
POLICY_CHAMPION_CHALLENGER = "champion_challenger"
POLICY_RECOVERY = "recovery"
NO_CHAMPION_WHY = "no champion yet (explicit policy: first passing challenger is promoted)"
SLICE_COLUMNS: tuple[str, ...] = (
    "slice_column",
    "slice_value",
    "n_rows",
    "n_positives",
    "metric",
    "challenger",
    "champion",
    "diff",
    "evaluated",
    "status",
    "why",
)
_EPS = 1e-12


class GateInputError(ClosedloopError, ValueError):
    """The inputs handed to the gates are inconsistent; the message says which and how to fix it."""


class GateConfigError(ClosedloopError, ValueError):
    """`cfg.gates` names something the gates cannot evaluate (e.g. an unknown metric)."""


@dataclass(frozen=True)
class GateInputs:
    """Everything the gates need, measured by the caller on one frozen holdout.

    `holdout` holds the target and the slice columns; the score vectors are positionally aligned
    with its rows. Signatures are lists of `{"name": ..., "type": ...}` (MLflow input schema).
    `champion_scores is None` means there is no champion yet.
    """

    holdout: pd.DataFrame
    challenger_scores: Any
    champion_scores: Any | None
    challenger_signature: Sequence[Mapping[str, Any]]
    champion_signature: Sequence[Mapping[str, Any]] | None
    signature_override_reason: str | None
    latency_ms_per_1k_rows: float
    model_size_mb: float
    #: scores on the same holdout rows of a simple baseline fitted on the challenger's training days
    #: (`gates.recovery.relative_to: baseline`); None when training did not fit one
    baseline_scores: Any | None = None
    baseline_name: str = "baseline"


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float | str | None
    threshold: float | str | None
    verdict: Verdict
    why: str


@dataclass(frozen=True)
class GateDecision:
    """The outcome: `promote` is True when every gate that was not skipped passed.

    `metrics` is flat and log-ready (`challenger_pr_auc`, `champion_pr_auc`, `non_regression_lower`,
    ...); `slice_metrics` has one row per slice value (columns `SLICE_COLUMNS`).
    """

    promote: bool
    policy: str
    gates: list[GateResult]
    metrics: dict[str, float]
    slice_metrics: pd.DataFrame
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] | None = None
    bootstrap: BootstrapResult | None = None
    #: None without a champion; else whether it collapsed (below `gates.floors`) and which floors applied.
    recovery: dict[str, Any] | None = None

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if g.verdict == "fail"]

    def gate(self, name: str) -> GateResult:
        for g in self.gates:
            if g.name == name:
                return g
        raise KeyError(f"no gate named {name!r}; gates: {[g.name for g in self.gates]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for XCom, the audit log, MLflow artifacts); NaN becomes None."""
        return _json_safe(
            {
                "promote": self.promote,
                "policy": self.policy,
                "gates": [asdict(g) for g in self.gates],
                "metrics": self.metrics,
                "challenger_metrics": self.challenger_metrics,
                "champion_metrics": self.champion_metrics,
                "bootstrap": asdict(self.bootstrap) if self.bootstrap else None,
                "recovery": self.recovery,
                "slice_metrics": self.slice_metrics.to_dict(orient="records"),
            }
        )


def json_safe(obj: Any) -> Any:
    """`obj` with numpy scalars as Python values and NaN/inf as None (JSON for audit and XCom)."""
    return _json_safe(obj)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _labels(holdout: pd.DataFrame, target: str) -> npt.NDArray[np.float64]:
    if not isinstance(holdout, pd.DataFrame):
        raise GateInputError(f"holdout must be a pandas DataFrame, got {type(holdout).__name__}")
    if target not in holdout.columns:
        raise GateInputError(
            f"holdout has no target column {target!r} (columns: {list(holdout.columns)}); "
            "pass the labelled holdout, not the feature matrix"
        )
    if len(holdout) == 0:
        raise GateInputError("holdout is empty: the gates need a labelled holdout (check the holdout window)")
    try:
        y = holdout[target].to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        raise GateInputError(
            f"target column {target!r} must be 0/1, got dtype {holdout[target].dtype}"
        ) from None
    n_pos = int(np.nansum(y == 1))
    n_neg = int(np.nansum(y == 0))
    if n_pos == 0 or n_neg == 0:
        raise GateInputError(
            f"holdout has {n_pos} positives and {n_neg} negatives: ranking metrics are undefined. "
            "Widen the holdout window or wait for more labels to mature"
        )
    return y


def _scores(scores: Any, n: int, name: str) -> npt.NDArray[np.float64]:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size != n:
        raise GateInputError(
            f"{name} must be one score per holdout row ({n}), got shape {s.shape}; "
            "score the same holdout rows in the same order"
        )
    return s


def _signature_map(sig: Sequence[Mapping[str, Any]], who: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for col in sig:
        if not isinstance(col, Mapping) or "name" not in col or "type" not in col:
            raise GateInputError(f"{who} signature entries must be {{'name': ..., 'type': ...}}, got {col!r}")
        name = str(col["name"])
        if name in out:
            raise GateInputError(f"{who} signature lists column {name!r} twice")
        out[name] = str(col["type"])
    return out


def _budget(value: float, what: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise GateInputError(f"{what} must be a finite number >= 0, got {value!r} (measure it before gating)")
    return v


# --------------------------------------------------------------------------------------------
# the gates
# --------------------------------------------------------------------------------------------


def _floor_gates(
    cfg: Config, metrics: dict[str, float], floors: Mapping[str, float] | None = None, note: str = ""
) -> list[GateResult]:
    results = []
    for name, floor in (cfg.gates.floors if floors is None else floors).items():
        if name not in METRIC_NAMES:
            raise GateConfigError(f"gates.floors names unknown metric {name!r}; choose from {METRIC_NAMES}")
        value = metrics[name]
        lower_better = name in LOWER_IS_BETTER
        if math.isnan(value):
            verdict: Verdict = "fail"
            why = f"{name} is undefined on this holdout, so the floor cannot be shown to hold"
        elif lower_better:
            verdict = "pass" if value <= floor + _EPS else "fail"
            rel = "at or below" if verdict == "pass" else "above"
            why = f"{name} {value:.4f} is {rel} the ceiling {floor:.4f} (lower is better)"
        else:
            verdict = "pass" if value >= floor - _EPS else "fail"
            rel = "meets" if verdict == "pass" else "is below"
            why = f"{name} {value:.4f} {rel} the absolute floor {floor:.4f}"
        results.append(GateResult(f"floor_{name}", value, floor, verdict, why + note))
    return results


def _recovery(cfg: Config, cp_metrics: dict[str, float], baseline: str | None) -> dict[str, Any]:
    """Has the champion collapsed on this holdout, and what does the challenger face instead of floors?

    `baseline`: the name of the baseline whose holdout scores were given, or None.
    """
    below = [g.name[len("floor_") :] for g in _floor_gates(cfg, cp_metrics) if g.verdict == "fail"]
    policy = cfg.gates.recovery
    active = bool(below) and policy.enabled
    relative = "baseline" if policy.relative_to == "baseline" and baseline is not None else "floors"
    floors = {**cfg.gates.floors, **policy.floors} if active else dict(cfg.gates.floors)
    if not below:
        why = "the champion meets every floor on this holdout: normal floors apply"
    elif active and relative == "baseline":
        why = (
            f"the champion has collapsed (below the floor on {', '.join(below)}); recovery policy enabled: "
            f"a challenger that beats it significantly needs, instead of the absolute floors, to be no worse "
            f"than the {baseline} baseline trained on the same days (what is achievable on them)"
        )
    elif active:
        fallback = (
            " (relative_to: baseline, but this challenger has no baseline scores: the floors apply)"
            if policy.relative_to == "baseline"
            else ""
        )
        why = (
            f"the champion has collapsed (below the floor on {', '.join(below)}); recovery policy enabled: "
            f"a challenger that beats it significantly needs only the recovery floors {floors}{fallback}"
        )
    else:
        why = (
            f"the champion is below the floor on {', '.join(below)}, but the recovery policy is disabled "
            "(gates.recovery.enabled): the challenger must meet the normal floors"
        )
    return {
        "enabled": policy.enabled,
        "champion_collapsed": bool(below),
        "champion_below_floor": below,
        "active": active,
        "relative_to": relative if active else None,
        "baseline": baseline if active and relative == "baseline" else None,
        "normal_floors": dict(cfg.gates.floors),
        "recovery_floors": dict(policy.floors),
        "floors_applied": {} if active and relative == "baseline" else floors,
        "slice_gate": policy.slice_gate,
        "waived_gates": [],
        "why": why,
    }


def _baseline_gate(cfg: Config, boot: BootstrapResult, name: str) -> GateResult:
    """Recovery: the challenger must not be demonstrably worse than the baseline on the same days."""
    tol = cfg.gates.recovery.baseline_tolerance
    pct = f"{boot.confidence:.0%}"
    ci = (
        f"challenger − {name} baseline {boot.metric} = {boot.observed_diff:+.4f} "
        f"({pct} CI {boot.lower:+.4f} to {boot.upper:+.4f}, {boot.n} paired bootstrap replicates)"
    )
    if boot.upper >= -tol - _EPS:
        why = f"{ci}; not significantly worse than the baseline (upper bound >= {-tol:+.4f})"
        return GateResult("recovery_baseline", boot.upper, -tol, "pass", why)
    why = (
        f"{ci}; the upper bound is below {-tol:+.4f}: a {name} fitted on the same days does better, "
        "so this challenger is not what the new days allow"
    )
    return GateResult("recovery_baseline", boot.upper, -tol, "fail", why)


def _calibration_gates(cfg: Config, metrics: dict[str, float]) -> list[GateResult]:
    """Ceilings on calibration error: a model whose scores overstate risk misprices every decision."""
    results = []
    rule = cfg.gates.calibration
    for metric, ceiling in (("ece", rule.max_ece), ("brier", rule.max_brier)):
        if ceiling is None:
            continue
        value = metrics[metric]
        ok = math.isfinite(value) and value <= ceiling + _EPS
        results.append(
            GateResult(
                f"calibration_{metric}",
                value,
                ceiling,
                "pass" if ok else "fail",
                f"{metric} {value:.4f} is {'within' if ok else 'above'} the ceiling {ceiling:.4f}"
                + ("" if ok else "; recalibrate (model.calibration) or retrain on data like the holdout"),
            )
        )
    return results


def _non_regression_gate(cfg: Config, boot: BootstrapResult) -> GateResult:
    nr = cfg.gates.non_regression
    pct = f"{nr.confidence:.0%}"
    ci = (
        f"challenger − champion {boot.metric} = {boot.observed_diff:+.4f} "
        f"({pct} CI {boot.lower:+.4f} to {boot.upper:+.4f}, {boot.n} paired bootstrap replicates)"
    )
    if boot.lower > nr.margin:
        why = f"{ci}; the lower bound is above the margin {nr.margin:+.4f}: the improvement is demonstrated"
        return GateResult("non_regression", boot.lower, nr.margin, "pass", why)
    if boot.lower == boot.upper == 0.0:
        tie = "the two models rank the holdout identically; an equal model does not replace the champion"
    else:
        tie = (
            f"the lower bound is not above the margin {nr.margin:+.4f}, so the challenger is not "
            "demonstrably better; an equal or not-clearly-better model does not replace the champion"
        )
    return GateResult("non_regression", boot.lower, nr.margin, "fail", f"{ci}; {tie}")


def _slice_table(
    cfg: Config,
    holdout: pd.DataFrame,
    y: npt.NDArray[np.float64],
    challenger: npt.NDArray[np.float64],
    champion: npt.NDArray[np.float64] | None,
) -> pd.DataFrame:
    rule = cfg.gates.slices
    metric = cfg.model.primary_metric
    missing = [c for c in cfg.model.slice_columns if c not in holdout.columns]
    if missing:
        raise GateInputError(
            f"holdout lacks slice columns {missing} listed in model.slice_columns; "
            "select them into the holdout frame (or remove them from the config)"
        )
    rows: list[dict[str, Any]] = []
    for col in cfg.model.slice_columns:
        values = holdout[col].astype("object").where(holdout[col].notna(), "<null>").astype(str).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            n_rows = int(mask.sum())
            n_pos = int((y[mask] == 1).sum())
            n_neg = n_rows - n_pos
            row: dict[str, Any] = {
                "slice_column": col,
                "slice_value": value,
                "n_rows": n_rows,
                "n_positives": n_pos,
                "metric": metric,
                "challenger": math.nan,
                "champion": math.nan,
                "diff": math.nan,
                "evaluated": False,
            }
            if n_rows < rule.min_rows or n_pos < rule.min_positives or n_neg == 0:
                row["status"] = "skipped"
                row["why"] = (
                    f"under-populated: {n_rows} rows / {n_pos} positives / {n_neg} negatives "
                    f"(needs ≥ {rule.min_rows} rows and ≥ {rule.min_positives} positives and a negative)"
                )
                rows.append(row)
                continue
            row["challenger"] = rank_metric(y[mask], challenger[mask], metric)
            if champion is None:
                row["status"] = "skipped"
                row["why"] = "no champion to compare with; challenger value reported"
                rows.append(row)
                continue
            row["champion"] = rank_metric(y[mask], champion[mask], metric)
            row["diff"] = row["challenger"] - row["champion"]
            row["evaluated"] = True
            drop = -row["diff"]
            if drop > rule.tolerance + _EPS:
                row["status"] = "fail"
                row["why"] = (
                    f"{metric} drops by {drop:.4f} ({row['champion']:.4f} → {row['challenger']:.4f}), "
                    f"more than the tolerance {rule.tolerance:.4f}"
                )
            else:
                row["status"] = "pass"
                row["why"] = (
                    f"{metric} {row['champion']:.4f} → {row['challenger']:.4f} ({row['diff']:+.4f}), "
                    f"within the tolerance {rule.tolerance:.4f}"
                )
            rows.append(row)
    return pd.DataFrame(rows, columns=list(SLICE_COLUMNS))


def _slice_gate(cfg: Config, table: pd.DataFrame) -> GateResult:
    tol = cfg.gates.slices.tolerance
    if not cfg.model.slice_columns:
        return GateResult("slices", None, tol, "skipped", "no slice columns configured (model.slice_columns)")
    evaluated = table[table["evaluated"]]
    skipped = table[table["status"] == "skipped"]
    skipped_names = ", ".join(f"{r.slice_column}={r.slice_value}" for r in skipped.itertuples())
    skipped_note = f"; skipped as under-populated: {skipped_names}" if len(skipped) else ""
    if evaluated.empty:
        return GateResult(
            "slices",
            None,
            tol,
            "skipped",
            "no slice has enough rows and positives to compare "
            f"(≥ {cfg.gates.slices.min_rows} rows, ≥ {cfg.gates.slices.min_positives} positives){skipped_note}",
        )
    worst_drop = float((-evaluated["diff"]).max())
    failed = evaluated[evaluated["status"] == "fail"]
    metric = cfg.model.primary_metric
    if len(failed):
        names = "; ".join(f"{r.slice_column}={r.slice_value}: {r.why}" for r in failed.itertuples())
        why = f"{len(failed)} of {len(evaluated)} slices regress on {metric}: {names}{skipped_note}"
        return GateResult("slices", worst_drop, tol, "fail", why)
    why = (
        f"all {len(evaluated)} evaluated slices within the tolerance {tol:.4f} on {metric} "
        f"(largest drop {max(worst_drop, 0.0):.4f}){skipped_note}"
    )
    return GateResult("slices", worst_drop, tol, "pass", why)


def _signature_gate(inputs: GateInputs) -> GateResult:
    threshold = "identical to champion"
    new = _signature_map(inputs.challenger_signature, "challenger")
    override = (inputs.signature_override_reason or "").strip()
    if inputs.champion_signature is None:
        change = "the champion has no recorded input schema, so compatibility cannot be checked"
        value = "unknown"
    else:
        old = _signature_map(inputs.champion_signature, "champion")
        if new == old:
            return GateResult(
                "signature", "unchanged", threshold, "pass", f"input schema unchanged ({len(new)} columns)"
            )
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        retyped = sorted(c for c in set(new) & set(old) if new[c] != old[c])
        parts = []
        if added:
            parts.append(f"added {added}")
        if removed:
            parts.append(f"removed {removed}")
        if retyped:
            parts.append("type changed " + ", ".join(f"{c}: {old[c]} → {new[c]}" for c in retyped))
        change = "input schema changed: " + "; ".join(parts)
        value = f"changed (+{len(added)} −{len(removed)} ~{len(retyped)})"
    if override:
        return GateResult(
            "signature", value, threshold, "pass", f"{change}; accepted by override: {override}"
        )
    return GateResult(
        "signature",
        value,
        threshold,
        "fail",
        f"{change}; callers built for the champion's schema would break. "
        "Retrain with a signature_override_reason to accept the change deliberately",
    )


def _budget_gates(cfg: Config, inputs: GateInputs) -> list[GateResult]:
    latency = _budget(inputs.latency_ms_per_1k_rows, "latency_ms_per_1k_rows")
    size = _budget(inputs.model_size_mb, "model_size_mb")
    max_lat = cfg.gates.max_latency_ms_per_1k_rows
    max_size = cfg.gates.max_model_size_mb
    lat_ok = latency <= max_lat
    size_ok = size <= max_size
    return [
        GateResult(
            "latency",
            latency,
            max_lat,
            "pass" if lat_ok else "fail",
            f"{latency:.1f} ms per 1k rows is {'within' if lat_ok else 'over'} the budget of {max_lat:.1f} ms",
        ),
        GateResult(
            "model_size",
            size,
            max_size,
            "pass" if size_ok else "fail",
            f"{size:.2f} MB is {'within' if size_ok else 'over'} the budget of {max_size:.2f} MB",
        ),
    ]


def evaluate_gates(cfg: Config, inputs: GateInputs, *, seed: int | None = None) -> GateDecision:
    """Run every gate in order on one holdout and decide whether the challenger is promoted.

    `seed` (default `cfg.training.seed`) fixes the bootstrap, so the decision is reproducible.
    Raises `GateInputError` for inputs that cannot be judged (no target, one class, misaligned
    scores, missing slice columns) rather than failing a gate for a reason unrelated to the model.
    """
    target = cfg.model.target
    y = _labels(inputs.holdout, target)
    n = y.size
    challenger = _scores(inputs.challenger_scores, n, "challenger_scores")
    champion = (
        None if inputs.champion_scores is None else _scores(inputs.champion_scores, n, "champion_scores")
    )
    try:
        ch_metrics = compute_metrics(y, challenger, cfg.model)
        cp_metrics = None if champion is None else compute_metrics(y, champion, cfg.model)
    except MetricError as exc:
        raise GateInputError(f"cannot evaluate the holdout: {exc}") from None

    baseline = (
        None if inputs.baseline_scores is None else _scores(inputs.baseline_scores, n, "baseline_scores")
    )
    recovery = (
        None
        if cp_metrics is None
        else _recovery(cfg, cp_metrics, inputs.baseline_name if baseline is not None else None)
    )
    if recovery is not None and recovery["relative_to"] == "baseline":
        gates: list[GateResult] = [
            GateResult(
                g.name, g.value, g.threshold, "waived",
                f"{g.why} - waived under the recovery policy (relative_to: baseline): the champion has "
                "collapsed, and the bar is the baseline trained on the same days (gate recovery_baseline)",
            )
            for g in _floor_gates(cfg, ch_metrics)
        ]
    elif recovery is not None and recovery["active"]:
        gates = _floor_gates(
            cfg, ch_metrics, recovery["floors_applied"], " (recovery floor: the champion has collapsed)"
        )
    else:
        gates = _floor_gates(cfg, ch_metrics)
    flat: dict[str, float] = {f"challenger_{k}": v for k, v in ch_metrics.items()}
    table = _slice_table(cfg, inputs.holdout, y, challenger, champion)
    boot: BootstrapResult | None = None

    if champion is None or cp_metrics is None:
        policy = POLICY_FIRST_CHAMPION
        for name in ("non_regression", "slices", "signature"):
            gates.append(GateResult(name, None, None, "skipped", NO_CHAMPION_WHY))
        _signature_map(inputs.challenger_signature, "challenger")  # still reject malformed input
    else:
        policy = POLICY_RECOVERY if recovery is not None and recovery["active"] else POLICY_CHAMPION_CHALLENGER
        flat.update({f"champion_{k}": v for k, v in cp_metrics.items()})
        nr = cfg.gates.non_regression
        boot = paired_bootstrap_diff(
            y,
            challenger,
            champion,
            metric=nr.metric,
            n_bootstrap=nr.n_bootstrap,
            confidence=nr.confidence,
            seed=cfg.training.seed if seed is None else seed,
        )
        flat.update(
            {
                "non_regression_observed_diff": boot.observed_diff,
                "non_regression_mean_diff": boot.mean_diff,
                "non_regression_lower": boot.lower,
                "non_regression_upper": boot.upper,
            }
        )
        gates.append(_non_regression_gate(cfg, boot))
        if recovery is not None and recovery["relative_to"] == "baseline" and baseline is not None:
            base_boot = paired_bootstrap_diff(
                y,
                challenger,
                baseline,
                metric=nr.metric,
                n_bootstrap=nr.n_bootstrap,
                confidence=nr.confidence,
                seed=cfg.training.seed if seed is None else seed,
            )
            flat.update(
                {
                    f"baseline_{nr.metric}": float(compute_metrics(y, baseline, cfg.model)[nr.metric]),
                    "recovery_baseline_observed_diff": base_boot.observed_diff,
                    "recovery_baseline_lower": base_boot.lower,
                    "recovery_baseline_upper": base_boot.upper,
                }
            )
            gates.append(_baseline_gate(cfg, base_boot, inputs.baseline_name))
            recovery["waived_gates"] = [g.name for g in gates if g.verdict == "waived"]
        slice_result = _slice_gate(cfg, table)
        if (
            slice_result.verdict == "fail"
            and recovery is not None
            and recovery["active"]
            and cfg.gates.recovery.slice_gate == "report"
        ):
            slice_result = GateResult(
                slice_result.name,
                slice_result.value,
                slice_result.threshold,
                "waived",
                f"{slice_result.why} - waived under the recovery policy (gates.recovery.slice_gate: report): "
                "the champion has collapsed overall, so a slice it still ranks better does not keep it",
            )
            recovery["waived_gates"] = [*recovery["waived_gates"], "slices"]
        gates.append(slice_result)
        gates.append(_signature_gate(inputs))
    gates.extend(_calibration_gates(cfg, ch_metrics))
    gates.extend(_budget_gates(cfg, inputs))
    flat["latency_ms_per_1k_rows"] = float(inputs.latency_ms_per_1k_rows)
    flat["model_size_mb"] = float(inputs.model_size_mb)

    promote = all(g.verdict == "pass" for g in gates if g.verdict not in ("skipped", "waived"))
    return GateDecision(
        promote=promote,
        policy=policy,
        gates=gates,
        metrics=flat,
        slice_metrics=table,
        challenger_metrics=ch_metrics,
        champion_metrics=cp_metrics,
        bootstrap=boot,
        recovery=recovery,
    )
