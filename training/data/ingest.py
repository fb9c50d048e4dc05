"""Ingest and publish: the two ends of the data pipeline that touch storage.

`land` takes the source system's feed for one data interval and writes it as DVC-versioned Parquet
(the same interval always lands at the same path, so a re-run replaces it). `load_raw` replaces that
interval's partition of the warehouse's `raw` tables. `publish` runs only after the feature gate
passed: it replaces the interval's partition of `published.transaction_features` and snapshots the
training set as a new data version. Nothing downstream reads anything but `published.*` and data
versions, so a batch stopped by a gate never reaches a model.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from training import source
from training.config import Config
from training.errors import ClosedloopError
from training.paths import StatePaths
from training.storage import versioning, warehouse

RAW_TRANSACTIONS_DDL = """
create table if not exists raw.transactions (
    transaction_id varchar, event_ts timestamp, customer_id varchar, customer_home_country varchar,
    merchant_id varchar, merchant_category varchar, channel varchar, country varchar,
    device_id varchar, amount double precision, currency varchar, batch_date date, loaded_at timestamp
)"""
RAW_CHARGEBACKS_DDL = """
create table if not exists raw.chargebacks (
    chargeback_id varchar, transaction_id varchar, reported_at timestamp, reason_code varchar,
    batch_date date, loaded_at timestamp
)"""
RAW_COLUMNS = {
    "transactions": [
        "transaction_id",
        "event_ts",
        "customer_id",
        "customer_home_country",
        "merchant_id",
        "merchant_category",
        "channel",
        "country",
        "device_id",
        "amount",
        "currency",
    ],
    "chargebacks": ["chargeback_id", "transaction_id", "reported_at", "reason_code"],
}

CANDIDATE_FEATURES = "ml.ml_transaction_features"
CANDIDATE_TRAINING_SET = "ml.ml_training_set"
PUBLISHED_FEATURES = "published.transaction_features"


class PublishError(ClosedloopError, RuntimeError):
    """The candidate tables are not in a state that can be published."""


@dataclass(frozen=True)
class LandedFeed:
    table: str
    path: str
    md5: str
    rows: int


@dataclass(frozen=True)
class LandedBatch:
    batch_date: dt.date
    transactions: LandedFeed
    chargebacks: LandedFeed

    def to_xcom(self) -> dict[str, Any]:
        data = asdict(self)
        data["batch_date"] = self.batch_date.isoformat()
        return data

    @classmethod
    def from_xcom(cls, data: dict[str, Any]) -> LandedBatch:
        return cls(
            batch_date=dt.date.fromisoformat(data["batch_date"]),
            transactions=LandedFeed(**data["transactions"]),
            chargebacks=LandedFeed(**data["chargebacks"]),
        )


def extract_source(cfg: Config, batch_date: dt.date) -> dict[str, pd.DataFrame]:
    """The source's feeds for one interval, keyed by the contract's feed names (`training.source`)."""
    return source.extract(cfg, batch_date)


def land(paths: StatePaths, cfg: Config, batch_date: dt.date) -> LandedBatch:
    """Write the day's feeds as Parquet under the DVC repo and version them; re-runs replace."""
    feeds = extract_source(cfg, batch_date)
    landed = {}
    for table, frame in feeds.items():
        frame = frame.copy()
        frame["batch_date"] = batch_date
        target = paths.raw / table / f"batch_date={batch_date.isoformat()}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(target, index=False)
        md5 = versioning.snapshot(paths, target)
        landed[table] = LandedFeed(table=table, path=str(target), md5=md5, rows=len(frame))
    return LandedBatch(batch_date=batch_date, **landed)


def read_landed(feed: LandedFeed | dict[str, Any]) -> pd.DataFrame:
    """The landed feed exactly as delivered, read back from its versioned file."""
    feed = feed if isinstance(feed, LandedFeed) else LandedFeed(**feed)
    return pd.read_parquet(feed.path)


def load_raw(paths: StatePaths, batch: LandedBatch, loaded_at: dt.datetime | None = None) -> dict[str, int]:
    """Replace the interval's partition of raw.transactions / raw.chargebacks (after the raw gate)."""
    loaded_at = loaded_at or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    counts = {}
    ddl = ("create schema if not exists raw", RAW_TRANSACTIONS_DDL, RAW_CHARGEBACKS_DDL)
    with warehouse.transaction(paths, ddl=ddl) as con:
        for feed in (batch.transactions, batch.chargebacks):
            frame = pd.read_parquet(feed.path, columns=RAW_COLUMNS[feed.table])
            frame["batch_date"] = batch.batch_date
            frame["loaded_at"] = loaded_at
            con.replace_partition(f"raw.{feed.table}", {"batch_date": batch.batch_date}, frame)
            counts[feed.table] = int(
                con.scalar(f"select count(*) from raw.{feed.table} where batch_date = ?", [batch.batch_date])
            )
    return counts


def read_candidate_features(paths: StatePaths, batch_date: dt.date) -> pd.DataFrame:
    """The interval's rows of the feature mart dbt just built (not yet published)."""
    with warehouse.connect(paths, read_only=True) as con:
        if not con.table_exists("ml", "ml_transaction_features"):
            raise PublishError("ml.ml_transaction_features does not exist: the dbt build did not run")
        return con.frame(
            f"select * from {CANDIDATE_FEATURES} where batch_date = ? order by transaction_id", [batch_date]
        )


def publish(
    paths: StatePaths,
    batch_date: dt.date,
    interval_start: dt.datetime,
    interval_end: dt.datetime,
    lineage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish the gated interval: replace its feature partition and version the training set.

    Returns the small dict that becomes the `features` Asset event's extra.
    """
    lineage = lineage or {}
    snapshot_file = paths.published / "training_set.parquet"
    snapshot_file.parent.mkdir(parents=True, exist_ok=True)
    ddl = (
        "create schema if not exists published",
        f"create table if not exists {PUBLISHED_FEATURES} as select * from {CANDIDATE_FEATURES} limit 0",
    )
    with warehouse.connect(paths) as con:
        for table in ("ml_transaction_features", "ml_training_set"):
            if not con.table_exists("ml", table):
                raise PublishError(f"ml.{table} does not exist: the dbt build did not run for {batch_date}")
    with warehouse.transaction(paths, ddl=ddl) as con:
        feature_rows = con.scalar(f"select count(*) from {CANDIDATE_FEATURES} where batch_date = ?", [batch_date])
        if feature_rows == 0:
            raise PublishError(
                f"no feature rows for batch_date {batch_date}: nothing to publish (was the raw batch loaded?)"
            )
        con.export_parquet(
            f"select * from {CANDIDATE_TRAINING_SET} order by batch_date, transaction_id", snapshot_file
        )
        training_rows = con.scalar(f"select count(*) from {CANDIDATE_TRAINING_SET}")
        con.execute(f"delete from {PUBLISHED_FEATURES} where batch_date = ?", [batch_date])
        con.copy_rows(PUBLISHED_FEATURES, CANDIDATE_FEATURES, {"batch_date": batch_date})
    data_version = versioning.snapshot(paths, snapshot_file)
    record = versioning.DataVersionRecord(
        data_version=data_version,
        batch_date=batch_date,
        interval_start=interval_start.replace(tzinfo=None),
        interval_end=interval_end.replace(tzinfo=None),
        feature_rows=int(feature_rows),
        training_rows=int(training_rows),
        snapshot_path=str(snapshot_file),
        raw_transactions_md5=lineage.get("raw_transactions_md5"),
        raw_chargebacks_md5=lineage.get("raw_chargebacks_md5"),
        dbt_invocation_id=lineage.get("dbt_invocation_id"),
        gx_run_id=lineage.get("gx_run_id"),
        gx_success=lineage.get("gx_success"),
        created_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
    )
    versioning.record_version(paths, record)
    return {
        "batch_date": batch_date.isoformat(),
        "interval_start": interval_start.isoformat(),
        "interval_end": interval_end.isoformat(),
        "feature_rows": int(feature_rows),
        "training_rows": int(training_rows),
        "data_version": data_version,
        **{k: v for k, v in lineage.items() if v is not None},
    }


def publish_lineage(paths: StatePaths, landed: LandedBatch, gates: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What a published version records of how it was made: the landed feeds' md5s, the dbt build,
    and the GX gates' run ids (joined) and joint verdict (`gates` are their XCom results)."""
    return {
        "raw_transactions_md5": landed.transactions.md5,
        "raw_chargebacks_md5": landed.chargebacks.md5,
        "dbt_invocation_id": latest_dbt_invocation(paths),
        "gx_run_id": ";".join(str(g["run_id"]) for g in gates if g.get("run_id")),
        "gx_success": all(g.get("success") for g in gates),
    }


def latest_dbt_invocation(paths: StatePaths, model: str = "ml_transaction_features") -> str | None:
    """The dbt invocation id that last built `model` (written by the marts' post-hook)."""
    if not warehouse.exists(paths):
        return None
    with warehouse.connect(paths, read_only=True) as con:
        if not con.table_exists("ml", "dbt_invocations"):
            return None
        row = con.fetchone(
            "select invocation_id from ml.dbt_invocations where model = ? order by built_at desc limit 1",
            [model],
        )
    return row[0] if row else None


def published_row_count(paths: StatePaths, batch_date: dt.date | None = None) -> int:
    if not warehouse.exists(paths):
        return 0
    with warehouse.connect(paths, read_only=True) as con:
        if not con.table_exists("published", "transaction_features"):
            return 0
        if batch_date is None:
            return int(con.scalar(f"select count(*) from {PUBLISHED_FEATURES}"))
        return int(con.scalar(f"select count(*) from {PUBLISHED_FEATURES} where batch_date = ?", [batch_date]))


def snapshot_path_for(paths: StatePaths, table: str, batch_date: dt.date) -> Path:
    return paths.raw / table / f"batch_date={batch_date.isoformat()}.parquet"
