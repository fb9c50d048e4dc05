"""The operations ledger: small, queryable, append-mostly tables that record what the loop did.

SQLite under the state directory by default (`$CLOSEDLOOP_OPS_DB_URL` switches to PostgreSQL in the
services profile). Each stage module declares its own table on the shared `metadata` and creates it
with `ensure_tables(engine, table)`; this module holds only what they share.
"""

from __future__ import annotations

from functools import lru_cache

import sqlalchemy as sa

from training.paths import StatePaths
from training.settings import settings

metadata = sa.MetaData()

#: One row per published data version (the DVC md5 of the training-set snapshot).
data_versions = sa.Table(
    "data_versions",
    metadata,
    sa.Column("data_version", sa.String(64), primary_key=True),
    sa.Column("batch_date", sa.Date, nullable=False, index=True),
    sa.Column("interval_start", sa.DateTime, nullable=False),
    sa.Column("interval_end", sa.DateTime, nullable=False),
    sa.Column("feature_rows", sa.Integer, nullable=False),
    sa.Column("training_rows", sa.Integer, nullable=False),
    sa.Column("snapshot_path", sa.Text, nullable=False),
    # md5s of the landed event and label files (contract.events / contract.labels). Tables are made
    # by create_all, with no migrations: a ledger from before these generic names must be recreated.
    sa.Column("raw_events_md5", sa.String(64)),
    sa.Column("raw_labels_md5", sa.String(64)),
    sa.Column("dbt_invocation_id", sa.String(64)),
    sa.Column("gx_run_id", sa.Text),  # one run id per gated feed, joined: no fixed bound
    sa.Column("gx_success", sa.Boolean),
    sa.Column("created_at", sa.DateTime, nullable=False),
)


def ops_db_url(paths: StatePaths | None = None) -> str:
    url = settings().ops_db_url
    if url:
        return url
    paths = paths or StatePaths.from_env()
    return f"sqlite:///{paths.root / 'ops.db'}"


@lru_cache(maxsize=8)
def _engine_for(url: str) -> sa.Engine:
    connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
    return sa.create_engine(url, connect_args=connect_args, future=True)


def engine(paths: StatePaths | None = None) -> sa.Engine:
    """The ledger engine for this state directory (created lazily, cached per URL)."""
    url = ops_db_url(paths)
    if url.startswith("sqlite:///"):
        (paths or StatePaths.from_env()).root.mkdir(parents=True, exist_ok=True)
    return _engine_for(url)


def ensure_tables(eng: sa.Engine, *tables: sa.Table) -> None:
    """Create missing tables, and add the nullable columns a table gained since an older ledger made it.

    The ledger has no migration history (no alembic environment): a column added later must be
    nullable, and this adds it in place through alembic's operations (`ALTER TABLE ... ADD COLUMN`),
    once per process and table. Anything else (a type change, a NOT NULL column) needs a new ledger.
    """
    metadata.create_all(eng, tables=list(tables))
    for table in tables:
        if (eng.url.render_as_string(), table.name) not in _COLUMNS_CHECKED:
            _add_missing_columns(eng, table)
            _COLUMNS_CHECKED.add((eng.url.render_as_string(), table.name))


_COLUMNS_CHECKED: set[tuple[str, str]] = set()


def _add_missing_columns(eng: sa.Engine, table: sa.Table) -> None:
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    present = {c["name"] for c in sa.inspect(eng).get_columns(table.name, schema=table.schema)}
    missing = [c for c in table.columns if c.name not in present]
    if not missing:
        return
    with eng.begin() as conn:
        ops = Operations(MigrationContext.configure(conn))
        for column in missing:
            if not column.nullable:
                raise RuntimeError(
                    f"ledger table {table.name} lacks the NOT NULL column {column.name}: this ledger predates it; "
                    "recreate the state directory's ops ledger (make clean-state) or migrate it by hand"
                )
            ops.add_column(table.name, sa.Column(column.name, column.type, nullable=True), schema=table.schema)
