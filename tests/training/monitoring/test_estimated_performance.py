"""CBPE-like estimated performance: on calibrated scores it tracks the realised metric."""

from __future__ import annotations

import numpy as np
import pytest

from training.model.metrics import average_precision
from training.monitoring import estimated_performance


@pytest.mark.parametrize(("separation", "seed"), [(1.0, 0), (2.0, 1), (3.0, 2), (4.0, 3)])
def test_estimate_tracks_the_realised_pr_auc_on_calibrated_scores(separation: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 20_000
    logit = rng.normal(-4.5, separation, n)  # ~ 1-4 % positives, from weak to strong separation
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < p).astype(int)  # labels drawn from the scores: calibrated by construction
    est = estimated_performance.estimate(p, threshold=0.5, draws=30, seed=seed)
    realised = average_precision(y, p)
    assert abs(est["pr_auc"] - realised) < 0.05, (est, realised)
    assert est["pr_auc_low"] - 0.02 <= realised <= est["pr_auc_high"] + 0.02
    above = p >= 0.5
    if y[above].size >= 50:
        assert abs(est["precision"] - y[above].mean()) < 0.08
        assert abs(est["recall"] - y[above].sum() / y.sum()) < 0.08


def test_estimate_falls_when_the_high_scores_vanish() -> None:
    """A shift that removes the confidently-scored positives lowers the estimate at once."""
    rng = np.random.default_rng(7)
    p = 1 / (1 + np.exp(-rng.normal(-4.5, 3.0, 20_000)))
    before = estimated_performance.estimate(p, threshold=0.5, seed=0)["pr_auc"]
    after = estimated_performance.estimate(np.minimum(p, 0.2), threshold=0.5, seed=0)["pr_auc"]
    assert after < 0.6 * before


def test_no_scores_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="calibrated scores"):
        estimated_performance.estimate(np.array([]), threshold=0.5)
