"""The warehouse seam: every stage reads and writes the warehouse through this module.

Two backends behind one small interface (`Session`), chosen once per process from the deployment
settings (`WarehouseSettings.from_env`, the same `CLOSEDLOOP_DBT_TARGET` that points dbt at it):

* **duckdb** (embedded default): a file in the state directory. DuckDB allows one writer at a
  time, so a writer holds an exclusive file lock (the Airflow side also serialises writers with a
  one-slot pool); readers open read-only connections.
* **postgres** (services profile): the database dbt builds into (`CLOSEDLOOP_PG_*`). Writers run
  concurrently; partition replaces of different intervals never meet.

Writers use `transaction()`: one connection, committed on success and rolled back on any error,
so a partition replace is all-or-nothing on both backends. SQL is written once with `?`
placeholders and portable types (`varchar`, `double precision`, `date`, `timestamp`).
"""

from __future__ import annotations

import csv
import fcntl
import io
import re
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from training.errors import ClosedloopError
from training.paths import StatePaths
from training.settings import Settings, SettingsError, Target, settings

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: The column of a `Session.values_relation`.
VALUES_COLUMN = "_closedloop_value"


class WarehouseError(ClosedloopError, RuntimeError):
    """The warehouse cannot be reached or used as configured; the message says how to fix it."""


class WarehouseMissing(WarehouseError, FileNotFoundError):
    """There is no DuckDB warehouse file to read yet (nothing has been loaded into it)."""


class WarehouseBusy(WarehouseError):
    """Another process holds the DuckDB write lock for longer than we are willing to wait."""


@dataclass(frozen=True)
class WarehouseSettings:
    """Which warehouse the stages (and dbt) use: the warehouse part of the deployment `Settings`."""

    backend: Target = "duckdb"
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "postgres"
    pg_password: str = ""
    pg_dbname: str = "closedloop"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WarehouseSettings:
        """From `settings()`, or from `environ` when given."""
        try:
            deployment = settings() if environ is None else Settings.from_env(environ)
        except SettingsError as exc:  # e.g. an unknown CLOSEDLOOP_DBT_TARGET
            raise WarehouseError(str(exc)) from None
        return cls(
            backend=deployment.dbt_target,
            pg_host=deployment.pg_host,
            pg_port=deployment.pg_port,
            pg_user=deployment.pg_user,
            pg_password=deployment.pg_password,
            pg_dbname=deployment.pg_dbname,
        )

    def describe(self, paths: StatePaths) -> str:
        if self.backend == "duckdb":
            return f"duckdb:{paths.warehouse}"
        return f"postgres://{self.pg_user}@{self.pg_host}:{self.pg_port}/{self.pg_dbname}"


def quote_ident(name: str) -> str:
    """A plain identifier, refused if it is anything else (table names come from config and code)."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def _split(table: str) -> tuple[str, str]:
    schema, _, name = table.partition(".")
    if not name:
        raise ValueError(f"table must be 'schema.table', got {table!r}")
    return quote_ident(schema), quote_ident(name)


class Session:
    """One open warehouse connection. Subclasses adapt the SQL dialect's few differences."""

    backend: Target

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        raise NotImplementedError

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """The query's rows as a DataFrame (column names as selected)."""
        raise NotImplementedError

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def insert_frame(self, table: str, frame: pd.DataFrame) -> int:
        """Append the frame's rows to `schema.table` (its columns, by name); returns the row count."""
        raise NotImplementedError

    def export_parquet(self, sql: str, path: Path) -> None:
        """Write the query's rows to a Parquet file (deterministic for the same rows)."""
        raise NotImplementedError

    def day_fingerprints(self, table: str, column: str = "batch_date") -> dict[Any, tuple[int, str]]:
        """Per value of `column`: the row count and an order-free hash of the rows' content.

        One grouped scan in the database; the data versioning exports only the days whose
        fingerprint it has not stored before (`training.storage.versioning.version_table`).
        """
        schema, name = _split(table)
        col = quote_ident(column)
        rows = self.frame(
            f"select {col} as day, count(*) as n, cast(sum({self._row_hash('t')}) as varchar) as digest "
            f"from {schema}.{name} t group by {col}"
        )
        return {
            pd.Timestamp(d).date(): (int(n), str(h))
            for d, n, h in zip(rows["day"], rows["n"], rows["digest"], strict=True)
        }

    def _row_hash(self, alias: str) -> str:
        """A SQL expression: a 64-bit hash of the whole row `alias`, as a number safe to sum."""
        raise NotImplementedError

    @contextmanager
    def values_relation(self, values: Sequence[str]) -> Iterator[str]:
        """`values` as a one-column text relation (column `VALUES_COLUMN`) for a join; its name.

        The relation lives as long as the block; a query joins it instead of listing the values.
        """
        raise NotImplementedError

    # --- shared on both backends -------------------------------------------------------------

    def column_type(self, table: str, column: str) -> str:
        """The declared SQL type of `table.column` (as information_schema names it)."""
        schema, name = _split(table)
        found = self.frame(  # fetched whole: DuckDB refuses other work on an unfinished result
            "select data_type from information_schema.columns where table_schema = ? and table_name = ? "
            "and column_name = ?",
            [schema, name, column],
        )
        if found.empty:
            raise WarehouseError(f"{table} has no column {column!r}")
        return str(found.iloc[0, 0])

    def rows_with_values(
        self,
        table: str,
        column: str,
        values: Iterable[Any],
        select: Sequence[str],
        *,
        where: str = "",
        params: Sequence[Any] = (),
        distinct: bool = False,
    ) -> pd.DataFrame:
        """`select` columns of the rows of `table` whose `column` is one of `values` (and `where`).

        One semi-join against the values loaded as a relation (`values_relation`), so the database
        picks the plan (a hash join on DuckDB, an index lookup on PostgreSQL) whatever the count,
        instead of one `in (?, ?, ...)` list per few thousand values.
        """
        cols = [quote_ident(c) for c in select]
        uniq = sorted({str(v) for v in values})
        if not uniq:
            return pd.DataFrame(columns=list(select))
        schema, name = _split(table)
        col = quote_ident(column)
        sql_type = self.column_type(table, column)  # cast the values, never the column (keeps its index usable)
        with self.values_relation(uniq) as rel:
            sql = (
                f"select {'distinct ' if distinct else ''}{', '.join(cols)} from {schema}.{name} "
                f"where {col} in (select cast({VALUES_COLUMN} as {sql_type}) from {rel})"
                + (f" and ({where})" if where else "")
            )
            return self._lookup_frame(sql, params)

    def _lookup_frame(self, sql: str, params: Sequence[Any]) -> pd.DataFrame:
        """Run a `rows_with_values` query (a backend may steer its plan)."""
        return self.frame(sql, params)

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row of a query (None when it returns no row)."""
        row = self.fetchone(sql, params)
        return None if row is None else row[0]

    def table_exists(self, schema: str, table: str) -> bool:
        return bool(
            self.scalar(
                "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
                [schema, table],
            )
        )

    def columns(self, table: str) -> list[str]:
        """The table's column names in their declared order."""
        schema, name = _split(table)
        rows = self.frame(
            "select column_name from information_schema.columns where table_schema = ? and table_name = ? "
            "order by ordinal_position",
            [schema, name],
        )
        return [str(c) for c in rows["column_name"]]

    def replace_partition(
        self, table: str, where: Mapping[str, Any], frame: pd.DataFrame | None
    ) -> int:
        """Delete the rows matching `where` (column = value, ANDed) and insert `frame` in their place.

        Run inside `transaction()` so a re-run of an interval replaces it, never duplicates it.
        """
        schema, name = _split(table)
        cond = " and ".join(f"{quote_ident(col)} = ?" for col in where)
        self.execute(f"delete from {schema}.{name} where {cond}", list(where.values()))
        if frame is None or frame.empty:
            return 0
        return self.insert_frame(table, frame)

    def copy_rows(self, target: str, source: str, where: Mapping[str, Any]) -> None:
        """Insert the rows of `source` matching `where` into `target`, columns matched by name."""
        ts, tn = _split(target)
        ss, sn = _split(source)
        cols = ", ".join(quote_ident(c) for c in self.columns(source))
        cond = " and ".join(f"{quote_ident(col)} = ?" for col in where)
        self.execute(
            f"insert into {ts}.{tn} ({cols}) select {cols} from {ss}.{sn} where {cond}", list(where.values())
        )


class DuckDBSession(Session):
    backend: Target = "duckdb"

    def __init__(self, con: Any):
        self.con = con

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.con.execute(sql, list(params))

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        return self.con.execute(sql, list(params)).df()

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        return self.con.execute(sql, list(params)).fetchone()

    def insert_frame(self, table: str, frame: pd.DataFrame) -> int:
        schema, name = _split(table)
        cols = ", ".join(quote_ident(str(c)) for c in frame.columns)
        self.con.register("_closedloop_frame", frame)
        try:
            self.con.execute(f"insert into {schema}.{name} ({cols}) select {cols} from _closedloop_frame")
        finally:
            self.con.unregister("_closedloop_frame")
        return len(frame)

    def export_parquet(self, sql: str, path: Path) -> None:
        self.con.execute(f"copy ({sql}) to '{path}' (format parquet)")

    def _row_hash(self, alias: str) -> str:
        return f"cast(hash({alias}) as hugeint)"

    @contextmanager
    def values_relation(self, values: Sequence[str]) -> Iterator[str]:
        # DuckDB scans a registered Arrow table in place (also on a read-only connection)
        import pyarrow as pa

        name = f"_closedloop_values_{id(values):x}"
        self.con.register(name, pa.table({VALUES_COLUMN: pa.array(values, type=pa.string())}))
        try:
            yield name
        finally:
            self.con.unregister(name)


_PG_DATE = 1082
#: PostgreSQL type OIDs -> the pandas dtype DuckDB returns for the same SQL type.
_PG_DTYPES: dict[int, str] = {
    16: "bool",
    21: "int32",
    23: "int32",
    20: "int64",
    700: "float64",
    701: "float64",
    1700: "float64",
    _PG_DATE: "datetime64[us]",
    1114: "datetime64[us]",
}


class PostgresSession(Session):
    backend: Target = "postgres"

    def __init__(self, con: Any):
        self.con = con

    @staticmethod
    def _sql(sql: str) -> str:
        # one placeholder style in the code base; psycopg2 wants %s (and a literal % doubled)
        return sql.replace("%", "%%").replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self.con.cursor() as cur:
            cur.execute(self._sql(sql), list(params))

    def frame(self, sql: str, params: Sequence[Any] = (), *, keep_dates: bool = False) -> pd.DataFrame:
        """Rows with the dtypes DuckDB's `.df()` gives; `keep_dates` leaves DATE columns as
        `datetime.date` (what DuckDB writes to Parquet as date32)."""
        with self.con.cursor() as cur:
            cur.execute(self._sql(sql), list(params))
            described = [(d[0], d[1]) for d in cur.description]
            rows = cur.fetchall()
        out = pd.DataFrame.from_records(rows, columns=[name for name, _ in described])
        # the same dtypes DuckDB's .df() gives, so a stage computes the same on either backend
        for name, oid in described:
            dtype = _PG_DTYPES.get(oid)
            if dtype is None or (keep_dates and oid == _PG_DATE):
                continue
            col = out[name]
            if dtype.startswith("datetime64"):
                out[name] = pd.to_datetime(col).astype(dtype)
            elif dtype in ("int32", "int64") and col.isna().any():
                out[name] = col.astype(dtype.capitalize())
            else:
                out[name] = col.astype(dtype)
        return out

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self.con.cursor() as cur:
            cur.execute(self._sql(sql), list(params))
            return cur.fetchone()

    def insert_frame(self, table: str, frame: pd.DataFrame) -> int:
        """COPY the rows in as CSV: one round trip whatever the size (NULL is the empty field)."""
        schema, name = _split(table)
        cols = ", ".join(quote_ident(str(c)) for c in frame.columns)
        buf = io.StringIO()
        frame.to_csv(buf, index=False, header=False, date_format="%Y-%m-%d %H:%M:%S.%f")
        buf.seek(0)
        with self.con.cursor() as cur:
            cur.copy_expert(f"copy {schema}.{name} ({cols}) from stdin with (format csv)", buf)
        return len(frame)

    def export_parquet(self, sql: str, path: Path) -> None:
        self.frame(sql, keep_dates=True).to_parquet(path, index=False)

    def _row_hash(self, alias: str) -> str:
        # PostgreSQL's own 64-bit hash of the row's text form (every column, in order); the text
        # cast is most of the cost (about 1.3 s per 300k rows of the training set here)
        return f"cast(hashtextextended(cast({alias} as text), 0) as numeric)"

    @contextmanager
    def values_relation(self, values: Sequence[str]) -> Iterator[str]:
        # a temp table filled by one COPY and analysed, so the planner sees its size
        name = f"_closedloop_values_{id(values):x}"
        self.execute(f"create temp table {name} ({VALUES_COLUMN} varchar)")
        try:
            buf = io.StringIO()
            csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows([v] for v in values)
            buf.seek(0)
            with self.con.cursor() as cur:
                cur.copy_expert(f"copy {name} ({VALUES_COLUMN}) from stdin with (format csv)", buf)
            self.execute(f"analyze {name}")
            yield name
        finally:
            self.execute(f"drop table if exists {name}")

    def _lookup_frame(self, sql: str, params: Sequence[Any]) -> pd.DataFrame:
        # PostgreSQL's planner prefers a hash join over a sequential scan of the whole table once the
        # values are a sizeable share of it (a day's ids vs a few days of history), so the lookup
        # would grow with history; an index lookup per value costs what the batch holds. Measured
        # (benchmarks/history_check.py, 200k ids vs 2M rows): 1.2 s nested loop vs 3.9 s hash join.
        # inside a transaction `set local` ends with it (a failed query cannot leave it set);
        # in autocommit mode the settings are reset right after the query
        scope = "" if self.con.autocommit else "local "
        for setting in ("enable_hashjoin", "enable_mergejoin"):
            self.execute(f"set {scope}{setting} = off")
        try:
            return self.frame(sql, params)
        finally:
            if self.con.autocommit:
                for setting in ("enable_hashjoin", "enable_mergejoin"):
                    self.execute(f"reset {setting}")

    def lock(self, key: str) -> None:
        """A transaction-scoped advisory lock (e.g. around DDL that concurrent writers would race on)."""
        self.execute("select pg_advisory_xact_lock(?)", [zlib.crc32(key.encode())])


# --------------------------------------------------------------------------------------------
# opening sessions
# --------------------------------------------------------------------------------------------


def exists(paths: StatePaths, settings: WarehouseSettings | None = None) -> bool:
    """Whether there is a warehouse to read from yet (a DuckDB file, or a reachable PG database)."""
    settings = settings or WarehouseSettings.from_env()
    if settings.backend == "duckdb":
        return paths.warehouse.exists()
    return True


@contextmanager
def connect(
    paths: StatePaths,
    read_only: bool = False,
    timeout_s: float = 300.0,
    settings: WarehouseSettings | None = None,
) -> Iterator[Session]:
    """A session on the warehouse in autocommit style (reads, idempotent DDL).

    For writes that must be all-or-nothing use `transaction()`.
    """
    settings = settings or WarehouseSettings.from_env()
    if settings.backend == "postgres":
        con = _pg_connect(settings)
        con.autocommit = True
        try:
            yield PostgresSession(con)
        finally:
            con.close()
        return
    with _duckdb(paths, read_only, timeout_s) as dcon:
        yield DuckDBSession(dcon)


@contextmanager
def transaction(
    paths: StatePaths,
    timeout_s: float = 300.0,
    settings: WarehouseSettings | None = None,
    ddl: Sequence[str] = (),
) -> Iterator[Session]:
    """A write session: committed when the block ends, rolled back (and re-raised) on any error.

    `ddl` (create schema / table if not exists) runs first in its own short step: on PostgreSQL
    under an advisory lock, since concurrent `create ... if not exists` can collide.
    """
    settings = settings or WarehouseSettings.from_env()
    if settings.backend == "postgres":
        con = _pg_connect(settings)
        try:
            if ddl:
                ses = PostgresSession(con)
                ses.lock("closedloop-ddl")
                for stmt in ddl:
                    ses.execute(stmt)
                con.commit()
            session = PostgresSession(con)
            try:
                yield session
                con.commit()
            except BaseException:
                con.rollback()
                raise
        finally:
            con.close()
        return
    with _duckdb(paths, False, timeout_s) as dcon:
        for stmt in ddl:
            dcon.execute(stmt)
        dcon.execute("begin transaction")
        try:
            yield DuckDBSession(dcon)
            dcon.execute("commit")
        except BaseException:
            dcon.execute("rollback")
            raise


def _pg_connect(settings: WarehouseSettings) -> Any:
    import psycopg2

    try:
        return psycopg2.connect(
            host=settings.pg_host,
            port=settings.pg_port,
            user=settings.pg_user,
            password=settings.pg_password or None,
            dbname=settings.pg_dbname,
            connect_timeout=10,
            application_name="closedloop",
        )
    except psycopg2.OperationalError as exc:
        raise WarehouseError(
            f"cannot connect to the PostgreSQL warehouse {settings.pg_user}@{settings.pg_host}:"
            f"{settings.pg_port}/{settings.pg_dbname}: {' '.join(str(exc).split())} — check CLOSEDLOOP_PG_* "
            "(or unset CLOSEDLOOP_DBT_TARGET for the embedded DuckDB warehouse)"
        ) from None


@contextmanager
def _duckdb(paths: StatePaths, read_only: bool, timeout_s: float) -> Iterator[Any]:
    import duckdb

    paths.warehouse.parent.mkdir(parents=True, exist_ok=True)
    if read_only:
        if not paths.warehouse.exists():
            raise WarehouseMissing(
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
    import duckdb

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return open_fn()
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def is_missing_relation(exc: BaseException) -> bool:
    """True when a query failed because a table or column the contract names does not exist."""
    try:
        import duckdb

        if isinstance(exc, (duckdb.BinderException, duckdb.CatalogException)):
            return True
    except ImportError:  # pragma: no cover - duckdb is a dependency
        pass
    try:
        from psycopg2 import errors

        return isinstance(exc, (errors.UndefinedColumn, errors.UndefinedTable))
    except ImportError:  # pragma: no cover
        return False
