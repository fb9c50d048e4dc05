"""Pre-onset rows weighted by regime similarity: a partial shift keeps what still happens."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from training.config import Config, with_overrides
from training.data import datasets
from training.data.regime_weights import regime_similarity

D0 = dt.date(2026, 1, 1)


def _days(cfg: Config, first: int, n_days: int, mechanisms: tuple[str, ...], seed: int) -> pd.DataFrame:
    """Legit rows like every day; fraud of `mechanisms`: `old` = large amounts online, `new` = fuel in store."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(first, first + n_days):
        n, n_fraud = 250, 25
        mech = np.r_[np.full(n, "legit"), rng.choice(mechanisms, n_fraud)]
        amount = np.where(mech == "old", rng.lognormal(6, 0.3, mech.size), rng.lognormal(3.5, 0.8, mech.size))
        frame = pd.DataFrame({c: rng.normal(0, 1, mech.size) for c in cfg.model.numeric_features})
        frame["amount"], frame["log_amount"] = amount, np.log1p(amount)
        frame["channel"] = np.where(mech == "old", "online", np.where(mech == "new", "in_store",
                                    rng.choice(["online", "in_store"], mech.size)))
        frame["merchant_category"] = np.where(mech == "new", "fuel", rng.choice(["grocery", "fuel", "travel"], mech.size))
        frame[cfg.model.target] = (mech != "legit").astype(int)
        frame["mechanism"] = mech
        frame[datasets.BATCH_DATE] = D0 + dt.timedelta(days=i)
        frame[cfg.model.id_column] = [f"{i}-{j}" for j in range(mech.size)]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_vanished_fraud_gets_low_weight_what_still_happens_high(base_config: Config) -> None:
    pre = _days(base_config, 0, 10, ("old", "new"), seed=1)  # half the fraud moves away after the onset
    post = _days(base_config, 10, 6, ("new",), seed=2)
    w = regime_similarity(pre, post, base_config.model, seed=0)
    assert w.shape == (len(pre),) and ((w >= 0) & (w <= 1)).all()
    by = pd.Series(w).groupby(pre["mechanism"].to_numpy()).mean()
    assert by["old"] < 0.25, by
    assert by["new"] > 0.5 and by["legit"] > 0.6, by


def test_split_anchored_uses_regime_similarity_when_configured(base_config: Config) -> None:
    frame = pd.concat([_days(base_config, 0, 14, ("old", "new"), 1), _days(base_config, 14, 12, ("new",), 2)],
                      ignore_index=True)
    cfg = with_overrides(base_config, training={"drift_aware": {"pre_onset_weighting": "regime_similarity"}})
    onset = D0 + dt.timedelta(days=14)
    s = datasets.split_anchored(frame, cfg, onset, seed=7)
    assert s is not None and s.train_weight is not None
    pre = (s.train[datasets.BATCH_DATE] < onset).to_numpy()
    assert pre.any() and (s.train_weight[~pre] == 1).all()
    assert s.train_weight[pre].max() <= 1 and s.train_weight[pre].min() < 0.25
    assert "weighted by regime similarity" in s.method_detail
    datasets.check_no_leakage(s, base_config.model.id_column)
