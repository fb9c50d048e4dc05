"""Fixtures for the dbt tests: simulated days landed into `raw.*`, and one dbt build shared per session.

`load_raw_batch` is a deliberately small stand-in for ingest (training/data/ingest.py owns the real one):
create schema raw, replace the batch_date partition, add batch_date / loaded_at. dbt runs are the
expensive part (~10-20 s each), so the built warehouse is session-scoped and tests that change data
work on a copy of its file.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from examples.card_fraud import simulator
from training.config import Config, load_config, with_overrides
from training.data.dbt import DbtResult, run_dbt
from training.paths import StatePaths

N_DAYS = 10
DBT_SIMULATOR = {
    "transactions_per_day": 2000,
    "n_customers": 400,
    "n_merchants": 80,
    "fraud_rate": 0.015,
}

RAW_DDL = {
    "transactions": """
        create table if not exists raw.transactions (
            transaction_id varchar, event_ts timestamp, customer_id varchar,
            customer_home_country varchar, merchant_id varchar, merchant_category varchar,
            channel varchar, country varchar, device_id varchar, amount double, currency varchar,
            batch_date date, loaded_at timestamp
        )""",
    "chargebacks": """
        create table if not exists raw.chargebacks (
            chargeback_id varchar, transaction_id varchar, reported_at timestamp,
            reason_code varchar, batch_date date, loaded_at timestamp
        )""",
}


def utc_now() -> dt.datetime:
    """Naive UTC wall-clock time, the way ingest stamps `loaded_at`."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def load_raw_batch(
    con: duckdb.DuckDBPyConnection,
    table: str,
    frame: pd.DataFrame,
    batch_date: dt.date,
    loaded_at: dt.datetime | None = None,
) -> int:
    """Replace `raw.<table>`'s partition `batch_date` with `frame` (+ batch_date, loaded_at)."""
    con.execute("create schema if not exists raw")
    con.execute(RAW_DDL[table])
    rows = frame.copy()
    rows["batch_date"] = batch_date
    rows["loaded_at"] = loaded_at or utc_now()
    con.execute(f"delete from raw.{table} where batch_date = ?", [batch_date])
    con.register("batch_frame", rows)
    try:
        cols = ", ".join(rows.columns)
        con.execute(f"insert into raw.{table} ({cols}) select {cols} from batch_frame")
    finally:
        con.unregister("batch_frame")
    return len(rows)


def load_simulated_days(
    paths: StatePaths, cfg: Config, days: list[dt.date], loaded_at: dt.datetime | None = None
) -> None:
    """Land the simulator's transaction and chargeback feeds of `days` into the warehouse."""
    with duckdb.connect(str(paths.warehouse)) as con:
        for day in days:
            load_raw_batch(
                con, "transactions", simulator.generate_transactions(cfg.simulator, day), day, loaded_at
            )
            load_raw_batch(
                con, "chargebacks", simulator.generate_chargebacks(cfg.simulator, day), day, loaded_at
            )


def read_table(paths: StatePaths, relation: str, order_by: str = "transaction_id") -> pd.DataFrame:
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        return con.execute(f"select * from {relation} order by {order_by}").df()


def copy_state(src: StatePaths, root: Path) -> StatePaths:
    """A new state dir whose warehouse is a copy of `src`'s (dbt target/logs start empty)."""
    dst = StatePaths(root).ensure()
    shutil.copyfile(src.warehouse, dst.warehouse)
    return dst


@dataclass(frozen=True)
class BuiltWarehouse:
    paths: StatePaths
    cfg: Config
    days: list[dt.date]
    result: DbtResult

    @property
    def as_of(self) -> dt.datetime:
        """End (exclusive) of the latest loaded batch."""
        return dt.datetime.combine(self.days[-1] + dt.timedelta(days=1), dt.time())


@pytest.fixture(scope="session")
def dbt_config() -> Config:
    return with_overrides(load_config(), simulator=DBT_SIMULATOR)


@pytest.fixture(scope="session")
def built_warehouse(tmp_path_factory: pytest.TempPathFactory, dbt_config: Config) -> BuiltWarehouse:
    """N_DAYS simulated days loaded and `dbt build` run once (models + data_tests + unit_tests)."""
    paths = StatePaths(tmp_path_factory.mktemp("dbt-built")).ensure()
    days = [dbt_config.simulator.start_date + dt.timedelta(days=i) for i in range(N_DAYS)]
    load_simulated_days(paths, dbt_config, days)
    result = run_dbt(["build"], paths, dbt_config)
    return BuiltWarehouse(paths=paths, cfg=dbt_config, days=days, result=result)
