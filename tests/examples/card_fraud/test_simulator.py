"""The simulated source system: deterministic, on contract, with learnable fraud and honest labels."""

from __future__ import annotations

import datetime as dt
import os
from typing import get_args

import numpy as np
import pandas as pd
import pytest

from examples.card_fraud import simulator
from examples.card_fraud.simulator import (
    BAD_BATCH_KINDS,
    CATEGORIES,
    CHARGEBACK_COLUMNS,
    SCENARIO_KINDS,
    TRANSACTION_COLUMNS,
    SimulatorError,
    generate_chargebacks,
    generate_transactions,
    ground_truth,
)
from examples.card_fraud.spec import ScenarioKind, SimulatorSpec
from training.config import Config, with_overrides

N_DAYS = 8


def _spec(cfg: Config, **changes) -> SimulatorSpec:
    return with_overrides(cfg, simulator=changes).simulator if changes else cfg.simulator


def _day(spec: SimulatorSpec, i: int) -> dt.date:
    return spec.start_date + dt.timedelta(days=i)


@pytest.fixture
def spec(small_config: Config) -> SimulatorSpec:
    return small_config.simulator


# ---------------------------------------------------------------------------- determinism


def _fresh(generate, spec: SimulatorSpec, day: dt.date) -> pd.DataFrame:
    """`generate(spec, day)` built anew: the simulator's per-process caches are emptied first.

    Two cached calls return copies of one object, so comparing them would prove nothing.
    """
    for cached in (simulator._population, simulator._clean_day_cached, simulator._fraud_labels):
        cached.cache_clear()
    return generate(spec, day)


def test_same_seed_same_frames(spec):
    day = _day(spec, 3)
    pd.testing.assert_frame_equal(_fresh(generate_transactions, spec, day), _fresh(generate_transactions, spec, day))
    pd.testing.assert_frame_equal(_fresh(generate_chargebacks, spec, day), _fresh(generate_chargebacks, spec, day))
    pd.testing.assert_frame_equal(_fresh(ground_truth, spec, day), _fresh(ground_truth, spec, day))


def test_deterministic_across_cache(spec):
    """A fresh build (no per-process cache) gives the same frame as the cached one."""
    day = _day(spec, 2)
    first = generate_transactions(spec, day)
    pd.testing.assert_frame_equal(first, _fresh(generate_transactions, spec, day))


_DIGEST_SNIPPET = """
import datetime as dt, sys
import pandas as pd
from examples.card_fraud.spec import SimulatorSpec
from examples.card_fraud.simulator import generate_chargebacks, generate_transactions
spec = SimulatorSpec.model_validate_json(sys.argv[1])
day = dt.date.fromisoformat(sys.argv[2])
for frame in (generate_transactions(spec, day), generate_chargebacks(spec, day)):
    print(int(pd.util.hash_pandas_object(frame, index=True).sum()))
"""


def _digest(spec: SimulatorSpec, day: dt.date) -> list[str]:
    return [
        str(int(pd.util.hash_pandas_object(f, index=True).sum()))
        for f in (generate_transactions(spec, day), generate_chargebacks(spec, day))
    ]


def test_deterministic_across_processes(spec):
    """Airflow runs each task in a fresh process (and hash seed): the feed must not change."""
    import subprocess
    import sys

    day = _day(spec, 5)
    out = subprocess.run(
        [sys.executable, "-c", _DIGEST_SNIPPET, spec.model_dump_json(), day.isoformat()],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert out.stdout.split() == _digest(spec, day)


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


def _with(cfg: Config, kind: str, from_day: int = 2, until_day: int | None = 4, **params) -> SimulatorSpec:
    scenario = {"kind": kind, "from_day": from_day, "until_day": until_day, "params": params}
    return _spec(cfg, scenarios=[scenario])


def _window_days(spec: SimulatorSpec) -> tuple[list[dt.date], list[dt.date]]:
    """(inactive days, active days) for a knob with from_day=2, until_day=4."""
    return [_day(spec, 1), _day(spec, 4)], [_day(spec, 2), _day(spec, 3)]


def test_amount_inflation_scales_amounts_only_while_active(small_config, spec):
    knob = _with(small_config, "amount_inflation", factor=2.0)
    off, on = _window_days(spec)
    for day in off:
        pd.testing.assert_frame_equal(generate_transactions(knob, day), generate_transactions(spec, day))
    for day in on:
        clean, shifted = generate_transactions(spec, day), generate_transactions(knob, day)
        np.testing.assert_allclose(shifted["amount"], 2.0 * clean["amount"], atol=0.011)
        pd.testing.assert_frame_equal(shifted.drop(columns="amount"), clean.drop(columns="amount"))
        pd.testing.assert_frame_equal(ground_truth(knob, day), ground_truth(spec, day))


def test_weekly_seasonality_doubles_weekend_volume_and_lifts_weekend_amounts(small_config, spec):
    knob = _with(small_config, "weekly_seasonality", from_day=0, until_day=None)
    days = [_day(spec, i) for i in range(7)]
    n = {d: len(generate_transactions(knob, d)) for d in days}
    weekend = [d for d in days if d.weekday() >= 5]
    weekdays = [d for d in days if d.weekday() < 5]
    assert 1.8 < np.mean([n[d] for d in weekend]) / np.mean([n[d] for d in weekdays]) < 2.2
    for d in days:  # same world otherwise: weekday rows and every day's fraud labels are untouched
        clean, seasonal = generate_transactions(spec, d), generate_transactions(knob, d)
        if d.weekday() < 5:
            ratio = seasonal["amount"].median() / clean["amount"].median()
            assert abs(ratio - 1) < 0.1, (d, ratio)
        else:
            assert 1.1 < seasonal["amount"].median() / clean["amount"].median() < 1.3
    again = {d: len(generate_transactions(knob, d)) for d in days}
    assert again == n  # deterministic


def test_gradual_amount_drift_adds_3_percent_a_day(small_config, spec):
    knob = _with(small_config, "gradual_amount_drift", from_day=2, until_day=None)
    pd.testing.assert_frame_equal(generate_transactions(knob, _day(spec, 1)), generate_transactions(spec, _day(spec, 1)))
    for i, k in ((2, 1), (3, 2), (6, 5)):
        clean, drifted = generate_transactions(spec, _day(spec, i)), generate_transactions(knob, _day(spec, i))
        np.testing.assert_allclose(drifted["amount"], (1 + 0.03 * k) * clean["amount"], atol=0.011)
        pd.testing.assert_frame_equal(ground_truth(knob, _day(spec, i)), ground_truth(spec, _day(spec, i)))
    bad = _with(small_config, "gradual_amount_drift", from_day=0, until_day=None, daily_rate=-0.5)
    with pytest.raises(SimulatorError, match="makes amounts <= 0"):
        generate_transactions(bad, _day(spec, 3))


def test_new_merchant_category_appears(small_config, spec):
    knob = _with(small_config, "new_merchant_category")
    off, on = _window_days(spec)
    for day in off:
        assert "crypto_exchange" not in set(generate_transactions(knob, day)["merchant_category"])
    known_merchants = set(generate_transactions(spec, _day(spec, 2))["merchant_id"])
    for day in on:
        tx = generate_transactions(knob, day)
        new = tx[tx["merchant_category"] == "crypto_exchange"]
        assert 0.10 < len(new) / len(tx) < 0.20
        assert set(new["merchant_id"]).isdisjoint(known_merchants)
        store = new["channel"] == "in_store"
        assert (new.loc[store, "device_id"] == "pos-" + new.loc[store, "merchant_id"]).all()
        assert new["amount"].median() > 2 * tx.loc[tx.index.difference(new.index), "amount"].median()


def test_channel_mix_moves_online_share(small_config, spec):
    knob = _with(small_config, "channel_mix", online_share=0.85)
    off, on = _window_days(spec)
    for day in off:
        assert (generate_transactions(knob, day)["channel"] == "online").mean() < 0.6
    for day in on:
        assert (generate_transactions(knob, day)["channel"] == "online").mean() == pytest.approx(
            0.85, abs=0.04
        )


def test_fraud_mechanism_shift_is_concept_drift(small_config, spec):
    knob = _with(small_config, "fraud_mechanism_shift", from_day=2, until_day=None)
    before = ground_truth(knob, _day(spec, 1))
    assert "merchant_collusion" not in set(before["mechanism"])
    days = [_day(spec, i) for i in range(2, 6)]
    truth = pd.concat([ground_truth(knob, d) for d in days])
    tx = pd.concat([generate_transactions(knob, d) for d in days]).merge(truth, on="transaction_id")
    frauds = tx[tx["is_fraud"]]
    assert (frauds["mechanism"] == "merchant_collusion").mean() > 0.8
    assert 0.6 * spec.fraud_rate < tx["is_fraud"].mean() < 1.4 * spec.fraud_rate
    collusion = frauds[frauds["mechanism"] == "merchant_collusion"]
    assert (collusion["channel"] == "in_store").all()
    assert (collusion["country"] == collusion["customer_home_country"]).all()
    assert collusion["merchant_id"].nunique() <= 0.1 * spec.n_merchants
    # the feature distributions barely move: only delayed labels reveal the shift
    clean = pd.concat([generate_transactions(spec, d) for d in days])
    for col in ("channel", "merchant_category"):
        shares = pd.concat(
            [clean[col].value_counts(normalize=True), tx[col].value_counts(normalize=True)], axis=1
        ).fillna(0)
        assert (shares.iloc[:, 0] - shares.iloc[:, 1]).abs().max() < 0.03, col
    assert np.log(tx["amount"]).mean() == pytest.approx(np.log(clean["amount"]).mean(), abs=0.05)
    # and the labels still arrive as chargebacks
    delivered = pd.concat(
        [generate_chargebacks(knob, _day(spec, i)) for i in range(3, 6 + knob.label_delay_days.max)]
    )
    assert set(collusion["transaction_id"]) <= set(delivered["transaction_id"])


def test_fraud_mechanism_shift_rejects_unknown_target(small_config, spec):
    knob = _with(small_config, "fraud_mechanism_shift", to="telepathy")
    with pytest.raises(SimulatorError, match="telepathy"):
        generate_transactions(knob, _day(spec, 2))


BAD_BATCHES = [
    "missing_column",
    "renamed_column",
    "type_change",
    "null_burst",
    "duplicate_delivery",
    "amounts_in_cents",
    "future_timestamps",
    "empty_batch",
]


def test_bad_batch_kinds_listed():
    assert set(BAD_BATCH_KINDS) == set(BAD_BATCHES)


def _check_bad_batch(kind: str, bad: pd.DataFrame, clean: pd.DataFrame, day: dt.date) -> None:
    if kind == "missing_column":
        assert list(bad.columns) == [c for c in clean.columns if c != "merchant_category"]
    elif kind == "renamed_column":
        assert "amount" not in bad.columns and "amt" in bad.columns
        np.testing.assert_array_equal(bad["amt"], clean["amount"])
    elif kind == "type_change":
        assert bad["amount"].dtype == object
        assert bad["amount"].str.fullmatch(r"\d+\.\d{2} EUR").all()
        np.testing.assert_allclose(bad["amount"].str.removesuffix(" EUR").astype(float), clean["amount"])
    elif kind == "null_burst":
        assert bad["customer_id"].isna().mean() == pytest.approx(0.3, abs=0.05)
        assert bad.drop(columns="customer_id").notna().all().all()
    elif kind == "duplicate_delivery":
        assert len(bad) == 2 * len(clean)
        assert (bad["transaction_id"].value_counts() == 2).all()
    elif kind == "amounts_in_cents":
        np.testing.assert_allclose(bad["amount"], 100 * clean["amount"], atol=0.5)
    elif kind == "future_timestamps":
        future = bad["event_ts"] >= pd.Timestamp(day + dt.timedelta(days=1))
        assert future.mean() == pytest.approx(0.2, abs=0.05)
        assert (bad.loc[~future, "event_ts"] == clean.loc[~future, "event_ts"]).all()
    elif kind == "empty_batch":
        assert bad.empty and list(bad.columns) == list(clean.columns)
    else:  # pragma: no cover
        raise AssertionError(f"no check for {kind}")


@pytest.mark.parametrize("kind", BAD_BATCHES)
def test_bad_batch_breaks_feed_but_not_labels(small_config, spec, kind):
    assert SCENARIO_KINDS[kind]["family"] == "bad_batch"
    knob = _with(small_config, kind)
    off, on = _window_days(spec)
    for day in off:
        pd.testing.assert_frame_equal(generate_transactions(knob, day), generate_transactions(spec, day))
    for day in on:
        clean, bad = generate_transactions(spec, day), generate_transactions(knob, day)
        assert not bad.equals(clean)
        _check_bad_batch(kind, bad, clean, day)
        pd.testing.assert_frame_equal(ground_truth(knob, day), ground_truth(spec, day))
    for i in range(2, 2 + knob.label_delay_days.max + 2):
        day = _day(spec, i)
        pd.testing.assert_frame_equal(generate_chargebacks(knob, day), generate_chargebacks(spec, day))


def test_bad_batch_on_unknown_column_says_so(small_config, spec):
    knob = _with(small_config, "null_burst", column="nope")
    with pytest.raises(SimulatorError, match="nope"):
        generate_transactions(knob, _day(spec, 2))


def test_clean_path_when_no_scenario_active(small_config, spec):
    """Scenarios outside their window leave the feed byte-identical to the no-scenario spec."""
    everything = _spec(
        small_config,
        scenarios=[{"kind": k, "from_day": 50, "params": {}} for k in SCENARIO_KINDS],
    )
    for i in (0, 3):
        day = _day(spec, i)
        pd.testing.assert_frame_equal(
            generate_transactions(everything, day), generate_transactions(spec, day)
        )
        pd.testing.assert_frame_equal(generate_chargebacks(everything, day), generate_chargebacks(spec, day))


# ---------------------------------------------------------------------------- realism


#: the same small world as the `small_config` fixture, for module-scoped fixtures
HISTORY_SIMULATOR = {
    "transactions_per_day": 3000,
    "n_customers": 800,
    "n_merchants": 120,
    "fraud_rate": 0.015,
}


@pytest.fixture(scope="module")
def history(base_config: Config) -> pd.DataFrame:
    """Ten days of a small world joined with the truth (module-scoped: built once)."""
    spec = with_overrides(base_config, simulator=HISTORY_SIMULATOR).simulator
    frames = []
    for i in range(10):
        day = _day(spec, i)
        frames.append(generate_transactions(spec, day).merge(ground_truth(spec, day), on="transaction_id"))
    return pd.concat(frames, ignore_index=True)


def _legit_profile(history: pd.DataFrame) -> pd.DataFrame:
    legit = history[~history["is_fraud"]]
    return legit.groupby("customer_id").agg(
        typical=("amount", "median"), devices=("device_id", lambda s: set(s))
    )


def test_card_testing_signature(history):
    ct = history[history["mechanism"] == "card_testing"]
    assert len(ct) > 0
    assert (ct["amount"] < 5).all() and (ct["channel"] == "online").all()
    assert set(ct["merchant_category"]) <= {"digital_goods", "gaming"}
    bursts = ct.groupby(["customer_id", "merchant_id", ct["event_ts"].dt.date])["event_ts"].agg(
        ["count", "min", "max"]
    )
    assert (bursts["count"] >= 2).all()
    assert ((bursts["max"] - bursts["min"]) < pd.Timedelta(minutes=30)).all()


def test_account_takeover_signature(history):
    ato = history[history["mechanism"] == "account_takeover"].join(_legit_profile(history), on="customer_id")
    assert len(ato) > 0
    assert (ato["channel"] == "online").all()
    assert (ato["country"] != ato["customer_home_country"]).mean() > 0.6
    known = ato.apply(lambda r: isinstance(r["devices"], set) and r["device_id"] in r["devices"], axis=1)
    assert not known.any(), "account takeover must come from a device the customer never used"
    assert (ato["amount"] > ato["typical"]).mean() > 0.85


def test_high_value_signature(history):
    hv = history[history["mechanism"] == "high_value"].join(_legit_profile(history), on="customer_id")
    assert len(hv) > 0
    assert set(hv["merchant_category"]) <= {"electronics", "jewelry"}
    assert (hv["amount"] > 3 * hv["typical"]).mean() > 0.85


def test_legit_behaviour_overlaps_fraud_signals(history):
    """Fraud signals must not be perfect: legit customers travel, change phones, buy big."""
    legit = history[~history["is_fraud"]].join(_legit_profile(history)[["typical"]], on="customer_id")
    online = legit[legit["channel"] == "online"]
    assert 0.01 < (legit["country"] != legit["customer_home_country"]).mean() < 0.1
    first_use = ~online.duplicated(["customer_id", "device_id"]) & (
        online["event_ts"] > online["event_ts"].min() + pd.Timedelta(days=3)
    )
    assert first_use.mean() > 0.01, "legit customers should sometimes use a new device"
    big = legit["merchant_category"].isin(["electronics", "jewelry"]) & (
        legit["amount"] > 3 * legit["typical"]
    )
    assert big.sum() > 20
    assert (legit["amount"] < 5).mean() > 0.01


def test_daily_and_weekly_rhythm(history):
    hours = history["event_ts"].dt.hour
    assert (hours.between(2, 4)).mean() < 0.5 * (hours.between(17, 19)).mean()
    per_day = history.groupby(history["event_ts"].dt.date).size()
    weekend = np.array([d.weekday() >= 5 for d in per_day.index])
    assert per_day[weekend].mean() > 1.08 * per_day[~weekend].mean()


def _point_in_time_features(history: pd.DataFrame) -> pd.DataFrame:
    """Roughly the dbt mart's features (docs/contracts.md), computed from the raw columns only."""
    import duckdb

    with duckdb.connect() as con:
        con.register("tx", history.drop(columns=["mechanism", "label_delay_days"]))
        feats = con.sql(
            """
            select *,
              ln(amount) as log_amount,
              hour(event_ts) as hour_of_day,
              (channel = 'online')::int as is_online,
              count(*) over (partition by customer_id order by event_ts
                             range between interval 1 hour preceding and current row) as tx_count_1h,
              count(*) over (partition by customer_id order by event_ts
                             range between interval 24 hour preceding and current row) as tx_count_24h,
              coalesce(amount / avg(amount) over (partition by customer_id order by event_ts
                             rows between unbounded preceding and 1 preceding), 1) as amount_to_customer_avg,
              (row_number() over (partition by customer_id, country order by event_ts) = 1)::int
                as is_new_country,
              (row_number() over (partition by customer_id, device_id order by event_ts) = 1)::int
                as is_new_device
            from tx
            """
        ).df()
    return pd.get_dummies(feats, columns=["merchant_category"], dtype=int)


def test_fraud_is_learnable_but_not_trivially(history):
    """A small model on the raw columns' point-in-time features beats chance by far, yet not perfectly."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import average_precision_score
    from threadpoolctl import threadpool_limits

    feats = _point_in_time_features(history)
    x_cols = [
        "amount",
        "log_amount",
        "hour_of_day",
        "is_online",
        "tx_count_1h",
        "tx_count_24h",
        "amount_to_customer_avg",
        "is_new_country",
        "is_new_device",
        *[c for c in feats.columns if c.startswith("merchant_category_")],
    ]
    day = feats["event_ts"].dt.normalize()
    start = day.min()
    train = feats[(day >= start + pd.Timedelta(days=3)) & (day < start + pd.Timedelta(days=7))]
    test = feats[day >= start + pd.Timedelta(days=7)]
    model = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, random_state=0)
    with threadpool_limits(1):  # OpenMP threads on a busy 2-core box are ~100x slower than one
        model.fit(train[x_cols], train["is_fraud"])
        scores = model.predict_proba(test[x_cols])[:, 1]
    pr_auc = average_precision_score(test["is_fraud"], scores)
    base_rate = test["is_fraud"].mean()
    assert 0.3 < pr_auc < 0.97, f"PR-AUC {pr_auc:.3f} (base rate {base_rate:.3f})"


# ---------------------------------------------------------------------------- issue 19's worlds


def test_holiday_triples_volume_and_lifts_amounts_only_while_active(small_config, spec):
    knob = _with(small_config, "holiday")
    off, on = _window_days(spec)
    for day in off:
        pd.testing.assert_frame_equal(generate_transactions(knob, day), generate_transactions(spec, day))
    for day in on:
        clean, busy = generate_transactions(spec, day), generate_transactions(knob, day)
        assert 2.7 < len(busy) / len(clean) < 3.3
        assert 1.3 < busy["amount"].median() / clean["amount"].median() < 1.7


def test_label_delay_change_only_delays_the_chargebacks(small_config, spec):
    knob = _with(small_config, "label_delay_change", from_day=0, until_day=None, factor=2.0)
    day = _day(spec, 3)
    pd.testing.assert_frame_equal(generate_transactions(knob, day), generate_transactions(spec, day))
    clean, late = ground_truth(spec, day), ground_truth(knob, day)
    assert late["is_fraud"].equals(clean["is_fraud"])
    frauds = clean["is_fraud"].to_numpy(bool)
    np.testing.assert_array_equal(
        late["label_delay_days"].to_numpy()[frauds], 2 * clean["label_delay_days"].to_numpy()[frauds]
    )
    # every fraud is still delivered, once, on its stretched day
    delivered = pd.concat([generate_chargebacks(knob, _day(spec, i)) for i in range(4, 3 + 11)])
    assert set(delivered["transaction_id"]) >= set(late.loc[frauds, "transaction_id"])


def test_fraud_rate_change_multiplies_fraud_not_its_mechanisms(small_config, spec):
    knob = _with(small_config, "fraud_rate_change", from_day=0, until_day=None, factor=3.0)
    days = [_day(spec, i) for i in range(4)]
    clean = pd.concat([ground_truth(spec, d) for d in days])
    more = pd.concat([ground_truth(knob, d) for d in days])
    assert 2.3 < more["is_fraud"].mean() / clean["is_fraud"].mean() < 3.7
    share = lambda t: t.loc[t.is_fraud, "mechanism"].value_counts(normalize=True)  # noqa: E731
    assert (share(more) - share(clean)).abs().max() < 0.15
    bad = _with(small_config, "fraud_rate_change", from_day=0, until_day=None, factor=1000.0)
    with pytest.raises(SimulatorError, match="below 0.5"):
        generate_transactions(bad, _day(spec, 1))
