"""Change-point onset on synthetic daily series: found within a day, interval covers the truth."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from training.monitoring import change_point

START = dt.date(2026, 2, 1)


def _days(n: int) -> list[dt.date]:
    return [START + dt.timedelta(days=i) for i in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_abrupt_shift_found_within_a_day_and_covered(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, at = 28, 17
    # a matured daily PR-AUC around 0.75 that drops to 0.45 (noise sd 0.06, ~ 30 positives a day)
    values = np.where(np.arange(n) < at, 0.75, 0.45) + rng.normal(0, 0.06, n)
    cp = change_point.detect(pd.Series(values, index=_days(n)), name="performance", seed=seed)
    assert cp is not None and cp.significant
    truth = START + dt.timedelta(days=at)
    assert abs((cp.onset - truth).days) <= 1
    assert cp.low <= truth <= cp.high
    assert (cp.high - cp.low).days <= 4


def test_multivariate_shift_in_two_features() -> None:
    rng = np.random.default_rng(3)
    n, at = 21, 9
    frame = pd.DataFrame(
        {"a": rng.normal(0, 1, n) + np.where(np.arange(n) >= at, 1.5, 0), "b": rng.normal(5, 1, n)
         + np.where(np.arange(n) >= at, 1.5, 0)},
        index=_days(n),
    )
    cp = change_point.detect(frame, seed=0)
    assert cp is not None and cp.significant
    assert abs((cp.onset - (START + dt.timedelta(days=at))).days) <= 1


def test_no_change_is_not_significant() -> None:
    hits = 0
    for seed in range(20):
        values = np.random.default_rng(100 + seed).normal(0.7, 0.06, 28)
        cp = change_point.detect(pd.Series(values, index=_days(28)), seed=seed)
        assert cp is not None
        hits += cp.significant
    assert hits <= 3  # about the 5 % the test allows, with slack for 20 draws


def test_too_short_a_series_gives_none() -> None:
    assert change_point.detect(pd.Series([0.1, 0.2, 0.3], index=_days(3))) is None


def test_feature_series_cancels_weekly_rhythm() -> None:
    """Weekends pricier in the reference and the window alike: no shift left in the daily series."""
    rng = np.random.default_rng(0)
    def frame(days: list[dt.date]) -> pd.DataFrame:
        rows = []
        for d in days:
            level = 120.0 if d.weekday() >= 5 else 100.0
            rows.append(pd.DataFrame({"batch_date": d, "amount": rng.normal(level, 5, 200),
                                      "channel": rng.choice(["web", "shop"], 200)}))
        return pd.concat(rows, ignore_index=True)
    ref = frame(_days(14))
    cur = frame([START + dt.timedelta(days=14 + i) for i in range(14)])
    s = change_point.feature_series(cur, ref, ["amount", "channel"])
    assert s["amount"].abs().max() < 2.0  # raw weekday/weekend gap is 20
    assert s["channel"].max() < 0.1
