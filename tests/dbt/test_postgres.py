"""The same project on PostgreSQL (the services profile): `dbt build` passes into a fresh database and
the features equal the DuckDB build's, so the SQL really is portable."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from tests.conftest import PG_SERVER
from tests.dbt.conftest import BuiltWarehouse, read_table
from training.data.dbt import run_dbt
from training.paths import StatePaths

psycopg2 = pytest.importorskip("psycopg2")

RAW_DDL = [
    "create schema raw",
    """create table raw.transactions (
        transaction_id varchar, event_ts timestamp, customer_id varchar, customer_home_country varchar,
        merchant_id varchar, merchant_category varchar, channel varchar, country varchar,
        device_id varchar, amount double precision, currency varchar, batch_date date, loaded_at timestamp)""",
    """create table raw.chargebacks (
        chargeback_id varchar, transaction_id varchar, reported_at timestamp, reason_code varchar,
        batch_date date, loaded_at timestamp)""",
]


def _connect(dbname: str):
    return psycopg2.connect(dbname=dbname, connect_timeout=3, **PG_SERVER)


@pytest.fixture(scope="module")
def pg_database(pg_database_factory) -> str:
    """A fresh, uniquely named database on the local server, dropped afterwards."""
    return pg_database_factory("closedloop_dbt_test")


def _copy_in(cur, table: str, frame: pd.DataFrame) -> None:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, header=False, date_format="%Y-%m-%d %H:%M:%S.%f")
    buf.seek(0)
    cur.copy_expert(f"copy {table} ({', '.join(frame.columns)}) from stdin with (format csv)", buf)


def test_build_on_postgres_matches_duckdb(
    pg_database: str, built_warehouse: BuiltWarehouse, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The very raw rows the DuckDB build used.
    raw_tx = read_table(built_warehouse.paths, "raw.transactions")
    raw_cb = read_table(built_warehouse.paths, "raw.chargebacks", order_by="chargeback_id")
    with _connect(pg_database) as con, con.cursor() as cur:
        for ddl in RAW_DDL:
            cur.execute(ddl)
        _copy_in(cur, "raw.transactions", raw_tx)
        _copy_in(cur, "raw.chargebacks", raw_cb)
    con.close()

    paths = StatePaths(tmp_path_factory.mktemp("dbt-postgres")).ensure()
    result = run_dbt(
        ["build"], paths, built_warehouse.cfg, target="postgres", env={"CLOSEDLOOP_PG_DBNAME": pg_database}
    )
    assert result.success and not result.failed
    assert sum(r.unique_id.startswith("unit_test.") for r in result.results) >= 9

    duck = read_table(built_warehouse.paths, "ml.ml_transaction_features")
    with _connect(pg_database) as con, con.cursor() as cur:
        cur.execute("select * from ml.ml_transaction_features order by transaction_id")
        pg = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
        cur.execute("select count(*), sum(is_fraud) from ml.ml_training_set")
        pg_training = cur.fetchone()
    con.close()

    assert list(pg.columns) == list(duck.columns)
    assert len(pg) == len(duck)
    floats = ["amount", "log_amount", "amount_to_customer_avg", "category_fraud_rate"]
    for col in duck.columns:
        if col in floats:
            np.testing.assert_allclose(pg[col].astype(float), duck[col].astype(float), rtol=1e-9, err_msg=col)
        elif col in ("event_ts", "batch_date"):
            assert (pd.to_datetime(pg[col]) == pd.to_datetime(duck[col])).all(), col
        else:
            assert (pg[col].astype(str) == duck[col].astype(str)).all(), col

    duck_training = read_table(built_warehouse.paths, "ml.ml_training_set")
    assert pg_training == (len(duck_training), int(duck_training["is_fraud"].sum()))
