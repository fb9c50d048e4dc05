"""Weights for pre-onset rows by how much their regime resembles the post-onset one.

Why: a drift-aware retrain learns from after the onset; rows from before it were kept at one
constant weight (`training.drift_aware.pre_onset_weight`, default 0: left out, because on the
card example's near-total mechanism shift any constant >= 0.05 hurt). A *partial* shift (a
quarter of the positives change mechanism, the legit traffic not at all) then throws away weeks of
still-valid rows and trains on a handful of post-onset days. Weighting each pre-onset row by the
density ratio p_post(x, y) / p_pre(x, y) keeps what still happens and drops what stopped:
a classifier tells pre- from post-onset rows on the model features *and the label* (a concept
shift changes the joint, not the features), cross-fitted so a row never scores itself; its odds,
times the pre/post size ratio, estimate the density ratio (the standard discriminative estimate),
capped at 1 so no old row outweighs a new one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.config import ModelSpec

FOLDS = 3


def regime_similarity(pre: pd.DataFrame, post: pd.DataFrame, spec: ModelSpec, seed: int) -> np.ndarray:
    """Weight in [0, 1] of each row of `pre` (aligned with it): min(1, estimated p_post / p_pre of (x, y))."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    if pre.empty:
        return np.zeros(0)
    if post.empty:
        raise ValueError("no post-onset rows to compare the pre-onset regime with: the onset is at the data's end")
    both = pd.concat([pre, post], ignore_index=True)
    x = pd.DataFrame({c: both[c].astype("float64") for c in spec.numeric_features})
    for c in spec.categorical_features:
        x[c] = both[c].astype(str).astype("category").cat.codes
    x["__label__"] = both[spec.target].astype(int).to_numpy()
    is_post = np.r_[np.zeros(len(pre), int), np.ones(len(post), int)]
    cat_mask = [c in spec.categorical_features or c == "__label__" for c in x.columns]
    p_post = np.zeros(len(pre))
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    pre_idx_all = np.arange(len(pre))
    for train_idx, test_idx in folds.split(x, is_post):
        clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_leaf_nodes=15,
                                             categorical_features=cat_mask, random_state=seed)
        # one thread: a small fit, and OpenMP threads on a busy machine cost 15x (measured 14 s vs 0.8 s)
        with threadpool_limits(1):
            clf.fit(x.iloc[train_idx], is_post[train_idx])
            test_pre = test_idx[test_idx < len(pre)]
            if test_pre.size:
                p_post[np.searchsorted(pre_idx_all, test_pre)] = clf.predict_proba(x.iloc[test_pre])[:, 1]
    p_post = np.clip(p_post, 1e-6, 1 - 1e-6)
    ratio = p_post / (1 - p_post) * (len(pre) / len(post))
    return np.minimum(ratio, 1.0)
