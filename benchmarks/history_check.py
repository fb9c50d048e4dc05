"""The front door's history check as history grows: the old batched `in (...)` lists vs the semi-join.

Why (issue 18): the reused-id check ran one `in (5,000 ids)` query per 5,000 ids of the batch, each
scanning the whole raw table, so its cost grew with batch x history. It is now one semi-join of
the batch's ids (a relation) against the raw table. This builds a raw events table of `--days`
days of `--rows` ids each, then looks up one new day's ids (a share of them reused) both ways and
prints wall and CPU seconds (CPU of this process: DuckDB runs in it; on PostgreSQL the server's CPU
is not counted, wall is the figure there).

    .venv/bin/python benchmarks/history_check.py --rows 200000 --days 2,10
    .venv/bin/python benchmarks/history_check.py --rows 200000 --days 2,10 --postgres closedloop_bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from training.data import admission
from training.paths import StatePaths
from training.storage import warehouse

TABLE = "raw.events"
START = dt.date(2026, 1, 1)


def _ids(day: dt.date, rows: int) -> pd.Series:
    return pd.Series([f"tx-{day:%Y%m%d}-{i:07d}" for i in range(rows)])


def old_batched(con: warehouse.Session, values: pd.Series, day: dt.date) -> pd.DataFrame:
    """The previous `admission._lookup`: one `in` list per 5,000 ids."""
    out = []
    uniq = sorted(set(values))
    for i in range(0, len(uniq), 5000):
        chunk = uniq[i:i + 5000]
        params: list[Any] = [*chunk, day]
        out.append(con.frame(
            f"select distinct id, batch_date from {TABLE} where id in ({', '.join('?' for _ in chunk)}) "
            "and batch_date <> ?", params))
    return pd.concat(out, ignore_index=True)


def measure(paths: StatePaths, rows: int, days: int, reuse: float) -> dict[str, tuple[float, float, int]]:
    ddl = ["create schema if not exists raw", f"create table if not exists {TABLE} (id varchar, batch_date date)"]
    if warehouse.WarehouseSettings.from_env().backend == "postgres":
        ddl += [f"create index if not exists events_id_idx on {TABLE} (id)"]
    with warehouse.transaction(paths, ddl=ddl) as con:
        con.execute(f"delete from {TABLE}")
        for i in range(days):
            day = START + dt.timedelta(days=i)
            con.insert_frame(TABLE, pd.DataFrame({"id": _ids(day, rows), "batch_date": day}))
    if warehouse.WarehouseSettings.from_env().backend == "postgres":
        with warehouse.connect(paths) as con:
            con.execute(f"analyze {TABLE}")
    new_day = START + dt.timedelta(days=days)
    n_reused = int(rows * reuse)
    batch = pd.concat([_ids(START, rows).iloc[:n_reused], _ids(new_day, rows - n_reused)], ignore_index=True)
    out = {}
    with warehouse.connect(paths, read_only=True) as con:
        for name, fn in (("semi-join", lambda: admission._lookup(con, TABLE, "id", batch, new_day, True)),
                         ("in-lists", lambda: old_batched(con, batch, new_day))):
            w0, c0 = time.perf_counter(), time.process_time()
            found = fn()
            out[name] = (time.perf_counter() - w0, time.process_time() - c0, len(found))
    assert out["semi-join"][2] == out["in-lists"][2] == n_reused, out
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="ids a day (history and batch)")
    parser.add_argument("--days", default="2,10", help="days of history to measure at, comma-separated")
    parser.add_argument("--reuse", type=float, default=0.001, help="share of the batch's ids reused")
    parser.add_argument("--postgres", default=None, metavar="DBNAME", help="the local PostgreSQL database DBNAME")
    args = parser.parse_args(argv)
    if args.postgres:
        os.environ.update(CLOSEDLOOP_DBT_TARGET="postgres", CLOSEDLOOP_PG_DBNAME=args.postgres)
    else:
        os.environ.pop("CLOSEDLOOP_DBT_TARGET", None)
    backend = warehouse.WarehouseSettings.from_env().backend
    print(f"{backend}: batch of {args.rows:,} ids ({args.reuse:.1%} reused) against history of N days x {args.rows:,}")
    print(f"{'history days':>12} {'method':<10} {'wall s':>8} {'CPU s':>8} {'found':>7}")
    with tempfile.TemporaryDirectory(prefix="history-check-") as tmp:
        paths = StatePaths(Path(tmp)).ensure()
        for days in (int(d) for d in args.days.split(",")):
            for name, (wall, cpu, found) in measure(paths, args.rows, days, args.reuse).items():
                print(f"{days:>12} {name:<10} {wall:>8.2f} {cpu:>8.2f} {found:>7,}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
