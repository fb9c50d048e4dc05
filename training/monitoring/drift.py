"""Data drift, prediction drift and matured performance of one monitoring window.

This is the only module that imports Evidently (pinned 0.7.23; its API has changed in every minor
release). Everything Evidently-specific stays behind three functions returning plain dataclasses:

* `data_drift(reference, current, cfg)` - one Evidently `Report` with a `ValueDrift` per model
  feature, method and threshold per feature from `cfg.drift` (Wasserstein distance normed by the
  reference standard deviation for numeric features, Jensen-Shannon distance for categorical ones;
  `feature_overrides` change either). The drifted share counts the monitored features only; a
  feature with `expected_drift` (warm-up, seasonal) and no threshold is measured but not counted;
  a `critical` feature's drift alone is a breach (windows.evaluate_window).
* `prediction_drift(reference_scores, current_scores, cfg)` - Wasserstein distance of the score
  distributions, normed by the reference scores' standard deviation. Chosen over PSI because
  Evidently's PSI bins on equal-width ranges of the combined data: scores of a rare positive class pile up near 0, so
  almost all rows land in one bin and the PSI barely reacts to a shift among the low scores. The
  normed Wasserstein distance reads as "the scores moved by this many reference standard
  deviations", needs no binning and its sampling noise shrinks like 1/sqrt(rows).
* `matured_performance(y_true, scores, cfg)` - `training.model.metrics.compute_metrics` on the rows whose
  labels matured, plus a one-sided bootstrap upper bound of the primary metric, because a window
  holds a few dozen positives and its PR-AUC alone is too noisy to act on.

Direction of a drift score: distance methods (wasserstein, jensenshannon, psi, kl_div, hellinger,
ed) drift when score >= threshold; p-value methods (ks, chisquare, z, ...) drift when p < threshold.
The verdict is read from Evidently's own per-column test (it knows each method's direction); the
direction table below is the fallback and is checked against Evidently in the tests.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.config import Config
from training.errors import ClosedloopError
from training.model.metrics import compute_metrics, paired_bootstrap_diff
from training.paths import StatePaths

#: Column name used for the model score inside the Evidently datasets.
SCORE_COLUMN = "__score__"

#: Methods whose score is a p-value: small means drift.
P_VALUE_METHODS: frozenset[str] = frozenset(
    {
        "ks",
        "chisquare",
        "z",
        "anderson",
        "cramer_von_mises",
        "es",
        "fisher_exact",
        "g_test",
        "mannw",
        "empirical_mmd",
        "t_test",
        "TVD",
    }
)
#: Methods whose score is a distance/divergence: large means drift.
DISTANCE_METHODS: frozenset[str] = frozenset(
    {"wasserstein", "jensenshannon", "psi", "kl_div", "hellinger", "ed"}
)


class DriftError(ClosedloopError, ValueError):
    """Base class: drift cannot be computed; the message says what to fix."""


class DriftConfigError(DriftError):
    """A drift method or threshold in `cfg.drift` does not fit the feature it is set for."""


class DriftInputError(DriftError):
    """The reference or current frame lacks columns or values the drift computation needs."""


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one column: `score` compared with `threshold` in the method's direction."""

    feature: str
    method: str
    score: float
    threshold: float
    drifted: bool
    # False for a feature whose drift is expected (config `expected_drift` without a threshold):
    # measured and shown, not counted in the drifted share. `expected` says which kind and why.
    counted: bool = True
    expected: str | None = None
    critical: bool = False  # its drift alone breaches the data-drift signal (config `critical`)

    @property
    def higher_is_drift(self) -> bool:
        return self.method not in P_VALUE_METHODS

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "higher_is_drift": self.higher_is_drift}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureDrift:
        score = data.get("score")
        return cls(
            feature=str(data["feature"]),
            method=str(data["method"]),
            score=math.nan if score is None else float(score),
            threshold=float(data["threshold"]),
            drifted=bool(data["drifted"]),
            counted=bool(data.get("counted", True)),
            expected=data.get("expected"),
            critical=bool(data.get("critical", False)),
        )


@dataclass
class DataDriftResult:
    """Per-feature drift of one window against the reference, and the Evidently snapshot."""

    features: list[FeatureDrift]
    reference_rows: int
    current_rows: int
    prediction: FeatureDrift | None = None
    excluded_features: list[str] = field(default_factory=list)
    snapshot: Any = field(default=None, repr=False)  # evidently Snapshot (kept opaque on purpose)

    @property
    def n_drifted(self) -> int:
        return sum(f.drifted for f in self.features if f.counted)

    @property
    def drifted_share(self) -> float:
        """Drifted share of the counted features (expected-drift features are left out of both sides)."""
        counted = sum(f.counted for f in self.features)
        return self.n_drifted / counted if counted else 0.0

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted and f.counted]

    @property
    def critical_drifts(self) -> list[str]:
        """Critical features that drifted: each one alone is a data-drift breach."""
        return [f.feature for f in self.features if f.drifted and f.critical]

    @property
    def expected_drifts(self) -> list[FeatureDrift]:
        """Features that drifted as the config expects them to (not counted)."""
        return [f for f in self.features if f.drifted and not f.counted]

    def html(self) -> str:
        """The Evidently report as a standalone HTML page."""
        if self.snapshot is None:
            raise DriftError("this result has no Evidently snapshot to render")
        return str(self.snapshot.get_html_str(as_iframe=False))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no snapshot): what the monitoring table stores."""
        return {
            "features": [f.to_dict() for f in self.features],
            "drifted_share": self.drifted_share,
            "n_drifted": self.n_drifted,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "excluded_features": list(self.excluded_features),
        }


@dataclass(frozen=True)
class _Plan:
    feature: str
    kind: str  # "num" | "cat"
    method: str
    threshold: float
    counted: bool = True
    expected: str | None = None  # "<kind>: <reason>" from the config's expected_drift
    critical: bool = False


# --------------------------------------------------------------------------------------------
# plan: which method and threshold for which feature
# --------------------------------------------------------------------------------------------


def monitored_features(cfg: Config) -> list[str]:
    """The model features that count towards the drifted share (config order, exclusions removed)."""
    excluded = set(cfg.drift.exclude_features)
    unknown = excluded - set(cfg.model.features)
    if unknown:
        raise DriftConfigError(
            f"drift.exclude_features names unknown features {sorted(unknown)}; "
            f"choose among model features {cfg.model.features}"
        )
    return [f for f in cfg.model.features if f not in excluded]


def _check_method(method: str, kind: str, feature: str) -> float:
    """Validate `method` for the column kind; return Evidently's default threshold for it."""
    from evidently.legacy.calculations.stattests.registry import (
        StatTestInvalidFeatureTypeError,
        StatTestNotFoundError,
        get_registered_stattest,
    )
    from evidently.legacy.core import ColumnType

    column_type = ColumnType.Numerical if kind == "num" else ColumnType.Categorical
    try:
        stat_test = get_registered_stattest(method, column_type)
    except StatTestNotFoundError:
        raise DriftConfigError(
            f"drift method {method!r} for feature {feature!r} is not an Evidently drift method; "
            f"use one of {sorted(DISTANCE_METHODS | P_VALUE_METHODS)}"
        ) from None
    except StatTestInvalidFeatureTypeError:
        raise DriftConfigError(
            f"drift method {method!r} does not apply to {'numeric' if kind == 'num' else 'categorical'} "
            f"feature {feature!r}; set drift.feature_overrides.{feature}.method to one that does "
            "(e.g. wasserstein for numeric, jensenshannon for categorical)"
        ) from None
    if method not in DISTANCE_METHODS | P_VALUE_METHODS:
        raise DriftConfigError(
            f"drift method {method!r} (feature {feature!r}) has no known direction here; "
            f"add it to P_VALUE_METHODS or DISTANCE_METHODS in training/monitoring/drift.py"
        )
    return float(stat_test.default_threshold)


def _plan(cfg: Config) -> list[_Plan]:
    d = cfg.drift
    plans = []
    numeric = set(cfg.model.numeric_features)
    for feature in monitored_features(cfg):
        kind = "num" if feature in numeric else "cat"
        override = d.feature_overrides.get(feature)
        default_method = d.default_numeric_method if kind == "num" else d.default_categorical_method
        method = (override.method if override and override.method else None) or default_method
        method_default = _check_method(method, kind, feature)
        if override and override.threshold is not None:
            threshold = float(override.threshold)
        elif method in DISTANCE_METHODS:
            threshold = float(d.default_threshold)
        else:  # a p-value method without its own threshold: Evidently's default (e.g. 0.05 for ks)
            threshold = method_default
        if method in P_VALUE_METHODS and not 0 < threshold < 1:
            raise DriftConfigError(
                f"feature {feature!r}: {method!r} returns a p-value, so its threshold must be in (0, 1), "
                f"got {threshold}"
            )
        expected = counted = None
        if override and override.expected_drift:
            expected = f"{override.expected_drift}: {override.reason}"
            counted = override.threshold is not None  # relaxed threshold: counted; none: ignored
        critical = bool(override and override.critical)
        plans.append(_Plan(feature, kind, method, threshold, counted is not False, expected, critical))
    return plans


def _is_drift(method: str, score: float, threshold: float) -> bool:
    if math.isnan(score):
        return False
    return score < threshold if method in P_VALUE_METHODS else score >= threshold


# --------------------------------------------------------------------------------------------
# frames
# --------------------------------------------------------------------------------------------


def _prepare(frame: pd.DataFrame, plans: list[_Plan], role: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise DriftInputError(f"{role} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [p.feature for p in plans if p.feature not in frame.columns]
    if missing:
        raise DriftInputError(
            f"{role} frame lacks feature columns {missing}: pass the model features listed in "
            "cfg.model.numeric_features / categorical_features"
        )
    if frame.empty:
        raise DriftInputError(f"{role} frame has no rows: nothing to compare")
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for p in plans:
        col = frame[p.feature].reset_index(drop=True)
        if p.kind == "num":
            try:
                values = pd.to_numeric(col.astype("float64") if col.dtype == bool else col, errors="raise")
            except (TypeError, ValueError):
                raise DriftInputError(
                    f"{role}: numeric feature {p.feature!r} holds non-numeric values"
                ) from None
            out[p.feature] = values.astype("float64").replace([np.inf, -np.inf], np.nan)
        else:
            out[p.feature] = (
                col.astype("object").where(col.notna(), None).map(lambda v: None if v is None else str(v))
            )
        if out[p.feature].notna().sum() == 0:
            raise DriftInputError(
                f"{role}: feature {p.feature!r} has no non-null values; a drift test needs at least one "
                "(check the feature pipeline or exclude the feature via drift.exclude_features)"
            )
    return out


def _with_scores(frame: pd.DataFrame, scores: Any, role: str) -> pd.DataFrame:
    """Add the score column; pad with null rows when its length differs from the features'.

    Evidently computes each column's drift on that column's non-null values only, so padding is
    exact: features and scores need not come from the same rows (e.g. reference features from the
    training set, reference scores from the holdout).
    """
    s = _as_score_array(scores, role)
    if len(s) == len(frame):
        out = frame.copy()
        out[SCORE_COLUMN] = s
        return out
    pad = pd.DataFrame({SCORE_COLUMN: s})
    return pd.concat([frame.assign(**{SCORE_COLUMN: np.nan}), pad], ignore_index=True)


def _as_score_array(scores: Any, role: str) -> np.ndarray:
    try:
        s = np.asarray(scores, dtype="float64").ravel()
    except (TypeError, ValueError):
        raise DriftInputError(f"{role} scores must be numeric") from None
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise DriftInputError(f"{role} scores are empty (or all NaN): nothing to compare")
    return s


# --------------------------------------------------------------------------------------------
# Evidently
# --------------------------------------------------------------------------------------------


def _run_report(
    reference: pd.DataFrame, current: pd.DataFrame, plans: list[_Plan], tags: list[str] | None = None
) -> tuple[Any, dict[str, FeatureDrift]]:
    """One Evidently report with a ValueDrift per plan; returns (snapshot, column -> FeatureDrift)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(
        numerical_columns=[p.feature for p in plans if p.kind == "num"],
        categorical_columns=[p.feature for p in plans if p.kind == "cat"],
    )
    report = Report(
        [ValueDrift(column=p.feature, method=p.method, threshold=p.threshold) for p in plans],
        include_tests=True,
        tags=tags or [],
    )
    snapshot = report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    return snapshot, _parse_snapshot(snapshot, plans)


def _run_unrendered(
    reference: pd.DataFrame, current: pd.DataFrame, plans: list[_Plan]
) -> dict[str, FeatureDrift]:
    """What `_run_report` measures, without Evidently's plots (80 % of its time): no HTML.

    Calls the function Evidently's `ValueDrift` metric calls (`get_one_column_drift`, same
    arguments as evidently/metrics/column_statistics.py in 0.7.23), so scores and verdicts are
    the same; `tests/training/monitoring/test_drift.py` checks that they are.
    """
    from evidently.legacy.calculations.data_drift import get_one_column_drift
    from evidently.legacy.core import ColumnType
    from evidently.legacy.metric_results import DatasetColumns, DatasetUtilityColumns
    from evidently.legacy.options.data_drift import DataDriftOptions

    out: dict[str, FeatureDrift] = {}
    for p in plans:
        column_type = ColumnType.Numerical if p.kind == "num" else ColumnType.Categorical
        options = DataDriftOptions(all_features_stattest=p.method, all_features_threshold=p.threshold)
        cols = DatasetColumns(
            utility_columns=DatasetUtilityColumns(date=None, id=None, target=None, prediction=None),
            target_type=None,
            task=None,
            num_feature_names=[p.feature] if p.kind == "num" else [],
            cat_feature_names=[p.feature] if p.kind == "cat" else [],
            text_feature_names=[],
            datetime_feature_names=[],
            target_names=None,
        )
        res = get_one_column_drift(
            current_data=current[[p.feature]],
            reference_data=reference[[p.feature]],
            column_name=p.feature,
            options=options,
            dataset_columns=cols,
            column_type=column_type,
            agg_data=True,
        )
        out[p.feature] = FeatureDrift(
            p.feature,
            p.method,
            float(res.drift_score),
            p.threshold,
            bool(res.drift_detected),
            p.counted,
            p.expected,
            p.critical,
        )
    return out


def _parse_snapshot(snapshot: Any, plans: list[_Plan]) -> dict[str, FeatureDrift]:
    """Read scores and Evidently's per-column verdicts from `snapshot.dict()` (its stable export)."""
    exported = snapshot.dict()
    by_column: dict[str, tuple[str, float]] = {}
    for metric in exported.get("metrics", []):
        config = metric.get("config", {})
        if str(config.get("type", "")).endswith(":ValueDrift"):
            by_column[config["column"]] = (metric["id"], float(metric["value"]))
    verdicts: dict[str, bool] = {}
    for test in exported.get("tests", []):
        metric_id = test.get("metric_config", {}).get("metric_id")
        verdicts[metric_id] = str(test.get("status")).upper().endswith("FAIL")
    out: dict[str, FeatureDrift] = {}
    for p in plans:
        if p.feature not in by_column:
            raise DriftError(
                f"Evidently returned no ValueDrift result for {p.feature!r}; the installed Evidently "
                "is not the pinned 0.7.23 or its export format changed"
            )
        metric_id, score = by_column[p.feature]
        drifted = verdicts.get(metric_id)
        if drifted is None:  # no test exported: fall back to the direction table
            drifted = _is_drift(p.method, score, p.threshold)
        out[p.feature] = FeatureDrift(
            p.feature, p.method, score, p.threshold, bool(drifted), p.counted, p.expected, p.critical
        )
    return out


def _score_plan(cfg: Config) -> _Plan:
    return _Plan(SCORE_COLUMN, "num", "wasserstein", float(cfg.drift.prediction_drift_threshold))


def _rename_score(fd: FeatureDrift) -> FeatureDrift:
    return FeatureDrift("score", fd.method, fd.score, fd.threshold, fd.drifted)


def data_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: Config,
    *,
    reference_scores: Any = None,
    current_scores: Any = None,
    tags: list[str] | None = None,
    render: bool = True,
) -> DataDriftResult:
    """Per-feature drift of `current` against `reference`, one Evidently report.

    With both `reference_scores` and `current_scores` the prediction drift is computed in the same
    report (so the HTML shows it too) and returned as `result.prediction`; it does not count
    towards the drifted share of the features. `render=False` measures the same without Evidently's
    plots (no snapshot, no HTML; ~5x faster): for replays of many windows where nobody reads a report.
    """
    plans = _plan(cfg)
    ref = _prepare(reference, plans, "reference")
    cur = _prepare(current, plans, "current")
    run_plans = list(plans)
    with_scores = reference_scores is not None and current_scores is not None
    if with_scores:
        ref = _with_scores(ref, reference_scores, "reference")
        cur = _with_scores(cur, current_scores, "current")
        run_plans.append(_score_plan(cfg))
    if render:
        snapshot, results = _run_report(ref, cur, run_plans, tags)
    else:
        snapshot, results = None, _run_unrendered(ref, cur, run_plans)
    return DataDriftResult(
        features=[results[p.feature] for p in plans],
        reference_rows=len(reference),
        current_rows=len(current),
        prediction=_rename_score(results[SCORE_COLUMN]) if with_scores else None,
        excluded_features=list(cfg.drift.exclude_features),
        snapshot=snapshot,
    )


def prediction_drift(reference_scores: Any, current_scores: Any, cfg: Config) -> FeatureDrift:
    """Normed Wasserstein distance between the score distributions (see module docstring)."""
    plan = _score_plan(cfg)
    ref = pd.DataFrame({SCORE_COLUMN: _as_score_array(reference_scores, "reference")})
    cur = pd.DataFrame({SCORE_COLUMN: _as_score_array(current_scores, "current")})
    _, results = _run_report(ref, cur, [plan])
    return _rename_score(results[SCORE_COLUMN])


# --------------------------------------------------------------------------------------------
# matured performance
# --------------------------------------------------------------------------------------------


def matured_performance(y_true: Any, scores: Any, cfg: Config, *, seed: int = 0) -> dict[str, float]:
    """Metrics on matured labels, plus `<primary>_upper`: a one-sided bootstrap upper bound.

    The bound (level `cfg.drift.performance_confidence`) is what the performance signal compares
    with the floor: a window breaches only when even the optimistic end of its metric is below the
    tolerated level, so a window that is merely unlucky in its few dozen positives does not.
    Implemented with `metrics.paired_bootstrap_diff` against a constant (no-skill) scorer: its
    resampling is class-stratified, so the no-skill PR-AUC (the prevalence) and ROC AUC (0.5) are
    the same in every replicate and the interval of the difference is the interval of the metric
    shifted by that constant.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype="float64")
    out = dict(compute_metrics(y, s, cfg.model))
    n_pos = int(np.sum(y == 1))
    out["n_rows"] = float(y.size)
    out["n_positives"] = float(n_pos)
    primary = cfg.model.primary_metric
    upper = math.nan
    if 0 < n_pos < y.size:
        level = float(cfg.drift.performance_confidence)
        boot = paired_bootstrap_diff(
            y,
            s,
            np.zeros_like(s),
            metric=primary,
            n_bootstrap=int(cfg.drift.performance_bootstrap),
            confidence=2 * level - 1,  # two-sided interval whose upper end is the one-sided bound
            seed=seed,
        )
        baseline = n_pos / y.size if primary == "pr_auc" else 0.5
        upper = boot.upper + baseline
    out[f"{primary}_upper"] = upper
    return out


# --------------------------------------------------------------------------------------------
# report files
# --------------------------------------------------------------------------------------------


def report_path(paths: StatePaths, champion_version: str, window_start: Any, window_end: Any) -> Path:
    """Where the HTML report of one window goes: reports/drift/<champion>/<start>_<end>.html."""
    safe_version = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(champion_version))
    return paths.reports / "drift" / f"v{safe_version}" / f"{window_start}_{window_end}.html"


def save_report(snapshot: Any, path: str | Path) -> Path:
    """Write the Evidently snapshot as standalone HTML (atomically: a reader never sees half a file)."""
    if snapshot is None:
        raise DriftError("no Evidently snapshot to save (the window had too few rows to compute drift)")
    if isinstance(snapshot, DataDriftResult):
        snapshot = snapshot.snapshot
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(snapshot.get_html_str(as_iframe=False), encoding="utf-8")
    tmp.replace(target)
    return target
