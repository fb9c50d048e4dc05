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

from training.config import Config
from training.errors import ClosedloopError
from training.paths import StatePaths
from training.source import simulator
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
    """The source system's feeds for one day (the simulator stands in for production)."""
    return {
        "transactions": simulator.generate_transactions(cfg.require_simulator(), batch_date),
        "chargebacks": simulator.generate_chargebacks(cfg.require_simulator(), batch_date),
    }


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


# --------------------------------------------------------------------------------------------
# day order and backfill
# --------------------------------------------------------------------------------------------

#: Label rows the front door holds until their event arrives (admission's history checks).
HELD_FOR_EVENT = ("labels_refer_to_known_transactions", "labels_of_quarantined_transactions")


class DayOrderError(ClosedloopError, RuntimeError):
    """A day whose previous day was never published, under `admission.day_order: strict`."""


def published_days(paths: StatePaths, cfg: Config) -> list[dt.date]:
    """The days with a partition in the published features table, oldest first."""
    if not warehouse.exists(paths):
        return []
    table = cfg.contract.marts.published
    with warehouse.connect(paths, read_only=True) as con:
        if not con.table_exists(*table.split(".")):
            return []
        days = con.frame(f"select distinct batch_date from {table} order by 1")["batch_date"]
    return [pd.Timestamp(d).date() for d in days]


def check_day_order(paths: StatePaths, cfg: Config, day: dt.date) -> None:
    """Refuse `day` when its previous day was never published (policy `admission.day_order: strict`).

    A day's point-in-time features read the earlier days' events (velocity windows, first-seen flags,
    category rates), so a day published over a hole changes when the hole is filled: training then
    reads other features than serving scored. The first published day starts the history (a
    deployment may start after `contract.start_date`); a day older than every published day is a
    backfill and always allowed (`republish_later_days` re-publishes what it changes).
    """
    if cfg.admission.day_order != "strict" or day <= cfg.start_date:
        return
    previous = day - dt.timedelta(days=1)
    earlier = [d for d in published_days(paths, cfg) if d < day]
    if not earlier or previous in earlier:
        return
    first_missing = max(earlier) + dt.timedelta(days=1)
    n = (day - first_missing).days
    missing = str(first_missing) if n == 1 else f"{first_missing}..{previous} ({n} days)"
    conf = '{"batch_date": "' + first_missing.isoformat() + '"}'
    raise DayOrderError(
        f"{day} was refused: the day before it was never published (missing: {missing}; the last published "
        f"day before it is {max(earlier)}). Its point-in-time features would be built over the hole and change "
        "when the missing day arrives (admission.day_order: strict). Run the missing day(s) first, oldest "
        f"first: airflow dags trigger data_pipeline --conf '{conf}', then re-run {day}. To publish days out "
        "of order on purpose, set admission.day_order: allow_gaps (the backfill then re-publishes the later "
        "days it changes)."
    )


def readmit_held_labels(paths: StatePaths, cfg: Config, day: dt.date | None = None) -> dict[str, Any]:
    """Load the label rows held because their event was unknown, now that their event is loaded.

    The front door holds such rows (quarantine.rejected_rows with a HELD_FOR_EVENT expectation, the
    rows themselves in the quarantine evidence of their delivery day). After a backfill loads the
    missing events, they are appended to their delivery day's partition of the raw labels table and
    leave the quarantine; rows held for any other reason, or reported before their event, stay held.
    Run after `load_raw` and before the dbt build, so the rebuilt marts see them. Idempotent.
    """
    lab, ev = cfg.contract.labels, cfg.contract.events
    if not warehouse.exists(paths):
        return {"readmitted_labels": 0}
    rows_table = "quarantine.rejected_rows"
    with warehouse.connect(paths, read_only=True) as con:
        if not (con.table_exists("quarantine", "rejected_rows") and con.table_exists(*ev.raw_table.split("."))
                and con.table_exists(*lab.raw_table.split("."))):
            return {"readmitted_labels": 0}
        # the row-id column of the quarantine (named by the feeds' row ids; `row_id` once generic)
        id_col = "row_id" if "row_id" in con.columns(rows_table) else ev.id
        held = con.frame(
            f"select batch_date, {id_col} as row_id, expectation from {rows_table} where table_name = ?",
            [lab.raw_table],
        )
        if held.empty:
            return {"readmitted_labels": 0}
        held["batch_date"] = pd.to_datetime(held["batch_date"]).dt.date
        reasons = held.groupby(["batch_date", "row_id"])["expectation"].agg(set)
        waiting = reasons[reasons.map(lambda r: r <= set(HELD_FOR_EVENT))].reset_index()
        events = _values_in(con, ev.raw_table, ev.id, [ev.id, ev.time], waiting["row_id"].astype(str))
        raw_columns = con.columns(lab.raw_table)
    waiting = waiting[waiting["row_id"].astype(str).isin(set(events[ev.id].astype(str)))]
    if waiting.empty:
        return {"readmitted_labels": 0}
    event_time = dict(zip(events[ev.id].astype(str), pd.to_datetime(events[ev.time]), strict=True))
    loaded_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    admitted: dict[dt.date, pd.DataFrame] = {}
    for delivered, ids in waiting.groupby("batch_date")["row_id"]:
        evidence = paths.quarantine / lab.raw_table / f"batch_date={delivered.isoformat()}.parquet"
        if not evidence.exists():
            continue
        rows = pd.read_parquet(evidence)
        rows = rows[rows[lab.event_id].astype(str).isin(set(ids.astype(str)))]
        reported = pd.to_datetime(rows[lab.reported_at], errors="coerce")
        rows = rows[reported >= rows[lab.event_id].astype(str).map(event_time)]  # never a label before its event
        if not rows.empty:
            admitted[delivered] = rows.assign(batch_date=delivered, loaded_at=loaded_at)
    if not admitted:
        return {"readmitted_labels": 0}
    with warehouse.connect(paths, read_only=True) as con:
        already = _values_in(con, lab.raw_table, lab.id, [lab.id],
                             pd.concat([f[lab.id] for f in admitted.values()]).astype(str))
    already_ids = set(already[lab.id].astype(str))
    counts: dict[str, int] = {}
    with warehouse.transaction(paths) as con:
        for delivered, rows in admitted.items():
            rows = rows[~rows[lab.id].astype(str).isin(already_ids)]
            ids = sorted(set(rows[lab.event_id].astype(str)))
            if rows.empty:
                continue
            con.insert_frame(lab.raw_table, rows[[c for c in raw_columns if c in rows.columns]])
            marks = ", ".join("?" for _ in ids)
            kinds = ", ".join("?" for _ in HELD_FOR_EVENT)
            con.execute(
                f"delete from {rows_table} where table_name = ? and batch_date = ? and {id_col} in ({marks}) "
                f"and expectation in ({kinds})",
                [lab.raw_table, delivered, *ids, *HELD_FOR_EVENT],
            )
            counts[delivered.isoformat()] = len(rows)
    return {"readmitted_labels": sum(counts.values()), "readmitted_by_delivery_day": counts,
            **({"after_loading": day.isoformat()} if day else {})}


def _values_in(con: warehouse.Session, table: str, column: str, select: list[str], values: pd.Series) -> pd.DataFrame:
    """`select` columns of the rows of `table` whose `column` is one of `values` (5k per query)."""
    uniq = sorted(set(values))
    out = []
    for i in range(0, len(uniq), 5000):
        chunk = uniq[i:i + 5000]
        out.append(con.frame(
            f"select {', '.join(select)} from {table} where {column} in ({', '.join('?' for _ in chunk)})", chunk
        ))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=select)


#: Relative tolerance for comparing floating-point features: a rebuild that adds rows to a window's
#: partition may sum the same values in another order (last-bit differences), which is no change.
FLOAT_TOLERANCE = 1e-9
_APPROXIMATE_TYPES = ("double", "real", "float", "numeric", "decimal")


def changed_published_days(paths: StatePaths, cfg: Config, after: dt.date | None = None) -> dict[dt.date, int]:
    """Published days (after `after`) whose published rows differ from the feature mart's, with the
    number of differing rows (a row missing on either side, or a value that differs; floating-point
    values beyond FLOAT_TOLERANCE): empty when serving reads what training reads."""
    feats, pub = cfg.contract.marts.features, cfg.contract.marts.published
    key = warehouse.quote_ident(cfg.model.id_column)
    with warehouse.connect(paths, read_only=True) as con:
        if not con.table_exists(*pub.split(".")) or not con.table_exists(*feats.split(".")):
            return {}
        schema, name = pub.split(".")
        types = con.frame(
            "select column_name, data_type from information_schema.columns where table_schema = ? "
            "and table_name = ? order by ordinal_position", [schema, name],
        )
        differs = []
        for column, kind in zip(types["column_name"], types["data_type"].str.lower(), strict=True):
            c = warehouse.quote_ident(str(column))
            if any(t in kind for t in _APPROXIMATE_TYPES):
                differs.append(f"(p.{c} is null) <> (m.{c} is null) or abs(p.{c} - m.{c}) > "
                               f"{FLOAT_TOLERANCE} * greatest(abs(p.{c}), abs(m.{c}), 1)")
            else:
                differs.append(f"p.{c} is distinct from m.{c}")
        since = after or dt.date.min
        frame = con.frame(
            f"select coalesce(p.batch_date, m.batch_date) as batch_date, count(*) as n "
            f"from (select * from {pub} where batch_date > ?) p "
            f"full outer join (select * from {feats} where batch_date in "
            f"(select distinct batch_date from {pub} where batch_date > ?)) m "
            f"on p.{key} = m.{key} and p.batch_date = m.batch_date "
            f"where p.{key} is null or m.{key} is null or " + " or ".join(f"({d})" for d in differs) +
            " group by 1 order by 1",
            [since, since],
        )
    return {pd.Timestamp(d).date(): int(n) for d, n in zip(frame["batch_date"], frame["n"], strict=True)}


def republish_later_days(paths: StatePaths, cfg: Config, day: dt.date, *, gate: bool = True) -> dict[str, Any]:
    """After `day` was (re)published, re-publish the later published days whose features changed.

    Filling a missing day (or correcting an old one) changes the point-in-time features of the days
    after it (velocity windows, first-seen flags, category rates): the rebuilt mart then disagrees
    with what serving reads. Each later published day whose rows differ is gated with the feature
    suite (`gate`) and re-copied from the mart, and the training set is snapshotted again and recorded
    as the data version of the newest published day, so `latest_data_version` is the rebuilt one.
    Returns what changed (empty `republished` when nothing did).
    """
    from training.data import quality

    feats, pub = cfg.contract.marts.features, cfg.contract.marts.published
    later = [d for d in published_days(paths, cfg) if d > day]
    if not later:
        return {"republished": []}
    changed = changed_published_days(paths, cfg, after=day)
    suite = feats.split(".")[1]
    gx_runs = []
    if gate:
        for d in changed:
            gx_runs.append(quality.gate(suite, quality.load_warehouse_batch(d, paths, table=feats), d, paths).run_id)
    with warehouse.transaction(paths) as con:
        for d in changed:
            con.execute(f"delete from {pub} where batch_date = ?", [d])
            con.copy_rows(pub, feats, {"batch_date": d})
        counts = {d: int(con.scalar(f"select count(*) from {pub} where batch_date = ?", [d])) for d in later}
        snapshot_file = paths.published / "training_set.parquet"
        snapshot_file.parent.mkdir(parents=True, exist_ok=True)
        con.export_parquet(
            f"select * from {cfg.contract.marts.training_set} order by batch_date, {cfg.model.id_column}",
            snapshot_file,
        )
        training_rows = int(con.scalar(f"select count(*) from {cfg.contract.marts.training_set}"))
    newest = later[-1]
    data_version = versioning.snapshot(paths, snapshot_file)
    start = dt.datetime.combine(newest, dt.time())
    versioning.record_version(paths, versioning.DataVersionRecord(
        data_version=data_version, batch_date=newest, interval_start=start,
        interval_end=start + dt.timedelta(days=1), feature_rows=counts[newest], training_rows=training_rows,
        snapshot_path=str(snapshot_file), raw_transactions_md5=None, raw_chargebacks_md5=None,
        dbt_invocation_id=latest_dbt_invocation(paths), gx_run_id=";".join(gx_runs) or None,
        gx_success=True if gate else None, created_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
    ))
    return {
        "republished": [{"batch_date": d.isoformat(), "changed_rows": n, "feature_rows": counts[d]}
                        for d, n in changed.items()],
        "republished_data_version": data_version,
        "republished_as_of": newest.isoformat(),
    }
