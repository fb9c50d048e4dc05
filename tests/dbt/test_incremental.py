"""Incremental marts equal a full refresh, row for row, on both warehouses.

Days are built one dbt run each (`rebuild_from` = the day, as the pipeline passes it), then an
earlier day is re-delivered with other rows (a backfill/correction) and rebuilt from that day on;
the result must equal `--full-refresh` over the same raw rows, to the bit. Short windows (3-day amount average,
2-day label maturity, 3-day category window) make six days exercise every state path: the window
edge day, the full-day sums, first-seen pairs, the category rate's label placement, the labels and
the training set's matured partitions (and the labels the re-delivery withdraws).
"""

from __future__ import annotations

import datetime as dt
import io

import duckdb
import numpy as np
import pandas as pd
import pytest

from examples.card_fraud import simulator
from tests.conftest import PG_SERVER
from tests.dbt.conftest import load_raw_batch
from training.config import Config, with_overrides
from training.data.dbt import run_dbt
from training.paths import StatePaths

N_DAYS = 6
# index of the day re-delivered after all days were built: late enough that the training set (2-day
# maturity) keeps its first partition from the daily runs, so those are compared too
BACKFILLED = 3
SHORT_WINDOWS = {"customer_amount_window_days": 3, "category_fraud_rate_window_days": 3}
MODELS = ["--select", "+ml_training_set"]
MARTS = ["ml.ml_transaction_features", "intermediate.int_category_fraud_rates_daily", "ml.ml_training_set",
         "intermediate.int_transaction_labels"]
FLOATS = {"amount", "log_amount", "amount_to_customer_avg", "category_fraud_rate", "global_fraud_rate"}


@pytest.fixture(scope="module")
def small_config(dbt_config: Config) -> Config:
    cfg = with_overrides(dbt_config, simulator={"transactions_per_day": 800, "n_customers": 150})
    return cfg.model_copy(update={"windows": cfg.windows.model_copy(update={"label_maturity_days": 2})})


def _days(cfg: Config) -> list[dt.date]:
    return [cfg.simulator.start_date + dt.timedelta(days=i) for i in range(N_DAYS)]


def _feeds(cfg: Config, day: dt.date, corrected: bool = False) -> dict[str, pd.DataFrame]:
    tx = simulator.generate_transactions(cfg.simulator, day)
    cb = simulator.generate_chargebacks(cfg.simulator, day)
    if corrected:  # the re-delivery drops a tenth of the rows and changes some amounts
        tx = tx.drop(tx.index[::10]).copy()
        tx.loc[tx.index[::7], "amount"] = tx.loc[tx.index[::7], "amount"] * 3
        cb = cb[cb["transaction_id"].isin(tx["transaction_id"])]
    return {"transactions": tx, "chargebacks": cb}


class DuckWarehouse:
    def __init__(self, paths: StatePaths):
        self.paths = paths

    def load(self, day: dt.date, feeds: dict[str, pd.DataFrame]) -> None:
        with duckdb.connect(str(self.paths.warehouse)) as con:
            for table, frame in feeds.items():
                load_raw_batch(con, table, frame, day)

    def read(self, relation: str) -> pd.DataFrame:
        with duckdb.connect(str(self.paths.warehouse), read_only=True) as con:
            return con.execute(f"select * from {relation}").df()

    def dbt(self, cfg: Config, args: list[str], day: dt.date | None) -> None:
        run_dbt(["run", *MODELS, *args], self.paths, cfg, extra_vars=SHORT_WINDOWS, rebuild_from=day)


class PgWarehouse:
    RAW = {
        "transactions": """create table if not exists raw.transactions (
            transaction_id varchar, event_ts timestamp, customer_id varchar, customer_home_country varchar,
            merchant_id varchar, merchant_category varchar, channel varchar, country varchar, device_id varchar,
            amount double precision, currency varchar, batch_date date, loaded_at timestamp)""",
        "chargebacks": """create table if not exists raw.chargebacks (
            chargeback_id varchar, transaction_id varchar, reported_at timestamp, reason_code varchar,
            batch_date date, loaded_at timestamp)""",
    }

    def __init__(self, paths: StatePaths, dbname: str):
        self.paths, self.dbname = paths, dbname

    def _connect(self):
        import psycopg2

        return psycopg2.connect(dbname=self.dbname, connect_timeout=3, **PG_SERVER)

    def load(self, day: dt.date, feeds: dict[str, pd.DataFrame]) -> None:
        with self._connect() as con, con.cursor() as cur:
            cur.execute("create schema if not exists raw")
            for table, frame in feeds.items():
                cur.execute(self.RAW[table])
                cur.execute(f"delete from raw.{table} where batch_date = %s", [day])
                rows = frame.assign(batch_date=day, loaded_at=dt.datetime(2026, 1, 1))
                buf = io.StringIO()
                rows.to_csv(buf, index=False, header=False, date_format="%Y-%m-%d %H:%M:%S.%f")
                buf.seek(0)
                cur.copy_expert(f"copy raw.{table} ({', '.join(rows.columns)}) from stdin with (format csv)", buf)
        con.close()

    def read(self, relation: str) -> pd.DataFrame:
        with self._connect() as con, con.cursor() as cur:
            cur.execute(f"select * from {relation}")
            frame = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
        con.close()
        return frame

    def dbt(self, cfg: Config, args: list[str], day: dt.date | None) -> None:
        run_dbt(["run", *MODELS, *args], self.paths, cfg, target="postgres", extra_vars=SHORT_WINDOWS, rebuild_from=day,
                env={"CLOSEDLOOP_PG_DBNAME": self.dbname})


def _build_incrementally_then_compare(wh, cfg: Config) -> None:
    days = _days(cfg)
    for i, day in enumerate(days):  # day by day, as the pipeline runs them
        wh.load(day, _feeds(cfg, day))
        wh.dbt(cfg, [], day if i else None)
    daily = {m: wh.read(m) for m in MARTS}
    backfilled = days[BACKFILLED]
    wh.load(backfilled, _feeds(cfg, backfilled, corrected=True))
    wh.dbt(cfg, [], backfilled)
    incremental = {m: wh.read(m) for m in MARTS}
    wh.dbt(cfg, ["--full-refresh"], None)
    for mart in MARTS:
        _assert_equal(incremental[mart], wh.read(mart), mart)
    # the backfill really changed the days after it (else the test proves nothing)
    before, after = daily[MARTS[0]], incremental[MARTS[0]]
    later = after["batch_date"].astype(str) > str(backfilled)
    assert later.sum() > 1000
    merged = after[later].merge(before, on="transaction_id", suffixes=("", "_before"))
    assert (~np.isclose(merged["amount_to_customer_avg"], merged["amount_to_customer_avg_before"])).sum() > 10


def _assert_equal(got: pd.DataFrame, want: pd.DataFrame, name: str) -> None:
    assert list(got.columns) == list(want.columns), name
    key = ["transaction_id"] if "transaction_id" in want.columns else ["feature_date", "merchant_category"]
    got = got.sort_values(key).reset_index(drop=True)
    want = want.sort_values(key).reset_index(drop=True)
    assert len(got) == len(want) > 0, name
    for col in want.columns:
        if col in FLOATS:  # bit-identical: a re-run day must re-publish the same bytes
            a, b = got[col].astype(float).to_numpy(), want[col].astype(float).to_numpy()
            np.testing.assert_array_equal(a, b, err_msg=f"{name}.{col}")
            assert a.sum() == b.sum(), f"{name}.{col} sum"
        else:
            assert (got[col].astype(str) == want[col].astype(str)).all(), f"{name}.{col}"


def test_incremental_days_and_backfill_equal_full_refresh_on_duckdb(
    small_config: Config, tmp_path_factory: pytest.TempPathFactory
) -> None:
    paths = StatePaths(tmp_path_factory.mktemp("dbt-incremental")).ensure()
    _build_incrementally_then_compare(DuckWarehouse(paths), small_config)


def test_incremental_days_and_backfill_equal_full_refresh_on_postgres(
    small_config: Config, pg_database_factory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pytest.importorskip("psycopg2")
    paths = StatePaths(tmp_path_factory.mktemp("dbt-incremental-pg")).ensure()
    _build_incrementally_then_compare(PgWarehouse(paths, pg_database_factory("closedloop_dbt_incr")), small_config)
