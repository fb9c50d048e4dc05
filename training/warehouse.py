"""DuckDB warehouse access: one writer at a time, readers read-only, connections closed promptly.

The Airflow side serialises writers with a one-slot pool (`duckdb_writer`); here a file lock does
the same for code run outside Airflow (CLI, tests), so two writers never meet DuckDB's lock error.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from training.paths import StatePaths


class WarehouseBusy(RuntimeError):
    """Another process holds the DuckDB write lock for longer than we are willing to wait."""


@contextmanager
def connect(
    paths: StatePaths, read_only: bool = False, timeout_s: float = 300.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection to the warehouse; writers hold an exclusive file lock while open."""
    paths.warehouse.parent.mkdir(parents=True, exist_ok=True)
    if read_only:
        if not paths.warehouse.exists():
            raise FileNotFoundError(
                f"warehouse {paths.warehouse} does not exist yet: run data_pipeline for an interval first"
            )
        con = _retry(lambda: duckdb.connect(str(paths.warehouse), read_only=True), timeout_s)
        try:
            yield con
        finally:
            con.close()
        return
    lock_path = paths.warehouse.with_suffix(".writer.lock")
    with open(lock_path, "w") as lock:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WarehouseBusy(
                        f"waited {timeout_s:.0f}s for the warehouse write lock {lock_path}"
                    ) from None
                time.sleep(0.2)
        try:
            con = _retry(lambda: duckdb.connect(str(paths.warehouse)), timeout_s)
            try:
                yield con
            finally:
                con.close()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _retry(open_fn, timeout_s: float):
    """DuckDB refuses a connection while another process writes; wait for it rather than fail."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return open_fn()
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    """The first column of the first row of a query (None when it returns no row)."""
    row = con.execute(sql, params or []).fetchone()
    return None if row is None else row[0]


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        scalar(
            con,
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [schema, table],
        )
    )
