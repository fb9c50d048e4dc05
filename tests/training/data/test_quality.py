"""The GX gate for real: suites from examples/card_fraud/expectations, a file context, Data Docs, DuckDB quarantine.

Batches come from the project's simulator, bad ones through its scenario knobs (the same knobs the
demo uses), so the suites are checked against exactly what the pipeline will see.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from examples.card_fraud import simulator
from training.config import Config, with_overrides
from training.data import quality, suites, validation
from training.paths import StatePaths

DAY0 = dt.date(2026, 1, 1)  # simulator start_date in config/closedloop.yaml


@pytest.fixture(scope="module")
def cfg(base_config: Config) -> Config:
    return with_overrides(
        base_config,
        simulator={"transactions_per_day": 1500, "n_customers": 500, "n_merchants": 80, "fraud_rate": 0.015},
    )


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    """One state dir for the module: the GX context and its Data Docs accumulate like in production."""
    return StatePaths(tmp_path_factory.mktemp("gx-state")).ensure()


def transactions(cfg: Config, day: dt.date, kind: str | None = None, **params) -> pd.DataFrame:
    """The day's feed as ingest lands it (with its `batch_date` bookkeeping column)."""
    if kind:
        cfg = with_overrides(cfg, simulator={"scenarios": [{"kind": kind, "from_day": 0, "params": params}]})
    frame = simulator.generate_transactions(cfg.simulator, day)
    frame["batch_date"] = day
    return frame


def features(raw: pd.DataFrame) -> pd.DataFrame:
    """A clean day of the feature mart, computed by hand from a raw batch (the contract's columns)."""
    df = raw.sort_values("event_ts").reset_index(drop=True)
    out = df[["transaction_id", "customer_id", "event_ts", "batch_date", "channel", "merchant_category",
              "country", "customer_home_country", "amount"]].copy()
    out["country_bucket"] = np.where(df["country"] == df["customer_home_country"], "domestic", "foreign")
    out["log_amount"] = np.log1p(df["amount"])
    out["amount_band"] = pd.cut(df["amount"], [0, 10, 100, 500, np.inf], right=False,
                                labels=["lt_10", "10_100", "100_500", "ge_500"]).astype(str)
    out["hour_of_day"] = df["event_ts"].dt.hour.astype("int32")
    out["is_weekend"] = (df["event_ts"].dt.dayofweek >= 5).astype("int32")
    out["tx_count_24h"] = df.groupby("customer_id").cumcount() + 1
    out["tx_count_1h"] = 1
    out["amount_to_customer_avg"] = df["amount"] / df.groupby("customer_id")["amount"].transform("mean")
    out["is_new_country"] = (~df.duplicated(["customer_id", "country"])).astype("int32")
    out["is_new_device"] = (~df.duplicated(["customer_id", "device_id"])).astype("int32")
    out["category_fraud_rate"] = 0.012
    return out


def rejected(paths: StatePaths, sql: str, params: list) -> list[tuple]:
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


# --------------------------------------------------------------------------------------------
# Clean batches pass
# --------------------------------------------------------------------------------------------


def test_clean_raw_batch_passes_and_builds_data_docs(cfg: Config, paths: StatePaths) -> None:
    day = DAY0 + dt.timedelta(days=6)
    df = transactions(cfg, day)
    result = quality.gate("raw_transactions", df, day, paths)

    assert result.success and result.failed == []
    n_expectations = len(suites.resolve_suite("raw_transactions", cfg.contract)["expectations"])
    assert result.evaluated == n_expectations == result.statistics["successful_expectations"]
    assert result.batch_id == f"raw_transactions/{day}"
    assert result.row_count == len(df)
    assert Path(result.data_docs_path).name == "index.html" and Path(result.data_docs_path).is_file()
    assert result.data_docs_page and Path(result.data_docs_page).is_file()
    assert json.loads(json.dumps(result.to_xcom()))["failed_count"] == 0
    # a pass leaves no trace in quarantine: on this fresh state dir (the module's first gate) nothing
    # is written under the quarantine folder and the warehouse, where its tables live, is not even created
    assert not any(paths.quarantine.iterdir())
    assert not paths.warehouse.exists()


def test_clean_feature_day_passes(cfg: Config, paths: StatePaths) -> None:
    day = DAY0 + dt.timedelta(days=6)
    result = validation.run_checkpoint(
        "ml_transaction_features", features(transactions(cfg, day)), f"ml_transaction_features/{day}", paths,
        batch_date=day,
    )
    assert result.success, result.describe_failures()


def test_clean_chargeback_day_passes(cfg: Config, paths: StatePaths) -> None:
    day = DAY0 + dt.timedelta(days=9)
    frame = simulator.generate_chargebacks(cfg.simulator, day)
    frame["batch_date"] = day
    assert len(frame) > 0
    result = quality.gate("raw_chargebacks", frame, day, paths)
    assert result.success, result.describe_failures()


# --------------------------------------------------------------------------------------------
# Every bad-batch kind fails, names the expectation and the batch, and lands in quarantine
# --------------------------------------------------------------------------------------------

BAD_BATCHES = [
    # kind, knob params, expected message fragments
    ("missing_column", {"column": "merchant_category"},
     ["expect_table_columns_to_match_set (missing: merchant_category)"]),
    ("renamed_column", {"column": "amount", "new_name": "amt"},
     ["expect_table_columns_to_match_set (missing: amount; unexpected: amt)"]),
    ("type_change", {"column": "amount"},
     ["expect_column_values_to_be_in_type_list(amount: dtype object"]),
    ("null_burst", {"column": "customer_id", "fraction": 0.3},
     ["expect_column_values_to_not_be_null(customer_id: "]),
    ("duplicate_delivery", {}, ["expect_column_values_to_be_unique(transaction_id: {half} duplicates)"]),
    ("amounts_in_cents", {}, ["expect_column_median_to_be_between(amount: observed"]),
    ("future_timestamps", {"fraction": 0.2, "min_days": 1, "max_days": 30},
     ["expect_column_values_to_be_between(event_ts: "]),
    ("empty_batch", {}, ["expect_table_row_count_to_be_between (0 rows"]),
]


@pytest.mark.parametrize(("kind", "params", "fragments"), BAD_BATCHES, ids=[b[0] for b in BAD_BATCHES])
def test_bad_batch_fails_names_expectation_and_is_quarantined(
    cfg: Config, paths: StatePaths, kind: str, params: dict, fragments: list[str]
) -> None:
    day = DAY0 + dt.timedelta(days=10 + [b[0] for b in BAD_BATCHES].index(kind))
    df = transactions(cfg, day, kind, **params)

    with pytest.raises(quality.DataQualityGateFailed) as info:
        quality.gate("raw_transactions", df, day, paths)

    message = str(info.value)
    assert message.startswith(f"GX gate 'raw_transactions' failed for batch raw_transactions/{day}: ")
    for fragment in fragments:
        assert fragment.format(half=len(df) // 2) in message, message
    assert "Batch quarantined in quarantine.rejected_batches; nothing was published." in message
    result = info.value.result
    assert not result.success and result.failed

    rows = rejected(
        paths,
        "select suite, reason, failed_expectations, row_count, snapshot_path from quarantine.rejected_batches "
        "where batch_date = ? and table_name = 'raw.transactions'",
        [day],
    )
    assert len(rows) == 1
    suite, reason, failed_json, row_count, snapshot = rows[0]
    assert suite == "raw_transactions" and row_count == len(df)
    failed_types = {f["expectation"] for f in json.loads(failed_json)}
    assert failed_types == {f["expectation"] for f in result.failed}
    for f in result.failed:
        assert f["expectation"] in reason
        assert f["guards"], "each failure carries the risk its expectation guards"
    assert len(pd.read_parquet(snapshot)) == len(df)


def test_rejected_rows_are_exactly_the_offending_ids(cfg: Config, paths: StatePaths) -> None:
    day = DAY0 + dt.timedelta(days=30)
    df = transactions(cfg, day, "future_timestamps", fraction=0.1, min_days=1, max_days=5)
    future = set(df.loc[df["event_ts"] >= pd.Timestamp(day + dt.timedelta(days=1)), "transaction_id"])
    assert future and len(future) < len(df)

    with pytest.raises(quality.DataQualityGateFailed):
        quality.gate("raw_transactions", df, day, paths)

    ids = rejected(
        paths,
        "select row_id, expectation from quarantine.rejected_rows where batch_date = ? "
        "and table_name = 'raw.transactions'",
        [day],
    )
    assert {i for i, _ in ids} == future
    assert {e for _, e in ids} == {"expect_column_values_to_be_between"}


def test_requarantine_is_idempotent_and_leaves_other_tables_alone(cfg: Config, paths: StatePaths) -> None:
    day = DAY0 + dt.timedelta(days=31)
    other_day = DAY0 + dt.timedelta(days=32)
    # stand-in for previously published features, plus another batch already in quarantine
    con = duckdb.connect(str(paths.warehouse))
    con.execute("create schema if not exists published")
    con.execute("create or replace table published.transaction_features as "
                "select 'tx-' || i as transaction_id, i * 1.5 as amount from range(50) t(i)")
    con.close()
    with pytest.raises(quality.DataQualityGateFailed):
        quality.gate("raw_transactions", transactions(cfg, other_day, "empty_batch"), other_day, paths)
    before = rejected(paths, "select * from published.transaction_features order by transaction_id", [])

    df = transactions(cfg, day, "duplicate_delivery")
    counts = []
    for _ in range(2):
        with pytest.raises(quality.DataQualityGateFailed):
            quality.gate("raw_transactions", df, day, paths)
        counts.append(rejected(
            paths,
            "select (select count(*) from quarantine.rejected_batches where batch_date = ?), "
            "(select count(*) from quarantine.rejected_rows where batch_date = ?)",
            [day, day],
        )[0])
    assert counts[0] == counts[1] == (1, len(df) // 2)  # one batch row; each duplicated id once
    assert rejected(paths, "select count(*) from quarantine.rejected_batches where batch_date = ?", [other_day]) == [(1,)]
    assert rejected(paths, "select * from published.transaction_features order by transaction_id", []) == before


# --------------------------------------------------------------------------------------------
# Parameters and the feature suite's own risks
# --------------------------------------------------------------------------------------------


def test_min_rows_and_interval_are_run_time_parameters(cfg: Config, paths: StatePaths) -> None:
    day = DAY0 + dt.timedelta(days=6)
    df = transactions(cfg, day)
    short = validation.run_checkpoint("raw_transactions", df, "p", paths, {"min_rows": len(df) + 1}, batch_date=day)
    assert [f["expectation"] for f in short.failed] == ["expect_table_row_count_to_be_between"]

    # an explicit (tz-aware, as Airflow passes it) interval of the previous day rejects every row
    start = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    wrong = validation.run_checkpoint(
        "raw_transactions", df, "p", paths,
        {"interval_start": start, "interval_end": start + dt.timedelta(days=1)}, batch_date=day,
    )
    (failure,) = wrong.failed
    assert failure["column"] == "event_ts" and failure["unexpected_count"] == len(df)

    with pytest.raises(ValueError, match="interval_end"):
        validation.run_checkpoint("raw_transactions", df, "p", paths, {"interval_start": start, "interval_end": start})
    with pytest.raises(ValueError, match="required"):
        validation.run_checkpoint("raw_transactions", df, "p", paths)


def test_feature_gate_catches_leakage_and_broken_features(cfg: Config, paths: StatePaths) -> None:
    """Five independent breakages in one day: each must be reported on its own (one run keeps it fast)."""
    day = DAY0 + dt.timedelta(days=7)
    df = features(transactions(cfg, day))
    df["is_fraud"] = 0  # label leaking into the feature table
    df.loc[df.index[:5], "category_fraud_rate"] = 1.7
    df["tx_count_1h"] = df["tx_count_1h"].astype("float64")
    df.loc[df.index[5:8], "tx_count_1h"] = np.nan
    df["is_new_device"] = df["is_new_device"] * 2
    df.loc[df.index[10:14], "tx_count_1h"] = df.loc[df.index[10:14], "tx_count_24h"] + 1

    with pytest.raises(quality.DataQualityGateFailed) as info:
        quality.gate("ml_transaction_features", df, day, paths)
    message = str(info.value)
    assert f"failed for batch ml_transaction_features/{day}: 5 of " in message, message
    for expected in [
        "expect_table_columns_to_match_set (unexpected: is_fraud)",
        "expect_column_values_to_be_between(category_fraud_rate: 5 values outside [0.0, 1.0]",
        "expect_column_values_to_not_be_null(tx_count_1h: 3 nulls",
        "expect_column_values_to_be_in_set(is_new_device: ",
        "expect_column_pair_values_a_to_be_greater_than_b(tx_count_24h,tx_count_1h: 4 values",
    ]:
        assert expected in message, message
    rows = rejected(
        paths,
        "select expectation, count(*) from quarantine.rejected_rows where batch_date = ? and table_name = ? "
        "group by 1",
        [day, "ml.ml_transaction_features"],
    )
    assert dict(rows)["expect_column_values_to_be_between"] == 5
    assert dict(rows)["expect_column_values_to_not_be_null"] == 3
