"""Synthetic published training sets for tests of training, DAGs and plugins.

A synthetic published training set with exactly the `ml_training_set` contract columns, fraud
depending on a few features (so models learn something), and degraded copies of it that yield
genuinely worse models: the degradations touch only rows before the holdout window, so every
copy freezes the same holdout (same content hash) and champion and challenger stay comparable.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from training.config import Config
from training.paths import StatePaths

START = dt.date(2026, 1, 1)
N_DAYS = 32
ROWS_PER_DAY = 1000
CATEGORIES = {  # category -> fraud log-odds bump
    "grocery": -0.6,
    "fuel": -0.4,
    "restaurants": -0.3,
    "pharmacy": -0.3,
    "fashion": 0.0,
    "travel": 0.3,
    "electronics": 0.6,
    "jewelry": 0.7,
    "gaming": 0.8,
    "digital_goods": 0.9,
}
COUNTRIES = ["DE", "FR", "NL", "ES", "IT", "BE"]

#: Windows/gates small enough for a test to train in seconds (holdout = last 4 days).
#: The card-fraud source of the loops under the real scheduler (config overrides, YAML): enough rows
#: that the demo's day-8 fraud shift shows in a day's matured labels, fewer than `make demo`'s. The
#: retrain the drift monitor triggers trains at once (2 matured post-onset days) instead of waiting for
#: the demo's 5: the loop closes on day 12, not 15 (three fewer days in each loop test). The deferral
#: has its own tests (tests/dags/test_train_deferral_dag.py); benchmarks/healing_retrain.py measured
#: that a retrain at the trigger reaches 68 % of the ceiling and passes the recovery gate.
LOOP_SOURCE_OVERRIDES = (
    "simulator:\n  transactions_per_day: 6000\n  n_customers: 2000\n"
    "training:\n  drift_aware:\n    min_post_onset_days: 2\n"
)

TEST_OVERRIDES = {
    "windows": {"training_days": 10, "validation_days": 3, "holdout_days": 4, "label_maturity_days": 5},
    "training": {"search_budget": 2},
    "gates": {
        "floors": {"pr_auc": 0.10, "roc_auc": 0.60},
        "non_regression": {"n_bootstrap": 200},
        "slices": {"min_rows": 300, "min_positives": 10},
    },
    # nobody answers in these tests: the approval path has its own (tests/dags/test_approval_dag.py, e2e)
    "approval": {"mode": "never"},
}


def make_training_set(n_days: int = N_DAYS, rows_per_day: int = ROWS_PER_DAY, seed: int = 0) -> pd.DataFrame:
    """Matured training-set rows, contract columns of `ml.ml_training_set`, deterministic by seed."""
    rng = np.random.default_rng(seed)
    n = n_days * rows_per_day
    day_idx = np.repeat(np.arange(n_days), rows_per_day)
    batch_date = np.array([START + dt.timedelta(days=int(d)) for d in range(n_days)])[day_idx]
    seconds = rng.integers(0, 86400, n)
    event_ts = pd.to_datetime(batch_date) + pd.to_timedelta(seconds, unit="s")
    hour = (seconds // 3600).astype(int)
    channel = np.where(rng.random(n) < 0.55, "online", "in_store")
    online = channel == "online"
    cats = np.array(list(CATEGORIES))
    category = cats[rng.integers(0, len(cats), n)]
    cat_risk = np.array([CATEGORIES[c] for c in category])
    home = np.array(COUNTRIES)[rng.integers(0, len(COUNTRIES), n)]
    foreign = rng.random(n) < 0.15
    other = np.array(COUNTRIES)[rng.integers(0, len(COUNTRIES), n)]
    country = np.where(foreign, np.where(other == home, "US", other), home)
    amount = np.round(np.exp(rng.normal(3.4, 1.0, n)), 2) + 0.5
    band = np.select([amount < 10, amount < 100, amount < 500], ["lt_10", "10_100", "100_500"], "ge_500")
    tx_1h = rng.poisson(0.3, n)
    tx_24h = tx_1h + rng.poisson(2.0, n)
    ratio = np.exp(rng.normal(0.0, 0.6, n))
    new_country = np.where(foreign, rng.random(n) < 0.4, rng.random(n) < 0.02).astype(int)
    new_device = np.where(online, rng.random(n) < 0.12, False).astype(int)
    logit = (
        -5.6
        + 3.8 * new_device
        + 2.2 * new_country
        + 1.8 * np.log(ratio)
        + 0.7 * tx_1h
        + 1.0 * cat_risk
        + 0.4 * online
        + 0.8 * (hour < 6)
    )
    is_fraud = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype("int64")
    delay = rng.integers(1, 6, n)
    reported = pd.Series(event_ts + pd.to_timedelta(delay, unit="D")).where(is_fraud == 1)
    cat_rate = pd.Series(is_fraud).groupby(category).transform("mean").to_numpy()
    df = pd.DataFrame(
        {
            "transaction_id": [f"tx-{d:%Y%m%d}-{i:07d}" for d, i in zip(batch_date, range(n), strict=True)],
            "customer_id": [f"c-{c:05d}" for c in rng.integers(0, 800, n)],
            "event_ts": event_ts.astype("datetime64[us]"),
            "batch_date": batch_date,
            "channel": channel,
            "merchant_category": category,
            "country": country,
            "customer_home_country": home,
            "country_bucket": np.where(foreign, "foreign", "domestic"),
            "amount": amount,
            "log_amount": np.log1p(amount),
            "amount_band": band,
            "hour_of_day": hour.astype("int32"),
            "is_weekend": (pd.to_datetime(batch_date).dayofweek >= 5).astype("int32"),
            "tx_count_1h": tx_1h.astype("int64"),
            "tx_count_24h": tx_24h.astype("int64"),
            "amount_to_customer_avg": ratio,
            "is_new_country": new_country.astype("int32"),
            "is_new_device": new_device.astype("int32"),
            "category_fraud_rate": np.round(cat_rate + rng.normal(0, 0.002, n), 5),
            "is_fraud": is_fraud,
            "label_reported_at": reported.astype("datetime64[us]"),
        }
    )
    return df


def holdout_start(df: pd.DataFrame, cfg: Config) -> dt.date:
    return max(df["batch_date"]) - dt.timedelta(days=cfg.windows.holdout_days - 1)


def permute_features(df: pd.DataFrame, columns: list[str], before: dt.date, seed: int = 1) -> pd.DataFrame:
    """Break the link between `columns` and the label in rows before `before` (schema unchanged)."""
    out = df.copy()
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(out["batch_date"].to_numpy() < before)
    for col in columns:
        idx = out.columns.get_loc(col)
        out.iloc[rows, idx] = out.iloc[rng.permutation(rows), idx].to_numpy()
    return out


def publish(paths: StatePaths, df: pd.DataFrame, name: str, **lineage: object) -> str:
    """Snapshot a training-set frame as a DVC data version with a ledger row; returns its md5."""
    from training.storage import versioning

    return versioning.publish_frame(
        paths, df, name,
        dbt_invocation_id=str(lineage.get("dbt_invocation_id", f"dbt-{name}")),
        gx_run_id=str(lineage.get("gx_run_id", f"gx-{name}")),
        created_at=dt.datetime(2026, 2, 1),
    )


def train_and_evaluate(paths: StatePaths, cfg: Config, data_version: str, reason: str, **evaluate_kw: object):
    """Train a challenger on a data version and run the gates on it (both for real)."""
    from training.model.evaluate import evaluate_challenger
    from training.model.train import TrainRequest, train_model

    trained = train_model(paths, cfg, TrainRequest(reason=reason, data_version=data_version))
    return trained, evaluate_challenger(paths, cfg, version=trained.version, **evaluate_kw)


def publish_day_features(paths: StatePaths, frame: pd.DataFrame, day: dt.date) -> pd.DataFrame:
    """Put one day of the synthetic set in the warehouse as the feature mart's published partition."""
    import duckdb

    features = frame[frame["batch_date"] == day].drop(columns=["is_fraud", "label_reported_at"], errors="ignore")
    con = duckdb.connect(str(paths.warehouse))
    try:
        con.execute("create schema if not exists published")
        con.register("day_features", features)
        con.execute("create or replace table published.transaction_features as select * from day_features")
    finally:
        con.close()
    return features
