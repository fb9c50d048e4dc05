"""The warehouse seam on both backends: DuckDB (embedded) and a real PostgreSQL server (services).

The same calls must give the same rows and dtypes, partition replaces must be idempotent and
all-or-nothing, and on PostgreSQL concurrent writers of different intervals must both succeed.
"""

from __future__ import annotations

import datetime as dt
import threading

import pandas as pd
import pytest

from training.paths import StatePaths
from training.storage import warehouse
from training.storage.warehouse import WarehouseError, WarehouseSettings

DDL = (
    "create schema if not exists published",
    """create table if not exists published.parts (
        batch_date date, alias varchar, n integer, score double precision, flag boolean, seen_at timestamp
    )""",
)


def _frame(day: dt.date, alias: str, rows: int, base: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "batch_date": [day] * rows,
            "alias": [alias] * rows,
            "n": list(range(rows)),
            "score": [base + i / 10 for i in range(rows)],
            "flag": [i % 2 == 0 for i in range(rows)],
            "seen_at": [dt.datetime(2026, 1, 1, 12, 30, 15, 250000)] * rows,
        }
    )


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request, state: StatePaths, monkeypatch) -> str:
    if request.param == "postgres":
        request.getfixturevalue("pg_warehouse")
    else:
        monkeypatch.delenv("CLOSEDLOOP_DBT_TARGET", raising=False)
    assert WarehouseSettings.from_env().backend == request.param
    return request.param


def _read(paths: StatePaths) -> pd.DataFrame:
    with warehouse.connect(paths, read_only=True) as con:
        return con.frame("select * from published.parts order by batch_date, alias, n")


def test_partition_replace_is_idempotent_and_leaves_other_partitions(backend, state):
    d1, d2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)
    for _ in range(2):  # a re-run replaces, never duplicates
        with warehouse.transaction(state, ddl=DDL) as con:
            con.replace_partition("published.parts", {"batch_date": d1, "alias": "champion"}, _frame(d1, "champion", 3))
            con.replace_partition("published.parts", {"batch_date": d2, "alias": "champion"}, _frame(d2, "champion", 2))
    with warehouse.transaction(state, ddl=DDL) as con:
        con.replace_partition("published.parts", {"batch_date": d1, "alias": "champion"}, _frame(d1, "champion", 1, 5))
        con.replace_partition("published.parts", {"batch_date": d2, "alias": "challenger"}, None)
    df = _read(state)
    assert df.groupby(df["batch_date"].dt.date).size().to_dict() == {d1: 1, d2: 2}
    assert df.loc[df["batch_date"].dt.date == d1, "score"].tolist() == [5.0]


def test_failed_write_rolls_back_and_keeps_what_was_published(backend, state):
    day = dt.date(2026, 1, 1)
    with warehouse.transaction(state, ddl=DDL) as con:
        con.replace_partition("published.parts", {"batch_date": day}, _frame(day, "champion", 4))
    with pytest.raises(RuntimeError, match="boom"):
        with warehouse.transaction(state, ddl=DDL) as con:
            con.replace_partition("published.parts", {"batch_date": day}, _frame(day, "champion", 1))
            raise RuntimeError("boom")
    assert len(_read(state)) == 4


def test_same_dtypes_and_values_on_both_backends(state, pg_warehouse, monkeypatch):
    day = dt.date(2026, 1, 3)
    frames = {}
    for name in ("postgres", "duckdb"):
        if name == "duckdb":
            monkeypatch.delenv("CLOSEDLOOP_DBT_TARGET")
        with warehouse.transaction(state, ddl=DDL) as con:
            con.replace_partition("published.parts", {"batch_date": day}, _frame(day, "champion", 3, 0.5))
        frames[name] = _read(state)
    pg, duck = frames["postgres"], frames["duckdb"]
    assert pg.dtypes.to_dict() == duck.dtypes.to_dict()
    pd.testing.assert_frame_equal(pg, duck)


def test_postgres_writers_of_different_intervals_run_at_once(state, pg_warehouse):
    """No single-writer lock on PostgreSQL: both writers hold open transactions at the same time."""
    both_open = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def write(day: dt.date) -> None:
        try:
            with warehouse.transaction(state, ddl=DDL) as con:  # the DDL race of a fresh database too
                con.replace_partition("published.parts", {"batch_date": day}, _frame(day, "champion", 50))
                both_open.wait()  # would time out if one writer blocked the other
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(dt.date(2026, 1, d),)) for d in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert _read(state).groupby("batch_date").size().tolist() == [50, 50]


def test_unknown_backend_and_unreachable_server_say_what_to_fix(state, monkeypatch):
    monkeypatch.setenv("CLOSEDLOOP_DBT_TARGET", "snowflake")
    with pytest.raises(WarehouseError, match="CLOSEDLOOP_DBT_TARGET='snowflake'.*duckdb, postgres"):
        WarehouseSettings.from_env()
    bad = WarehouseSettings(backend="postgres", pg_port=1, pg_dbname="nowhere")
    with pytest.raises(WarehouseError, match=r"cannot connect .*:1/nowhere.*CLOSEDLOOP_PG_"):
        with warehouse.connect(state, settings=bad):
            pass


def test_identifiers_are_refused_unless_plain(state):
    with warehouse.connect(state) as con:
        with pytest.raises(ValueError, match="plain SQL identifier"):
            con.replace_partition("published.parts; drop table x", {"batch_date": 1}, None)
