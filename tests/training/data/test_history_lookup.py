"""The front door's history checks as one semi-join in the warehouse, on DuckDB and on PostgreSQL.

`admission._lookup` (reused event ids, repeated label ids) and `ingest._values_in` (held labels)
used to send one `in (?, ...)` list per 5,000 ids; they now join the batch's ids loaded as a
relation. The rows found must be exactly what the old batched lists found, on both backends.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest

from training.config import Config
from training.data import admission, ingest
from training.paths import StatePaths
from training.storage import warehouse
from training.storage.warehouse import WarehouseSettings

DAYS = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(3)]
PER_DAY = 4_000  # the lookups below span more than one of the old 5,000-id batches


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request, state: StatePaths, monkeypatch) -> str:
    if request.param == "postgres":
        request.getfixturevalue("pg_warehouse")
    else:
        monkeypatch.delenv("CLOSEDLOOP_DBT_TARGET", raising=False)
    assert WarehouseSettings.from_env().backend == request.param
    return request.param


def _events(day: dt.date, ev_id: str) -> pd.DataFrame:
    ids = [f"tx-{day:%Y%m%d}-{i:07d}" for i in range(PER_DAY)]
    ids[:3] = [f"odd,{day}", f'quo"te {day}', f"  {day} spaced "]  # ids that need quoting in CSV/COPY
    return pd.DataFrame({ev_id: ids, "n": range(PER_DAY), "batch_date": day})


def _load(state: StatePaths, cfg: Config) -> None:
    ev = cfg.contract.events
    ddl = [
        "create schema if not exists raw",
        f"create table if not exists {ev.raw_table} ({ev.id} varchar, n bigint, batch_date date)",
    ]
    if WarehouseSettings.from_env().backend == "postgres":
        ddl.append(f"create index if not exists lookup_id_idx on {ev.raw_table} ({ev.id})")
    with warehouse.transaction(state, ddl=ddl) as con:
        for day in DAYS:
            con.replace_partition(ev.raw_table, {"batch_date": day}, _events(day, ev.id))


def _old_batched_lookup(con: warehouse.Session, table: str, column: str, values: pd.Series, day: dt.date,
                        other_days_only: bool) -> pd.DataFrame:
    """The previous implementation: one `in (...)` list per 5,000 ids (the reference result)."""
    out = []
    uniq = sorted(set(values))
    for i in range(0, len(uniq), 5000):
        chunk = uniq[i:i + 5000]
        where = f"{column} in ({', '.join('?' for _ in chunk)})" + (" and batch_date <> ?" if other_days_only else "")
        params: list[Any] = [*chunk, day] if other_days_only else list(chunk)
        out.append(con.frame(f"select distinct {column}, batch_date from {table} where {where}", params))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=[column, "batch_date"])


def _canon(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.astype({c: str for c in frame.columns})
    return out.sort_values(list(out.columns)).reset_index(drop=True)


def _batch(cfg: Config) -> pd.Series:
    """A new day's ids: some reused from each loaded day (tricky ones too), most new."""
    ev = cfg.contract.events
    reused = pd.concat([_events(d, ev.id)[ev.id].iloc[[0, 1, 2, *range(3, PER_DAY, 7)]] for d in DAYS])
    new = pd.Series([f"tx-20260110-{i:07d}" for i in range(3_000)])
    return pd.concat([reused, new, reused.iloc[:50]], ignore_index=True)  # duplicates in the batch too


@pytest.mark.parametrize("other_days_only", [True, False])
def test_semi_join_finds_exactly_what_the_batched_in_lists_found(backend, state, small_config, other_days_only):
    cfg = small_config
    ev = cfg.contract.events
    _load(state, cfg)
    ids = _batch(cfg)
    with warehouse.connect(state, read_only=True) as con:
        got = admission._lookup(con, ev.raw_table, ev.id, ids, DAYS[1], other_days_only=other_days_only)
        want = _old_batched_lookup(con, ev.raw_table, ev.id, ids, DAYS[1], other_days_only=other_days_only)
        assert list(got.columns) == [ev.id, "batch_date"]
        pd.testing.assert_frame_equal(_canon(got), _canon(want))
        expected_days = 2 if other_days_only else 3
        assert got["batch_date"].nunique() == expected_days
        assert {f"odd,{DAYS[0]}", f'quo"te {DAYS[0]}', f"  {DAYS[0]} spaced "} <= set(got[ev.id])
        # nothing to look up: an empty frame with the same columns, no query
        assert admission._lookup(con, ev.raw_table, ev.id, pd.Series([], dtype=str), DAYS[0], True).empty


def test_values_are_cast_to_the_column_type_and_held_label_lookup_matches(backend, state, small_config):
    cfg = small_config
    ev = cfg.contract.events
    _load(state, cfg)
    with warehouse.connect(state, read_only=True) as con:
        by_number = con.rows_with_values(ev.raw_table, "n", pd.Series(["3", "4", "99999"]), ["n", "batch_date"])
        assert sorted(by_number["n"].tolist()) == [3, 3, 3, 4, 4, 4]
        ids = _batch(cfg)
        found = ingest._values_in(con, ev.raw_table, ev.id, [ev.id, "n"], ids)
        assert set(found[ev.id]) == set(ids) & set(pd.concat([_events(d, ev.id)[ev.id] for d in DAYS]))


def test_both_backends_find_the_same_rows(state, small_config, pg_warehouse, monkeypatch):
    cfg = small_config
    ev = cfg.contract.events
    ids = _batch(cfg)
    found = {}
    for backend in ("postgres", "duckdb"):
        if backend == "duckdb":
            monkeypatch.delenv("CLOSEDLOOP_DBT_TARGET")
        _load(state, cfg)
        with warehouse.connect(state, read_only=True) as con:
            found[backend] = _canon(admission._lookup(con, ev.raw_table, ev.id, ids, DAYS[2], other_days_only=True))
    assert len(found["duckdb"]) > 0
    pd.testing.assert_frame_equal(found["duckdb"], found["postgres"])


def test_postgres_raw_tables_get_indexes_on_their_lookup_keys(small_config):
    ddl = ingest.raw_index_ddl(small_config.contract)
    ev, lab = small_config.contract.events, small_config.contract.labels
    assert any(f"on {ev.raw_table} ({ev.id})" in s for s in ddl)
    assert any(f"on {lab.raw_table} ({lab.id})" in s for s in ddl)
    assert any(f"on {lab.raw_table} ({lab.event_id})" in s for s in ddl)
    assert sum("(batch_date)" in s for s in ddl) == 2


def test_postgres_looks_ids_up_through_the_index_not_a_scan_of_history(state, small_config, pg_warehouse):
    """The planner would hash-join over a scan of the whole raw table; the lookup steers it to the index."""
    ev = small_config.contract.events
    _load(state, small_config)
    with warehouse.connect(state) as con:
        con.execute(f"analyze {ev.raw_table}")
        with con.values_relation(sorted(set(_batch(small_config)))) as rel:
            sql = f"explain select {ev.id} from {ev.raw_table} where {ev.id} in (select _closedloop_value from {rel})"
            plan = "\n".join(con._lookup_frame(sql, []).iloc[:, 0])
            assert "lookup_id_idx" in plan and f"Seq Scan on {ev.raw_table.split('.')[1]}" not in plan, plan
            assert con.scalar("show enable_hashjoin") == "on"  # reset after the query
