"""No feature of a transaction at time t may use anything that arrived after t.

Two independent proofs on simulated data:
1. Cut the raw feeds at a time t (transactions with event_ts <= t, chargebacks reported <= t),
   rebuild, and every transaction up to t must get exactly the features the full build gave it.
2. Change the label history after a moment T (new chargebacks reported late, existing ones delayed),
   rebuild, and every transaction before T must keep its features while later ones do change
   (so the perturbation is not a no-op).
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest

from tests.dbt.conftest import BuiltWarehouse, copy_state, read_table
from training.data.dbt import run_dbt
from training.paths import StatePaths

FLOAT_FEATURES = ["amount", "log_amount", "amount_to_customer_avg", "category_fraud_rate"]
FEATURES_ONLY = ["--select", "+ml_transaction_features"]


def _assert_same_features(expected: pd.DataFrame, actual: pd.DataFrame) -> None:
    expected = expected.sort_values("transaction_id").reset_index(drop=True)
    actual = actual.sort_values("transaction_id").reset_index(drop=True)
    assert list(actual["transaction_id"]) == list(expected["transaction_id"])
    exact = [c for c in expected.columns if c not in FLOAT_FEATURES]
    pd.testing.assert_frame_equal(actual[exact], expected[exact], check_dtype=False)
    for col in FLOAT_FEATURES:
        np.testing.assert_allclose(
            actual[col].to_numpy(float), expected[col].to_numpy(float), rtol=1e-12, err_msg=col
        )


def test_features_recomputed_from_raw_cut_at_t_are_identical(
    built_warehouse: BuiltWarehouse, tmp_path_factory: pytest.TempPathFactory
) -> None:
    full = read_table(built_warehouse.paths, "ml.ml_transaction_features")
    t = dt.datetime.combine(built_warehouse.days[6], dt.time(13, 37))
    cut = copy_state(built_warehouse.paths, tmp_path_factory.mktemp("dbt-cut"))
    with duckdb.connect(str(cut.warehouse)) as con:
        con.execute("delete from raw.transactions where event_ts > ?", [t])
        con.execute("delete from raw.chargebacks where reported_at > ?", [t])
        kept = con.execute("select count(*) from raw.chargebacks").fetchone()[0]
        # Re-deliver a day's transactions and chargebacks identically in a later batch: staging
        # collapses exact re-deliveries, so this must not change a single feature either.
        con.execute(
            "insert into raw.transactions select * replace (batch_date + 1 as batch_date) "
            "from raw.transactions where batch_date = ?",
            [built_warehouse.days[2]],
        )
        con.execute(
            "insert into raw.chargebacks select * replace (batch_date + 1 as batch_date) "
            "from raw.chargebacks where batch_date = ?",
            [built_warehouse.days[3]],
        )
    assert kept > 0
    run_dbt(["run", *FEATURES_ONLY], cut, built_warehouse.cfg)

    recomputed = read_table(cut, "ml.ml_transaction_features")
    expected = full[full["event_ts"] <= pd.Timestamp(t)]
    assert len(recomputed) == len(expected) > 10_000
    assert (expected["event_ts"] > pd.Timestamp(built_warehouse.days[6])).sum() > 500, (
        "the cut must fall inside a day"
    )
    _assert_same_features(expected, recomputed)


def _perturb_labels(paths: StatePaths, days: list[dt.date]) -> dt.datetime:
    """Change the label history from a moment T on (returned): late chargebacks and delayed ones.

    T is mid-day: a model that used "labels reported by the end of the transaction's day" (or any
    label reported after event_ts) would see the change in the features of that morning.
    """
    changed_from = dt.datetime.combine(days[6], dt.time(12))
    with duckdb.connect(str(paths.warehouse)) as con:
        # (a) 40 legit transactions of the first day - inside the category-rate population of every
        #     day from day 6 on - get a fraud chargeback reported at T.
        con.execute(
            """
            insert into raw.chargebacks
            select 'cb-injected-' || transaction_id, transaction_id, ?, 'fraud', ?, now()::timestamp
            from raw.transactions
            where batch_date = ? and transaction_id not in (select transaction_id from raw.chargebacks)
            order by transaction_id
            limit 40
            """,
            [changed_from, days[6], days[0]],
        )
        # (b) every chargeback reported after T arrives two days later than it did.
        delayed = con.execute(
            "update raw.chargebacks set reported_at = reported_at + interval 2 day "
            "where reported_at > ? and chargeback_id not like 'cb-injected-%'",
            [changed_from],
        ).fetchone()[0]
    assert delayed > 0
    return changed_from


def test_labels_arriving_later_never_change_earlier_features(
    built_warehouse: BuiltWarehouse, tmp_path_factory: pytest.TempPathFactory
) -> None:
    before = read_table(built_warehouse.paths, "ml.ml_transaction_features")
    perturbed = copy_state(built_warehouse.paths, tmp_path_factory.mktemp("dbt-perturbed"))
    changed_from = _perturb_labels(perturbed, built_warehouse.days)
    run_dbt(["run", *FEATURES_ONLY], perturbed, built_warehouse.cfg)
    after = read_table(perturbed, "ml.ml_transaction_features")

    earlier = before["event_ts"] < pd.Timestamp(changed_from)
    assert earlier.sum() > 10_000
    _assert_same_features(before[earlier], after[after["event_ts"] < pd.Timestamp(changed_from)])

    # The perturbation is real: later days see different category fraud rates.
    merged = before.merge(after, on="transaction_id", suffixes=("_before", "_after"))
    later = merged[merged["event_ts_before"] >= pd.Timestamp(built_warehouse.days[8])]
    moved = ~np.isclose(later["category_fraud_rate_before"], later["category_fraud_rate_after"], rtol=1e-9)
    assert moved.mean() > 0.5, "injected labels must reach the category fraud rate of later days"
