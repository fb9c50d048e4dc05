"""drift_job.locate_onset: the trigger's onset re-estimated on daily series, interval in the evidence."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from training.config import Config
from training.monitoring import drift_job
from training.monitoring.retrain_trigger import Decision, WindowEvidence

D0 = dt.date(2026, 3, 2)  # a Monday
SHIFT_DAY = 15


def _frame(cfg: Config, first: int, n_days: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(first, first + n_days):
        day = D0 + dt.timedelta(days=i)
        n = 400
        # fraud spreads into the scores from SHIFT_DAY on: more high scores (a prediction-only shift)
        base = -4.0 if i < SHIFT_DAY else -3.2
        score = 1 / (1 + np.exp(-rng.normal(base, 1.5, n)))
        rows.append(pd.DataFrame({cfg.model.id_column: [f"{i}-{j}" for j in range(n)], "batch_date": day,
                                  "score": score, "model_version": "4",
                                  cfg.model.target: (rng.random(n) < score).astype(int)}))
    return pd.concat(rows, ignore_index=True)


def _decision(now: dt.date, window_onset: dt.date, signal: str) -> Decision:
    return Decision(True, signal, {"window_end": now.isoformat(), "onset_window_start": window_onset.isoformat(),
                                   "breaching_signals": [signal]}, "prediction_drift breached.")


def _window(now: dt.date) -> WindowEvidence:
    return WindowEvidence(now, now, "4", ("4",), 400, 0, 0, {})


def test_prediction_shift_onset_is_named_within_a_day_with_an_interval(base_config: Config) -> None:
    reference = _frame(base_config, -14, 14, seed=1)
    data = _frame(base_config, 0, 21, seed=2)
    now = D0 + dt.timedelta(days=20)

    def load_window(start: dt.date, end: dt.date) -> pd.DataFrame:
        return data[(data.batch_date >= start) & (data.batch_date <= end)]

    def load_labels(ids: pd.Series, as_of: dt.date) -> pd.DataFrame:
        return data.loc[data[base_config.model.id_column].isin(set(ids)),
                        [base_config.model.id_column, base_config.model.target]].assign(matured=True)

    window_onset = D0 + dt.timedelta(days=18)  # the first breaching window: 3 days late
    out = drift_job.locate_onset(base_config, _decision(now, window_onset, "prediction_drift"), _window(now),
                                 reference=reference, serving_since=D0, load_window=load_window,
                                 load_labels=load_labels)
    truth = D0 + dt.timedelta(days=SHIFT_DAY)
    ev = out.evidence
    assert abs((dt.date.fromisoformat(ev["onset_window_start"]) - truth).days) <= 1
    low, high = (dt.date.fromisoformat(d) for d in ev["onset_interval"])
    assert low <= truth <= high
    assert ev["onset_from_windows"] == window_onset.isoformat()
    assert ev["onset_change_point"]["prediction_drift"]["p_value"] <= 0.05
    assert "change point" in out.why

    # no trigger: nothing to locate, the decision is returned as is
    quiet = Decision(False, "no_breach", {"window_end": now.isoformat()}, "quiet")
    assert drift_job.locate_onset(base_config, quiet, _window(now), reference=reference, serving_since=D0,
                                  load_window=load_window, load_labels=load_labels) is quiet


def test_no_change_in_the_series_keeps_the_window_onset(base_config: Config) -> None:
    reference = _frame(base_config, -14, 14, seed=1)
    data = _frame(base_config, 0, 14, seed=3)  # every day before SHIFT_DAY: nothing changes
    now = D0 + dt.timedelta(days=13)
    window_onset = D0 + dt.timedelta(days=11)
    out = drift_job.locate_onset(
        base_config, _decision(now, window_onset, "prediction_drift"), _window(now), reference=reference,
        serving_since=D0, load_window=lambda s, e: data[(data.batch_date >= s) & (data.batch_date <= e)],
        load_labels=lambda ids, as_of: pd.DataFrame(),
    )
    assert out.evidence["onset_window_start"] == window_onset.isoformat()
    assert out.evidence["onset_source"].startswith("first breaching window")


def test_warehouse_typed_batch_dates_are_located_too(base_config: Config) -> None:
    """The warehouse returns `batch_date` as datetime64 (the DAG's drift monitor): the performance
    series' maturity cut and the named onset work on it as on calendar days."""
    data = _frame(base_config, 0, 21, seed=2)
    stored = data.assign(batch_date=pd.to_datetime(data["batch_date"]))  # what windows.load_current_window gives
    reference = _frame(base_config, -14, 14, seed=1)
    reference = reference.assign(batch_date=pd.to_datetime(reference["batch_date"]))
    now = D0 + dt.timedelta(days=20)

    def load_window(start: dt.date, end: dt.date) -> pd.DataFrame:
        days = stored["batch_date"].dt.date
        return stored[(days >= start) & (days <= end)]

    def load_labels(ids: pd.Series, as_of: dt.date) -> pd.DataFrame:
        return data.loc[data[base_config.model.id_column].isin(set(ids)),
                        [base_config.model.id_column, base_config.model.target]].assign(matured=True)

    decision = Decision(True, "performance+prediction_drift",
                        {"window_end": now.isoformat(), "onset_window_start": (now - dt.timedelta(days=2)).isoformat(),
                         "breaching_signals": ["performance", "prediction_drift"]}, "breached.")
    out = drift_job.locate_onset(base_config, decision, _window(now), reference=reference, serving_since=D0,
                                 load_window=load_window, load_labels=load_labels)
    onset = dt.date.fromisoformat(out.evidence["onset_window_start"])  # an ISO day, not a timestamp
    assert abs((onset - (D0 + dt.timedelta(days=SHIFT_DAY))).days) <= 1
    assert set(out.evidence["onset_change_point"]) <= {"performance", "prediction_drift"}
