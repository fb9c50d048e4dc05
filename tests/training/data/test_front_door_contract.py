"""The front door and dbt agree by construction: the raw checks are the contract's rules, dbt's staging
tests are checked against the same rules, so a row dbt would refuse never gets past the door.

The case from issue 16: one null `merchant_category` in a day of transactions used to pass the raw
gate (its check allowed 1 % nulls) and then fail dbt's `not_null` test on that day and every later
clean day, with a message naming no day, row or fix. Here it runs for real (GX, DuckDB, dbt).
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from training.config import Config, with_overrides
from training.data import admission, ingest
from training.data.dbt import DbtError, run_dbt
from training.data.ingest import LandedBatch
from training.data.quality import DataQualityGateFailed
from training.paths import StatePaths
from training.storage import warehouse

NO_UNIT_TESTS = {"CLOSEDLOOP_DBT_UNIT_TESTS": "false"}


@pytest.fixture
def cfg(small_config: Config) -> Config:
    return with_overrides(small_config, simulator={"transactions_per_day": 2000, "n_customers": 400})


def _day(cfg: Config, i: int) -> dt.date:
    return cfg.start_date + dt.timedelta(days=i)


def _with_events(batch: LandedBatch, frame: pd.DataFrame, suffix: str = "edited") -> LandedBatch:
    path = Path(batch.events.path).with_name(Path(batch.events.path).stem + f".{suffix}.parquet")
    frame.to_parquet(path, index=False)
    return replace(batch, events=replace(batch.events, path=str(path), rows=len(frame)))


def _with_labels(batch: LandedBatch, frame: pd.DataFrame) -> LandedBatch:
    path = Path(batch.labels.path).with_name(Path(batch.labels.path).stem + ".edited.parquet")
    frame.to_parquet(path, index=False)
    return replace(batch, labels=replace(batch.labels, path=str(path), rows=len(frame)))


def _admit_and_load(paths: StatePaths, cfg: Config, batch: LandedBatch) -> admission.Admission:
    result = admission.admit(paths, cfg, batch)
    ingest.load_raw(paths, result.batch, contract=cfg.contract)
    return result


@pytest.mark.timeout(900)
def test_one_null_merchant_category_is_quarantined_at_the_door_and_no_day_is_blocked(state, cfg, tmp_path):
    first = _day(cfg, 0)
    _admit_and_load(state, cfg, ingest.land(state, cfg, first))

    # day 2: one row without merchant_category (well under the 1 % the old raw check let through)
    day = _day(cfg, 1)
    batch = ingest.land(state, cfg, day)
    tx = ingest.read_landed(batch.events)
    bad_id = str(tx["transaction_id"].iloc[17])
    tx.loc[17, "merchant_category"] = None
    result = _admit_and_load(state, cfg, _with_events(batch, tx))

    verdict = result.feeds["transactions"]
    assert (verdict.rejected_rows, verdict.admitted.rows) == (1, len(tx) - 1)
    (warning,) = verdict.warnings
    # the message names the feed, the day, the column, the row and the fix
    for part in (f"transactions feed for {day}", "1 of", "merchant_category", bad_id, "To fix", "re-deliver"):
        assert part in warning, warning
    with warehouse.connect(state, read_only=True) as con:
        rows = con.frame("select table_name, id_column, row_id, expectation from quarantine.rejected_rows "
                         "where batch_date = ?", [day])
        loaded = con.frame("select transaction_id from raw.transactions where batch_date = ?", [day])
    assert rows.to_dict("records") == [{"table_name": "raw.transactions", "id_column": "transaction_id",
                                        "row_id": bad_id, "expectation": "expect_column_values_to_not_be_null"}]
    assert len(loaded) == len(tx) - 1 and bad_id not in set(loaded["transaction_id"])

    # the rest of the day loads and dbt builds (its not_null test has nothing to refuse)
    assert run_dbt(["build"], state, cfg, env=NO_UNIT_TESTS).success

    # the next clean day is not blocked, even with a label for the quarantined row arriving with it:
    # that label is held (it loads when day 2 is re-delivered), the day loads and dbt builds
    nxt = _day(cfg, 2)
    batch = ingest.land(state, cfg, nxt)
    cb = ingest.read_landed(batch.labels)
    late = pd.DataFrame([{"chargeback_id": "cb-late-1", "transaction_id": bad_id,
                          "reported_at": pd.Timestamp(nxt) + pd.Timedelta(hours=3), "reason_code": "fraud"}])
    late["reported_at"] = late["reported_at"].astype(cb["reported_at"].dtype)
    result = _admit_and_load(state, cfg, _with_labels(batch, pd.concat([cb, late], ignore_index=True)))
    assert result.feeds["transactions"].rejected_rows == 0
    assert result.feeds["chargebacks"].rejected_rows == 1
    assert "quarantined batch" in result.feeds["chargebacks"].warnings[0]
    assert run_dbt(["build"], state, cfg, env=NO_UNIT_TESTS).success

    # the door refused exactly what dbt refuses: the same row slipped into raw makes dbt's test fail
    other = StatePaths(tmp_path / "bypass").ensure()
    shutil.copyfile(state.warehouse, other.warehouse)
    with warehouse.transaction(other) as con:
        row = tx.iloc[[17]].assign(batch_date=day, loaded_at=pd.Timestamp("2026-03-01"))
        con.insert_frame("raw.transactions", row)
    with pytest.raises(DbtError) as err:
        run_dbt(["build", "--select", "stg_raw__transactions"], other, cfg, env=NO_UNIT_TESTS)
    assert any("not_null_stg_raw__transactions_merchant_category" in n for n in err.value.failed_nodes)


def test_a_file_missing_a_contract_column_is_refused_naming_file_column_and_fix(state, cfg):
    day = _day(cfg, 0)
    batch = ingest.land(state, cfg, day)
    edited = _with_events(batch, ingest.read_landed(batch.events).drop(columns=["merchant_category"]))
    with pytest.raises(DataQualityGateFailed) as err:
        admission.admit(state, cfg, edited)
    msg = str(err.value)
    for part in (f"transactions feed for {day} was refused", "missing: merchant_category", edited.events.path,
                 "contract.events.columns", "check-contract"):
        assert part in msg, msg

    # ingest, if handed such a file, says the same instead of failing inside the Parquet reader
    with pytest.raises(ingest.ContractMismatch) as err:
        ingest.load_raw(state, edited, contract=cfg.contract)
    msg = str(err.value)
    assert edited.events.path in msg and "merchant_category" in msg and "contract.events.columns" in msg


def test_a_column_of_the_wrong_type_is_refused_naming_the_column(state, cfg):
    day = _day(cfg, 0)
    batch = ingest.land(state, cfg, day)
    tx = ingest.read_landed(batch.events)
    tx["amount"] = tx["amount"].map(lambda v: f"{v:.2f} EUR")
    with pytest.raises(DataQualityGateFailed) as err:
        admission.admit(state, cfg, _with_events(batch, tx))
    msg = str(err.value)
    assert "expect_column_values_to_be_in_type_list(amount: dtype object" in msg and "contract.events.columns" in msg


def test_the_raw_tables_are_created_from_the_contract(state, cfg):
    day = _day(cfg, 0)
    _admit_and_load(state, cfg, ingest.land(state, cfg, day))
    with warehouse.connect(state, read_only=True) as con:
        for feed in cfg.contract.feeds.values():
            assert con.columns(feed.raw_table) == [*feed.columns, "batch_date", "loaded_at"]
    assert ingest.raw_columns(cfg.contract) == {
        "transactions": list(cfg.contract.events.columns), "chargebacks": list(cfg.contract.labels.columns)}
    landed = ingest.land(state, cfg, day)
    assert LandedBatch.from_xcom(landed.to_xcom()) == landed
    assert list(landed.feeds) == ["transactions", "chargebacks"]


def test_a_row_without_its_id_is_quarantined_alone_named_by_its_position(state, cfg):
    day = _day(cfg, 0)
    batch = ingest.land(state, cfg, day)
    tx = ingest.read_landed(batch.events)
    tx.loc[5, "transaction_id"] = None
    result = _admit_and_load(state, cfg, _with_events(batch, tx))
    verdict = result.feeds["transactions"]
    assert (verdict.rejected_rows, verdict.admitted.rows) == (1, len(tx) - 1)
    assert "(no transaction_id: row 5 of the file)" in verdict.warnings[0]
    with warehouse.connect(state, read_only=True) as con:
        rows = con.frame("select row_id, expectation from quarantine.rejected_rows where batch_date = ?", [day])
        assert con.scalar("select count(*) from raw.transactions where transaction_id is null") == 0
    assert rows.to_dict("records") == [
        {"row_id": "(no transaction_id: row 5 of the file)", "expectation": "expect_column_values_to_not_be_null"}]


def test_a_raw_table_created_from_an_older_contract_is_named_with_its_fix(state, cfg):
    from training.data import contract_check

    batch = ingest.land(state, cfg, _day(cfg, 0))
    with warehouse.transaction(state, ddl=("create schema if not exists raw",)) as con:
        con.execute("create table raw.transactions (transaction_id varchar, amount varchar, "
                    "batch_date date, loaded_at timestamp)")
    with pytest.raises(ingest.ContractMismatch, match="raw.transactions has no column event_ts, customer_id"):
        ingest.load_raw(state, batch, contract=cfg.contract)
    lines = [m.line() for m in contract_check.check_warehouse(cfg.contract, state)]
    assert any("raw.transactions.event_ts" in line and "alter table raw.transactions add column event_ts timestamp"
               in line for line in lines), lines
    assert any("raw.transactions.amount" in line and "declared as VARCHAR" in line for line in lines), lines
