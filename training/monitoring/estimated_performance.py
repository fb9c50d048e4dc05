"""Performance estimated before the labels mature, from the calibrated scores (CBPE-like).

Why: matured labels arrive `windows.label_maturity_days` late, so the performance signal sees a
shift a week after it began. The champion's scores are calibrated (`model.calibration`), so a
score *is* the probability that the row is positive - as long as the world has not changed under
the model. Confidence-based performance estimation (NannyML's CBPE; not installed here, and the
idea is short) draws the unknown labels from those probabilities: the expected precision above
the decision threshold is the mean score there, the expected recall the share of the score mass
above it, and the expected PR-AUC the mean average precision over label draws
`y ~ Bernoulli(score)`. It reacts the day the score distribution moves (a mechanism shift that
removes the high-score positives lowers it at once); it cannot see a change in P(y | x) that leaves
the scores alone - that one only the matured labels show. So it is recorded as an early signal
(`estimated_performance` in a window's signals, never counted by the trigger) and compared with
the same floor as the matured metric; benchmarks/healing_matrix.py measures how much earlier it
breaches than the matured performance does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.model.metrics import average_precision


def estimate(scores: Any, *, threshold: float, draws: int = 50, seed: int = 0) -> dict[str, float]:
    """Expected `pr_auc`, `precision` and `recall` at `threshold`, and a 90 % band of the PR-AUC.

    `scores` must be calibrated probabilities. Keys: `pr_auc`, `pr_auc_low`, `pr_auc_high`,
    `precision`, `recall`, `expected_positives`.
    """
    p = np.clip(np.asarray(scores, dtype="float64"), 0.0, 1.0)
    if p.size == 0:
        raise ValueError("no scores to estimate performance from: pass the window's calibrated scores")
    above = p >= threshold
    mass = float(p.sum())
    rng = np.random.default_rng(seed)
    aps = []
    for _ in range(draws):
        y = (rng.random(p.size) < p).astype(int)
        if 0 < y.sum() < y.size:
            aps.append(average_precision(y, p))
    ap = np.asarray(aps) if aps else np.array([np.nan])
    return {
        "pr_auc": float(np.mean(ap)),
        "pr_auc_low": float(np.quantile(ap, 0.05)),
        "pr_auc_high": float(np.quantile(ap, 0.95)),
        "precision": float(p[above].mean()) if above.any() else float("nan"),
        "recall": float(p[above].sum() / mass) if mass > 0 else float("nan"),
        "expected_positives": mass,
    }
