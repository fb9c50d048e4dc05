"""Where a shift began: change-point detection on daily metrics, with a bootstrap interval.

Why: the retrain trigger fires only after k-of-n windows breach, and the first breaching window
starts 3-7 days away from the real change (a 3-day performance window straddles it; a drift
window breaches only once enough of it has moved). The drift-aware retrain anchors its training
window at the onset, so a late onset drops valid post-shift days and an early one mixes in the
old regime. Here the onset is re-estimated on *daily* series of what fired:

* `performance`      - the daily matured primary metric (average precision) of the champion;
* `prediction_drift` - the daily mean log-odds of the champion's scores minus the same weekday's
  reference mean (weekly seasonality cancels out);
* `data_drift`       - per drifted feature, the daily mean (numeric) or the total-variation distance
  to the reference (categorical), again against the same weekday's reference.

The detector is the classical least-squares single change point in the mean (the CUSUM
statistic), summed over the series' columns, each scaled by a noise level robust to the shift
(MAD of first differences). A permutation test says whether the split is more than noise
(exchangeable days under "no change"); a residual bootstrap within the two segments (re-fit on
fitted means + resampled residuals) gives the interval of the change day, as in Huškova & Kirch's
bootstrap for change-point location. A search starts after the champion's last retrain, so the
episode searched has at most one change of interest; ruptures would offer the same (`Binseg`
with an `l2` cost) but is not installed, and the one-split case is a few lines of numpy.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

DAY = dt.timedelta(days=1)
MIN_SEGMENT_DAYS = 2
SIGNIFICANCE = 0.05
INTERVAL_LEVEL = 0.9


@dataclass(frozen=True)
class ChangePoint:
    """The first day of the new regime, its bootstrap interval and how sure the split is."""

    onset: dt.date
    low: dt.date
    high: dt.date
    p_value: float
    shift: float  # mean absolute shift across columns, in noise units
    series: str
    days: int  # days searched

    @property
    def significant(self) -> bool:
        return self.p_value <= SIGNIFICANCE

    def to_dict(self) -> dict[str, Any]:
        return {
            "onset": self.onset.isoformat(),
            "interval": [self.low.isoformat(), self.high.isoformat()],
            "level": INTERVAL_LEVEL,
            "p_value": round(self.p_value, 4),
            "shift_in_noise_units": round(self.shift, 3),
            "series": self.series,
            "days_searched": self.days,
            "method": "least-squares mean shift (CUSUM), permutation test, segment residual bootstrap",
        }


def _noise(x: np.ndarray) -> float:
    """Noise level of a series that may hold one mean shift: MAD of first differences / sqrt(2)."""
    d = np.diff(x)
    if d.size == 0:
        return 1.0
    sigma = float(np.median(np.abs(d - np.median(d)))) * 1.4826 / math.sqrt(2)
    if not sigma > 0:
        sigma = float(np.std(x)) or 1.0
    return sigma


def _split_gains(z: np.ndarray, min_seg: int) -> np.ndarray:
    """Cost reduction of splitting before each day t (z: days x columns); -inf where not allowed.

    SSE(all) - SSE(left) - SSE(right) = t (n - t) / n * |mean_left - mean_right|^2, summed over columns.
    """
    n = z.shape[0]
    c = np.cumsum(z, axis=0)
    total = c[-1]
    gains = np.full(n, -np.inf)
    for t in range(min_seg, n - min_seg + 1):
        left = c[t - 1] / t
        right = (total - c[t - 1]) / (n - t)
        gains[t] = t * (n - t) / n * float(np.sum((left - right) ** 2))
    return gains


def _best(z: np.ndarray, min_seg: int) -> tuple[int, float]:
    g = _split_gains(z, min_seg)
    t = int(np.argmax(g))
    return t, float(g[t])


def detect(
    series: pd.DataFrame | pd.Series,
    *,
    name: str = "",
    min_segment: int = MIN_SEGMENT_DAYS,
    n_resamples: int = 200,
    seed: int = 0,
) -> ChangePoint | None:
    """The most likely single change in the mean of `series` (index: dates, one row a day).

    Rows with a missing value in every column are dropped; other gaps are filled with the column's
    median. None when fewer than `2 * min_segment` days are left. The result says whether the
    split is significant (`p_value`); the caller decides what to do with a weak one.
    """
    frame = series.to_frame() if isinstance(series, pd.Series) else series
    frame = frame.sort_index().dropna(how="all")
    frame = frame.loc[:, frame.notna().sum() >= 2 * min_segment]
    if frame.shape[1] == 0 or len(frame) < 2 * min_segment:
        return None
    frame = frame.fillna(frame.median())
    x = frame.to_numpy(dtype="float64")
    scale = np.array([_noise(x[:, j]) for j in range(x.shape[1])])
    z = (x - x.mean(axis=0)) / scale
    n = z.shape[0]
    t, gain = _best(z, min_segment)
    rng = np.random.default_rng(seed)
    exceed = sum(_best(z[rng.permutation(n)], min_segment)[1] >= gain for _ in range(n_resamples))
    p_value = (1 + exceed) / (1 + n_resamples)
    fitted = np.vstack([np.repeat(z[:t].mean(axis=0, keepdims=True), t, axis=0),
                        np.repeat(z[t:].mean(axis=0, keepdims=True), n - t, axis=0)])
    resid = z - fitted
    taus = np.empty(n_resamples, dtype=int)
    for b in range(n_resamples):
        boot = np.vstack([resid[:t][rng.integers(0, t, t)], resid[t:][rng.integers(0, n - t, n - t)]])
        taus[b] = _best(fitted + boot, min_segment)[0]
    alpha = (1 - INTERVAL_LEVEL) / 2
    lo, hi = np.quantile(taus, [alpha, 1 - alpha], method="nearest")
    days = [pd.Timestamp(d).date() for d in frame.index]  # a Timestamp is a date too: normalise every kind
    shift = float(np.mean(np.abs(z[t:].mean(axis=0) - z[:t].mean(axis=0))))
    return ChangePoint(days[t], days[min(int(lo), t)], days[max(int(hi), t)], p_value, shift, name, n)


# --- daily series of the monitored signals ---------------------------------------------------------


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _weekday_baseline(reference: pd.DataFrame, values: pd.Series) -> dict[int, float]:
    """Mean of `values` (aligned with `reference`) per weekday; the overall mean for missing weekdays."""
    if "batch_date" not in reference.columns or reference.empty:
        m = float(values.mean()) if len(values) else 0.0
        return dict.fromkeys(range(7), m)
    wd = pd.to_datetime(reference["batch_date"]).dt.weekday.to_numpy()
    means = values.groupby(wd).mean()
    overall = float(values.mean())
    return {d: float(means.get(d, overall)) for d in range(7)}


def _weekday(days: pd.Series) -> np.ndarray:
    return pd.to_datetime(days).dt.weekday.to_numpy()


def score_series(frame: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Daily mean log-odds of `score` minus the reference's same-weekday mean."""
    lo = pd.Series(_logit(frame["score"].to_numpy(dtype="float64")), index=frame.index)
    base = _weekday_baseline(reference, pd.Series(_logit(reference["score"].to_numpy(dtype="float64"))))
    adj = lo - pd.Series(_weekday(frame["batch_date"]), index=frame.index).map(base)
    return adj.groupby(frame["batch_date"].to_numpy()).mean().to_frame("score_log_odds")


def feature_series(frame: pd.DataFrame, reference: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Per feature, a daily statistic against the same weekday of the reference.

    Numeric: the daily mean minus the reference weekday mean. Categorical: the total-variation
    distance between the day's category shares and the reference's.
    """
    out: dict[str, pd.Series] = {}
    days = frame["batch_date"].to_numpy()
    for f in features:
        if f not in frame.columns or f not in reference.columns:
            continue
        col = frame[f]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            base = _weekday_baseline(reference, reference[f].astype("float64"))
            shift = col.astype("float64") - pd.Series(_weekday(frame["batch_date"]), index=frame.index).map(base)
            out[f] = shift.groupby(days).mean()
        else:
            ref_share = reference[f].astype(str).value_counts(normalize=True)
            tvd = {}
            for day, g in col.astype(str).groupby(days):
                share = g.value_counts(normalize=True)
                both = ref_share.index.union(share.index)
                tvd[day] = 0.5 * float(np.abs(share.reindex(both, fill_value=0)
                                              - ref_share.reindex(both, fill_value=0)).sum())
            out[f] = pd.Series(tvd)
    return pd.DataFrame(out)


def performance_series(frame: pd.DataFrame, labels: pd.DataFrame, id_column: str, target: str) -> pd.DataFrame:
    """Daily average precision of `score` on the matured labels (NaN on a day with < 2 positives)."""
    from sklearn.metrics import average_precision_score

    ok = labels.loc[labels["matured"].fillna(False).astype(bool) & labels[target].notna(), [id_column, target]]
    joined = frame[[id_column, "batch_date", "score"]].merge(
        ok.drop_duplicates(subset=[id_column], keep="last"), on=id_column, how="inner"
    )
    values = {}
    for day, g in joined.groupby("batch_date"):
        y = g[target].astype(int).to_numpy()
        values[day] = float(average_precision_score(y, g["score"])) if 2 <= y.sum() < len(y) else math.nan
    return pd.Series(values, dtype="float64").to_frame("matured_average_precision")
