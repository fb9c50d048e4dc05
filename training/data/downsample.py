"""Bounded training memory: negative down-sampling with importance weights.

At high volume the train split can outgrow memory long before the positives (the rare class) do. With
`training.max_train_rows` set, every positive is kept and a seeded uniform sample of negatives
fills the rest of the bound; each kept negative's weight is multiplied by 1 / rate, so the
weighted negative total (and thus the class balance the model learns) is what the full split had.
Validation and holdout are never sampled: the gates still score every holdout row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.errors import ClosedloopError


class DownsampleError(ClosedloopError, ValueError):
    """The bound cannot be met by dropping negatives alone."""


@dataclass(frozen=True)
class Downsample:
    """What down-sampling did to the train split (logged on the MLflow run)."""

    rows_before: int
    rows_after: int
    negatives_before: int
    negatives_after: int
    rate: float  # share of negatives kept

    def as_params(self) -> dict[str, float | int]:
        return {
            "train_rows_before_downsample": self.rows_before,
            "train_rows_after_downsample": self.rows_after,
            "train_negative_rate": self.rate,
        }


def downsample_negatives(
    train: pd.DataFrame,
    weight: np.ndarray | None,
    target: str,
    max_rows: int | None,
    seed: int,
) -> tuple[pd.DataFrame, np.ndarray | None, Downsample | None]:
    """Keep all positives and a uniform sample of negatives so `train` has at most `max_rows` rows.

    Returns (train, weight, None) unchanged when `max_rows` is None or already met. Otherwise the
    kept rows stay in their original order, and the weights are `weight` (1 when None) with every
    kept negative's multiplied by negatives_before / negatives_after = 1 / rate.
    """
    if max_rows is None or len(train) <= max_rows:
        return train, weight, None
    y = train[target].to_numpy().astype(int)
    neg = np.flatnonzero(y == 0)
    n_pos = len(y) - len(neg)
    keep_neg = max_rows - n_pos
    if keep_neg < 1:
        raise DownsampleError(
            f"the train split has {n_pos} positives, at least training.max_train_rows ({max_rows}); "
            "down-sampling keeps every positive, so raise the bound"
        )
    rng = np.random.default_rng(seed)
    chosen = rng.choice(neg, size=keep_neg, replace=False)
    keep = np.zeros(len(y), dtype=bool)
    keep[y == 1] = True
    keep[chosen] = True
    rate = keep_neg / len(neg)
    base = np.ones(len(y)) if weight is None else np.asarray(weight, dtype="float64")
    new_weight = np.where(y == 0, base / rate, base)[keep]
    info = Downsample(len(y), int(keep.sum()), len(neg), keep_neg, rate)
    return train.loc[keep].reset_index(drop=True), new_weight, info
