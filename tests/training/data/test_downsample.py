"""Negative down-sampling of the train split: positives kept, the bound met, weights restore the negatives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.config import ConfigError, with_overrides
from training.data.downsample import DownsampleError, downsample_negatives


def _train(n: int = 20_000, fraud_rate: float = 0.02, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"transaction_id": np.arange(n), "x": rng.normal(size=n), "is_fraud": rng.random(n) < fraud_rate})


def test_keeps_every_positive_and_samples_negatives_to_the_bound():
    train = _train()
    out, weight, info = downsample_negatives(train, None, "is_fraud", 5_000, seed=7)
    assert info is not None and len(out) == info.rows_after == 5_000 and info.rows_before == len(train)
    assert set(out.loc[out["is_fraud"], "transaction_id"]) == set(train.loc[train["is_fraud"], "transaction_id"])
    assert out["transaction_id"].is_monotonic_increasing  # original order kept
    neg_before = int((~train["is_fraud"]).sum())
    assert info.negatives_before == neg_before and info.rate == pytest.approx(info.negatives_after / neg_before)
    assert weight is not None and len(weight) == len(out)
    assert (weight[out["is_fraud"].to_numpy()] == 1).all()
    # the kept negatives stand for all of them
    assert weight[~out["is_fraud"].to_numpy()].sum() == pytest.approx(neg_before, rel=1e-9)


def test_deterministic_for_a_seed_and_different_for_another():
    train = _train()
    a, wa, _ = downsample_negatives(train, None, "is_fraud", 5_000, seed=7)
    b, wb, _ = downsample_negatives(train, None, "is_fraud", 5_000, seed=7)
    c, _, _ = downsample_negatives(train, None, "is_fraud", 5_000, seed=8)
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_array_equal(wa, wb)
    assert not a["transaction_id"].equals(c["transaction_id"])


def test_off_or_within_the_bound_changes_nothing():
    train = _train(1_000)
    for bound in (None, 1_000, 5_000):
        out, weight, info = downsample_negatives(train, None, "is_fraud", bound, seed=7)
        assert out is train and weight is None and info is None
    w = np.linspace(0.1, 1.0, len(train))
    out, weight, info = downsample_negatives(train, w, "is_fraud", None, seed=7)
    assert out is train and weight is w and info is None


def test_composes_with_an_existing_train_weight():
    train = _train()
    regime = np.where(np.arange(len(train)) < len(train) // 2, 0.25, 1.0)  # e.g. drift-aware pre-onset weight
    out, weight, info = downsample_negatives(train, regime, "is_fraud", 4_000, seed=3)
    assert info is not None and weight is not None
    ids = out["transaction_id"].to_numpy()
    pos = out["is_fraud"].to_numpy()
    np.testing.assert_allclose(weight[pos], regime[ids[pos]])
    np.testing.assert_allclose(weight[~pos], regime[ids[~pos]] / info.rate)
    # the weighted negative total is restored in expectation (a uniform sample of 4k of ~19.6k)
    full = regime[~train["is_fraud"].to_numpy()].sum()
    assert weight[~pos].sum() == pytest.approx(full, rel=0.03)


def test_a_bound_the_positives_alone_exceed_is_an_error():
    train = _train(2_000, fraud_rate=0.5)
    with pytest.raises(DownsampleError, match="max_train_rows"):
        downsample_negatives(train, None, "is_fraud", 500, seed=7)


def test_config_knob_is_off_by_default_and_rejects_nonsense(base_config):
    assert base_config.training.max_train_rows is None
    assert with_overrides(base_config, training={"max_train_rows": 200_000}).training.max_train_rows == 200_000
    for bad in (0, -5, 1.5, "many"):
        with pytest.raises(ConfigError, match=r"max_train_rows"):
            with_overrides(base_config, training={"max_train_rows": bad})
