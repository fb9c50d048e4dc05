"""The simulated source system: deterministic, on contract, with learnable fraud and honest labels."""

from __future__ import annotations

import datetime as dt
from typing import get_args

import numpy as np
import pandas as pd
import pytest

from training.config import Config, ScenarioKind, SimulatorSpec, with_overrides
from training.simulator import (
    CATEGORIES,
    CHARGEBACK_COLUMNS,
    SCENARIO_KINDS,
    TRANSACTION_COLUMNS,
    SimulatorError,
    generate_chargebacks,
    generate_transactions,
    ground_truth,
)

N_DAYS = 8


def _spec(cfg: Config, **changes) -> SimulatorSpec:
    return with_overrides(cfg, simulator=changes).simulator if changes else cfg.simulator


def _day(spec: SimulatorSpec, i: int) -> dt.date:
    return spec.start_date + dt.timedelta(days=i)


@pytest.fixture
def spec(small_config: Config) -> SimulatorSpec:
    return small_config.simulator


# ---------------------------------------------------------------------------- determinism


def test_same_seed_same_frames(spec):
    day = _day(spec, 3)
    pd.testing.assert_frame_equal(generate_transactions(spec, day), generate_transactions(spec, day))
    pd.testing.assert_frame_equal(generate_chargebacks(spec, day), generate_chargebacks(spec, day))
    pd.testing.assert_frame_equal(ground_truth(spec, day), ground_truth(spec, day))


def test_deterministic_across_cache(spec):
    """A fresh build (no per-process cache) gives the same frame as the cached one."""
    from training import simulator

    day = _day(spec, 2)
    first = generate_transactions(spec, day)
    simulator._clean_day_cached.cache_clear()
    simulator._fraud_labels.cache_clear()
    pd.testing.assert_frame_equal(first, generate_transactions(spec, day))


def test_different_seed_or_day_differs(small_config, spec):
    day = _day(spec, 3)
    other = _spec(small_config, seed=spec.seed + 1)
    a, b = generate_transactions(spec, day), generate_transactions(other, day)
    assert (
        not a["amount"]
        .head(len(b))
        .reset_index(drop=True)
        .equals(b["amount"].head(len(a)).reset_index(drop=True))
    )
    c = generate_transactions(spec, _day(spec, 4))
    assert set(a["transaction_id"]).isdisjoint(c["transaction_id"])


# ---------------------------------------------------------------------------- contract


def test_schema_and_dtypes(spec):
    day = _day(spec, 1)
    tx = generate_transactions(spec, day)
    assert list(tx.columns) == list(TRANSACTION_COLUMNS)
    assert {c: str(t) for c, t in tx.dtypes.items()} == TRANSACTION_COLUMNS
    assert tx["transaction_id"].is_unique
    assert tx["transaction_id"].str.fullmatch(rf"tx-{day:%Y%m%d}-\d{{7}}").all()
    assert tx["customer_id"].str.fullmatch(r"c-\d{5}").all()
    assert tx["merchant_id"].str.fullmatch(r"m-\d{4}").all()
    assert tx["customer_home_country"].str.fullmatch(r"[A-Z]{2}").all()
    assert tx["country"].str.fullmatch(r"[A-Z]{2}").all()
    assert set(tx["channel"]) == {"online", "in_store"}
    assert set(tx["merchant_category"]) <= set(CATEGORIES)
    assert (tx["currency"] == "EUR").all()
    assert (tx["amount"] > 0).all()
    start = pd.Timestamp(day)
    assert tx["event_ts"].between(start, start + pd.Timedelta(days=1), inclusive="left").all()
    store = tx["channel"] == "in_store"
    assert (tx.loc[store, "device_id"] == "pos-" + tx.loc[store, "merchant_id"]).all()
    assert tx.loc[~store, "device_id"].str.fullmatch(r"d-[0-9a-f]{8}").all()
    assert not tx.isna().any().any()


def test_chargeback_schema(spec):
    cb = generate_chargebacks(spec, _day(spec, 4))
    assert len(cb) > 0
    assert list(cb.columns) == list(CHARGEBACK_COLUMNS)
    assert {c: str(t) for c, t in cb.dtypes.items()} == CHARGEBACK_COLUMNS
    assert cb["chargeback_id"].is_unique
    assert (cb["reason_code"] == "fraud").all()


def test_row_count_near_volume(spec):
    counts = [len(generate_transactions(spec, _day(spec, i))) for i in range(7)]
    assert abs(np.mean(counts) / spec.transactions_per_day - 1) < 0.05
    assert all(abs(c / spec.transactions_per_day - 1) < 0.2 for c in counts)


# ---------------------------------------------------------------------------- fraud and labels


def test_fraud_rate_in_range(spec):
    truth = pd.concat([ground_truth(spec, _day(spec, i)) for i in range(N_DAYS)])
    rate = truth["is_fraud"].mean()
    assert 0.6 * spec.fraud_rate < rate < 1.4 * spec.fraud_rate
    assert set(truth.loc[truth["is_fraud"], "mechanism"]) == {
        "card_testing",
        "account_takeover",
        "high_value",
    }
    assert (truth.loc[~truth["is_fraud"], "mechanism"] == "legit").all()


def test_label_delays_and_chargebacks(spec):
    lo, hi = spec.label_delay_days.min, spec.label_delay_days.max
    n_days = N_DAYS + hi
    truth = pd.concat([ground_truth(spec, _day(spec, i)) for i in range(n_days)])
    txs = pd.concat([generate_transactions(spec, _day(spec, i)) for i in range(n_days)])
    frauds = truth[truth["is_fraud"]]
    assert frauds["label_delay_days"].notna().all() and frauds["label_delay_days"].between(lo, hi).all()
    assert truth.loc[~truth["is_fraud"], "label_delay_days"].isna().all()
    assert frauds["label_delay_days"].nunique() == hi - lo + 1, "delays should spread over [min, max]"
    frauds = frauds.merge(txs[["transaction_id", "event_ts"]], on="transaction_id")
    frauds["due"] = frauds["event_ts"].dt.normalize() + pd.to_timedelta(
        frauds["label_delay_days"].astype(int), unit="D"
    )
    delivered = []
    for i in range(n_days):
        day = _day(spec, i)
        cb = generate_chargebacks(spec, day)
        assert (cb["reported_at"].dt.date == day).all()
        delivered.append(cb.assign(delivery_day=pd.Timestamp(day)))
    cbs = pd.concat(delivered).merge(frauds, on="transaction_id", how="left", validate="one_to_one")
    assert cbs["due"].notna().all(), "a chargeback for a transaction that is not a fraud"
    assert (cbs["reported_at"] >= cbs["event_ts"]).all()
    assert (cbs["delivery_day"] == cbs["due"]).all()
    # every fraud whose delay ends inside the simulated horizon is charged back, exactly once
    horizon = pd.Timestamp(_day(spec, n_days))
    assert set(cbs["transaction_id"]) == set(frauds.loc[frauds["due"] < horizon, "transaction_id"])


def test_zero_delay_reported_after_transaction(small_config):
    spec = _spec(small_config, label_delay_days={"min": 0, "max": 0})
    day = _day(spec, 2)
    cb = generate_chargebacks(spec, day).merge(generate_transactions(spec, day), on="transaction_id")
    assert len(cb) == ground_truth(spec, day)["is_fraud"].sum()
    assert (cb["reported_at"] >= cb["event_ts"]).all()


def test_no_chargebacks_before_start(spec):
    assert generate_chargebacks(spec, spec.start_date).empty or spec.label_delay_days.min == 0
    assert list(generate_chargebacks(spec, spec.start_date).columns) == list(CHARGEBACK_COLUMNS)


# ---------------------------------------------------------------------------- scenario knobs


def test_scenario_kinds_documented():
    assert set(SCENARIO_KINDS) == set(get_args(ScenarioKind))
    for kind, info in SCENARIO_KINDS.items():
        assert info["description"] and isinstance(info["params"], dict), kind


def test_unknown_param_is_an_error(small_config, spec):
    bad = _spec(small_config, scenarios=[{"kind": "amount_inflation", "from_day": 0, "params": {"factr": 2}}])
    with pytest.raises(SimulatorError, match="factr"):
        generate_transactions(bad, _day(spec, 0))
