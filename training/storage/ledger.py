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
    metadata.create_all(eng, tables=list(tables))
