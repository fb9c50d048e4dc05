"""Evaluation metrics for a binary scorer, and a paired bootstrap for comparing two scorers.

Why our own implementation of average precision and ROC AUC: the paired bootstrap resamples the
same holdout hundreds of times. Written as weighted cumulative sums over a sort order computed
once, every replicate is a few vector operations instead of a re-sort inside sklearn. The
full-sample values equal sklearn's `average_precision_score` / `roc_auc_score` (tested).

Rules for awkward inputs (documented, never a crash deep inside a library):

* empty input, length mismatch, labels other than 0/1, non-finite scores -> `MetricError`;
* scores outside [0, 1] -> `MetricError` (log loss and Brier score need probabilities);
* a single class present -> the ranking metrics (`pr_auc`, `roc_auc`, `recall_at_precision`) are
  NaN because they are undefined; `precision_at_k`, `log_loss` and `brier` are still computed;
* `precision_at_k` with k > n rows uses k = n; ties at the k-th score count each tied row with
  the share of positives among the tie (the expected value under random tie-breaking), so the
  result does not depend on row order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

METRIC_NAMES: tuple[str, ...] = (
    "pr_auc",
    "roc_auc",
    "recall_at_precision",
    "precision_at_k",
    "log_loss",
    "brier",
)
#: Metrics where a smaller value is better (a "floor" on them is a ceiling).
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "brier"})
#: Metrics the paired bootstrap can compare.
BOOTSTRAP_METRICS: tuple[str, ...] = ("pr_auc", "roc_auc")
#: Probabilities are clipped to [EPS, 1 - EPS] before the log loss so a confident miss is finite.
LOG_LOSS_EPS = 1e-15

BootstrapMetric = Literal["pr_auc", "roc_auc"]


class MetricError(ValueError):
    """The labels or scores cannot be evaluated; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of `metric(a) - metric(b)` on the same resampled rows.

    `mean_diff` is the mean over replicates, `lower`/`upper` the percentile interval at
    `confidence`, `n` the number of replicates, `observed_diff` the difference on the full sample.
    """

    mean_diff: float
    lower: float
    upper: float
    n: int
    observed_diff: float = math.nan
    metric: str = "pr_auc"
    confidence: float = 0.95
    n_rows: int = 0
    n_positives: int = 0


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------


def _as_labels(y_true: Any) -> npt.NDArray[np.int8]:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise MetricError(f"y_true must be one-dimensional, got shape {y.shape}")
    if y.size == 0:
        raise MetricError("y_true is empty: there is nothing to evaluate (check the holdout window)")
    if y.dtype == bool:
        return y.astype(np.int8)
    try:
        yf = y.astype(np.float64)
    except (TypeError, ValueError):
        raise MetricError(f"y_true must be 0/1 labels, got dtype {y.dtype}") from None
    bad = ~np.isin(yf, (0.0, 1.0))
    if bad.any():
        examples = np.unique(y[bad])[:5].tolist()
        raise MetricError(
            f"y_true must hold only 0/1 labels; found {int(bad.sum())} other values, e.g. {examples} "
            "(nulls mean an unlabelled row: drop immature labels before evaluating)"
        )
    return yf.astype(np.int8)


def _as_scores(scores: Any, n: int, name: str = "scores") -> npt.NDArray[np.float64]:
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise MetricError(f"{name} must be numeric probabilities") from None
    if s.ndim != 1:
        raise MetricError(
            f"{name} must be one-dimensional, got shape {s.shape} "
            "(for predict_proba output pass the positive-class column [:, 1])"
        )
    if s.size != n:
        raise MetricError(f"{name} has {s.size} values but y_true has {n}: they must be row-aligned")
    if not np.isfinite(s).all():
        raise MetricError(f"{name} contains {int((~np.isfinite(s)).sum())} NaN/inf values")
    return s


def _check_probabilities(s: npt.NDArray[np.float64], name: str = "scores") -> None:
    if s.min() < 0.0 or s.max() > 1.0:
        raise MetricError(
            f"{name} must be probabilities in [0, 1] (got min {s.min():.4g}, max {s.max():.4g}); "
            "pass predict_proba(X)[:, 1], not a decision function"
        )


# --------------------------------------------------------------------------------------------
# ranking structure shared by the full-sample metrics and the bootstrap
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ranking:
    """Rows sorted by score (descending) and where each group of tied scores ends."""

    order: npt.NDArray[np.intp]
    group_ends: npt.NDArray[np.intp]  # index (in sorted order) of the last row of each tie group


def _ranking(scores: npt.NDArray[np.float64]) -> _Ranking:
    order = np.argsort(-scores, kind="mergesort")
    s_sorted = scores[order]
    ends = np.flatnonzero(np.diff(s_sorted)).astype(np.intp)
    group_ends = np.concatenate([ends, np.array([s_sorted.size - 1], dtype=np.intp)])
    return _Ranking(order=order, group_ends=group_ends)


def _weighted_rank_metrics(
    ranking: _Ranking, y: npt.NDArray[np.int8], weights: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Average precision and ROC AUC for each row of `weights` (shape (B, n), row multiplicities).

    With integer weights this is exactly the metric of the resample that repeats row i w_i times:
    tie groups and the sort order do not change under resampling, only the counts do.
    """
    ys = y[ranking.order].astype(np.float64)
    w = weights[:, ranking.order]
    tp = np.cumsum(w * ys, axis=1)[:, ranking.group_ends]
    fp = np.cumsum(w * (1.0 - ys), axis=1)[:, ranking.group_ends]
    p_total = tp[:, -1:]
    n_total = fp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        # average precision: sum over thresholds of (recall step) * precision at that threshold
        tp_prev = np.concatenate([np.zeros_like(tp[:, :1]), tp[:, :-1]], axis=1)
        d_tp = tp - tp_prev
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
        ap = (d_tp * precision).sum(axis=1) / p_total[:, 0]
        # ROC AUC: each negative scores above the positives ranked strictly below it, half for ties
        fp_prev = np.concatenate([np.zeros_like(fp[:, :1]), fp[:, :-1]], axis=1)
        d_fp = fp - fp_prev
        auc = (d_fp * (tp_prev + 0.5 * d_tp)).sum(axis=1) / (p_total[:, 0] * n_total[:, 0])
    return ap, auc


# --------------------------------------------------------------------------------------------
# full-sample metrics
# --------------------------------------------------------------------------------------------


def average_precision(y_true: Any, scores: Any) -> float:
    """Average precision (area under the step PR curve, as sklearn); NaN without positives."""
    y = _as_labels(y_true)
    s = _as_scores(scores, y.size)
    if y.sum() == 0 or y.sum() == y.size:
        return math.nan
    ap, _ = _weighted_rank_metrics(_ranking(s), y, np.ones((1, y.size)))
    return float(ap[0])


def roc_auc(y_true: Any, scores: Any) -> float:
    """ROC AUC (probability a positive outranks a negative, ties count half); NaN for one class."""
    y = _as_labels(y_true)
    s = _as_scores(scores, y.size)
    if y.sum() == 0 or y.sum() == y.size:
        return math.nan
    _, auc = _weighted_rank_metrics(_ranking(s), y, np.ones((1, y.size)))
    return float(auc[0])


def recall_at_precision(y_true: Any, scores: Any, min_precision: float) -> float:
    """Largest recall among score thresholds whose precision is >= `min_precision`.

    0.0 when no threshold reaches that precision; NaN when there are no positives or no negatives.
    """
    if not 0.0 < min_precision <= 1.0:
        raise MetricError(f"min_precision must be in (0, 1], got {min_precision}")
    y = _as_labels(y_true)
    s = _as_scores(scores, y.size)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return math.nan
    r = _ranking(s)
    ys = y[r.order]
    tp = np.cumsum(ys)[r.group_ends]
    predicted = r.group_ends + 1
    ok = tp / predicted >= min_precision - 1e-12
    return float(tp[ok].max() / n_pos) if ok.any() else 0.0


def precision_at_k(y_true: Any, scores: Any, k: int) -> float:
    """Share of positives among the k highest scores (k capped at n; ties shared, see module doc)."""
    if k < 1:
        raise MetricError(f"k must be >= 1, got {k}")
    y = _as_labels(y_true)
    s = _as_scores(scores, y.size)
    k = min(k, y.size)
    kth = np.partition(s, y.size - k)[y.size - k]  # k-th largest score
    above = s > kth
    tied = s == kth
    n_above = int(above.sum())
    tp_above = float(y[above].sum())
    tp_tied_share = float(y[tied].mean())
    return (tp_above + (k - n_above) * tp_tied_share) / k


def log_loss(y_true: Any, scores: Any, eps: float = LOG_LOSS_EPS) -> float:
    """Mean negative log-likelihood with probabilities clipped to [eps, 1 - eps]."""
    y = _as_labels(y_true)
    s = _as_scores(scores, y.size)
    _check_probabilities(s)
    p = np.clip(s, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def brier(y_true: Any, scores: Any) -> float:
    """Mean squared error of the probabilities."""
    y = _as_labels(y_true)
    s = _as_scores(scores, y.size)
    _check_probabilities(s)
    return float(np.mean((s - y) ** 2))


def compute_metrics(y_true: Any, scores: Any, model_spec: Any) -> dict[str, float]:
    """All evaluation metrics of one scorer on one labelled set, keyed as in `METRIC_NAMES`.

    `model_spec` supplies `recall_at_precision` (the precision P) and `precision_at_k` (k); a
    `training.config.ModelSpec` does. See the module docstring for the degenerate-input rules.
    """
    y = _as_labels(y_true)
    s = _as_scores(scores, y.size)
    _check_probabilities(s)
    p_target = float(model_spec.recall_at_precision)
    k = int(model_spec.precision_at_k)
    return {
        "pr_auc": average_precision(y, s),
        "roc_auc": roc_auc(y, s),
        "recall_at_precision": recall_at_precision(y, s, p_target),
        "precision_at_k": precision_at_k(y, s, k),
        "log_loss": log_loss(y, s),
        "brier": brier(y, s),
    }


def rank_metric(y_true: Any, scores: Any, metric: str) -> float:
    """One of the bootstrap-comparable metrics (`pr_auc` or `roc_auc`) by name."""
    if metric == "pr_auc":
        return average_precision(y_true, scores)
    if metric == "roc_auc":
        return roc_auc(y_true, scores)
    raise MetricError(f"unknown rank metric {metric!r}; choose one of {BOOTSTRAP_METRICS}")


# --------------------------------------------------------------------------------------------
# paired bootstrap
# --------------------------------------------------------------------------------------------


def _stratified_counts(
    rng: np.random.Generator, pos_idx: npt.NDArray[np.intp], neg_idx: npt.NDArray[np.intp], n: int, b: int
) -> npt.NDArray[np.float64]:
    """(b, n) row multiplicities: positives resampled among positives, negatives among negatives."""
    counts = np.zeros((b, n), dtype=np.float64)
    offsets = (np.arange(b, dtype=np.intp) * n)[:, None]
    for idx in (pos_idx, neg_idx):
        draws = idx[rng.integers(0, idx.size, size=(b, idx.size))]
        counts += np.bincount((draws + offsets).ravel(), minlength=b * n).reshape(b, n)
    return counts


def paired_bootstrap_diff(
    y_true: Any,
    scores_a: Any,
    scores_b: Any,
    metric: str = "pr_auc",
    n_bootstrap: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
    chunk_size: int = 64,
) -> BootstrapResult:
    """Percentile CI of `metric(scores_a) - metric(scores_b)` by a paired, class-stratified bootstrap.

    Each replicate resamples row indices once and applies them to both score vectors, so the
    difference is not inflated by resampling noise the two models share. Resampling positives and
    negatives separately keeps the class counts fixed, so every replicate has positives and the
    metric is always defined. Deterministic for a given `seed`.
    """
    if metric not in BOOTSTRAP_METRICS:
        raise MetricError(f"paired bootstrap supports {BOOTSTRAP_METRICS}, not {metric!r}")
    if n_bootstrap < 1:
        raise MetricError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise MetricError(f"confidence must be in (0, 1), got {confidence}")
    y = _as_labels(y_true)
    a = _as_scores(scores_a, y.size, "scores_a")
    b = _as_scores(scores_b, y.size, "scores_b")
    pos_idx = np.flatnonzero(y == 1).astype(np.intp)
    neg_idx = np.flatnonzero(y == 0).astype(np.intp)
    if pos_idx.size == 0 or neg_idx.size == 0:
        raise MetricError(
            f"paired bootstrap needs both classes; got {pos_idx.size} positives and {neg_idx.size} "
            "negatives (widen the holdout window so it contains matured frauds)"
        )
    pick = 0 if metric == "pr_auc" else 1
    rank_a, rank_b = _ranking(a), _ranking(b)
    ones = np.ones((1, y.size))
    observed = float(
        _weighted_rank_metrics(rank_a, y, ones)[pick][0] - _weighted_rank_metrics(rank_b, y, ones)[pick][0]
    )

    rng = np.random.default_rng(seed)
    diffs = np.empty(n_bootstrap, dtype=np.float64)
    for start in range(0, n_bootstrap, chunk_size):
        size = min(chunk_size, n_bootstrap - start)
        w = _stratified_counts(rng, pos_idx, neg_idx, y.size, size)
        diffs[start : start + size] = (
            _weighted_rank_metrics(rank_a, y, w)[pick] - _weighted_rank_metrics(rank_b, y, w)[pick]
        )
    alpha = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(diffs, [alpha, 1.0 - alpha])
    return BootstrapResult(
        mean_diff=float(diffs.mean()),
        lower=float(lower),
        upper=float(upper),
        n=n_bootstrap,
        observed_diff=observed,
        metric=metric,
        confidence=confidence,
        n_rows=int(y.size),
        n_positives=int(pos_idx.size),
    )
