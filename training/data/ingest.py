"""Ingest and publish: the two ends of the data pipeline that touch storage.

`land` takes the source system's feed for one data interval and writes it as DVC-versioned Parquet
(the same interval always lands at the same path, so a re-run replaces it). `load_raw` replaces that
interval's partition of the warehouse's `raw` tables. `publish` runs only after the feature gate
passed: it replaces the interval's partition of the contract's published features table
(`contract.marts.published`) and versions the training set: the days whose rows are new or changed
get a partition each, and a manifest naming every day's partition is the new data version
(`training.storage.versioning`). Nothing downstream reads anything but `published.*` and data
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
from training.config import Config, load_config
from training.contract import DataContract, Marts, _Feed
from training.errors import ClosedloopError
from training.paths import StatePaths
from training.storage import versioning, warehouse

#: The warehouse type of each contract column type (portable across DuckDB and PostgreSQL).
SQL_TYPES = {
    "string": "varchar",
    "integer": "bigint",
    "double": "double precision",
    "boolean": "boolean",
    "timestamp": "timestamp",
    "date": "date",
}


def raw_columns(contract: DataContract) -> dict[str, list[str]]:
    """Each feed's delivered columns, by feed name (what the source sends; ingest adds batch_date/loaded_at)."""
    return {name: feed.column_names for name, feed in contract.feeds.items()}


def raw_ddl(feed: _Feed) -> str:
    """`create table if not exists raw.<feed>` with the contract's columns and types + the bookkeeping."""
    cols = [f"{name} {SQL_TYPES[rule.type]}" for name, rule in feed.columns.items()]
    return f"create table if not exists {feed.raw_table} ({', '.join([*cols, 'batch_date date', 'loaded_at timestamp'])})"


def raw_index_ddl(contract: DataContract) -> list[str]:
    """PostgreSQL indexes on the raw tables' lookup keys: the history checks' ids and the partition.

    The front door's history checks join a batch's ids against these columns, and a partition
    replace deletes by `batch_date`; indexed, both cost what the batch holds, not all of history.
    (DuckDB answers the same joins with a hash join over the column; it gets no index.)
    """
    out = []
    for spec in contract.feeds.values():
        schema, table = spec.raw_table.split(".", 1)
        keys = [spec.id, *([contract.labels.event_id] if spec is contract.labels else []), "batch_date"]
        out += [f"create index if not exists {table}_{key}_idx on {schema}.{table} ({key})" for key in keys]
    return out


class ContractMismatch(ClosedloopError, ValueError):
    """Landed data does not have the contract's shape; the message names the file, the column and the fix."""


def candidate_features(cfg: Config) -> str:
    """The feature mart dbt builds (`contract.marts.features`, `schema.table`), not yet published."""
    return cfg.contract.marts.features


def candidate_training_set(cfg: Config) -> str:
    """The training-set mart dbt builds (`contract.marts.training_set`)."""
    return cfg.contract.marts.training_set


def published_features(cfg: Config) -> str:
    """The published features table inference and monitoring read (`contract.marts.published`)."""
    return cfg.contract.marts.published


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
    """One interval's two landed feeds, by role: `events` and `labels` (`LandedFeed.table` is the feed name)."""

    batch_date: dt.date
    events: LandedFeed
    labels: LandedFeed

    @property
    def feeds(self) -> dict[str, LandedFeed]:
        """Both feeds by feed name, events first (the order the front door admits and ingest loads them)."""
        return {self.events.table: self.events, self.labels.table: self.labels}

    def to_xcom(self) -> dict[str, Any]:
        data = asdict(self)
        data["batch_date"] = self.batch_date.isoformat()
        return data

    @classmethod
    def from_xcom(cls, data: dict[str, Any]) -> LandedBatch:
        return cls(
            batch_date=dt.date.fromisoformat(data["batch_date"]),
            events=LandedFeed(**data["events"]),
            labels=LandedFeed(**data["labels"]),
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
    contract = cfg.contract
    return LandedBatch(batch_date=batch_date, events=landed[contract.events.feed], labels=landed[contract.labels.feed])


def read_landed(feed: LandedFeed | dict[str, Any]) -> pd.DataFrame:
    """The landed feed exactly as delivered, read back from its versioned file."""
    feed = feed if isinstance(feed, LandedFeed) else LandedFeed(**feed)
    return pd.read_parquet(feed.path)


def load_raw(
    paths: StatePaths, batch: LandedBatch, loaded_at: dt.datetime | None = None, *, contract: DataContract | None = None
) -> dict[str, int]:
    """Replace the interval's partition of each feed's `raw.<feed>` table (after the front door).

    Tables and columns come from `contract` (default: the deployment's config). A landed file that
    lacks a contract column raises `ContractMismatch` naming the file, the column and the fix.
    """
    contract = contract if contract is not None else load_config().contract
    loaded_at = loaded_at or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    counts = {}
    ddl = ["create schema if not exists raw", *(raw_ddl(f) for f in contract.feeds.values())]
    if warehouse.WarehouseSettings.from_env().backend == "postgres":
        ddl += raw_index_ddl(contract)
    with warehouse.transaction(paths, ddl=ddl) as con:
        for feed in (batch.events, batch.labels):
            spec = contract.feeds.get(feed.table)
            if spec is None:
                raise ContractMismatch(
                    f"landed feed {feed.table!r} ({feed.path}) is not a feed of the contract "
                    f"({', '.join(contract.feeds)}): land it under one of those names or declare it in contract:"
                )
            role = "events" if spec is contract.events else "labels"
            _require_columns(feed, spec, role)
            missing = [c for c in spec.column_names if c not in con.columns(spec.raw_table)]
            if missing:  # the table was created from an older contract: `if not exists` kept it as it was
                raise ContractMismatch(
                    f"{spec.raw_table} has no column {', '.join(missing)} that contract.{role}.columns declares "
                    f"(the table predates that contract): add it (`alter table {spec.raw_table} add column "
                    f"{missing[0]} {SQL_TYPES[spec.columns[missing[0]].type]}`) or fix the contract; "
                    "`python -m training check-contract` lists every such mismatch"
                )
            frame = pd.read_parquet(feed.path, columns=spec.column_names)
            frame["batch_date"] = batch.batch_date
            frame["loaded_at"] = loaded_at
            con.replace_partition(f"raw.{feed.table}", {"batch_date": batch.batch_date}, frame)
            counts[feed.table] = int(
                con.scalar(f"select count(*) from raw.{feed.table} where batch_date = ?", [batch.batch_date])
            )
    return counts


def _require_columns(feed: LandedFeed, spec: _Feed, role: str) -> None:
    import pyarrow.parquet as pq

    present = set(pq.read_schema(feed.path).names)
    missing = [c for c in spec.column_names if c not in present]
    if missing:
        raise ContractMismatch(
            f"the landed {feed.table} file {feed.path} has no column {', '.join(missing)} that "
            f"contract.{role}.columns declares: deliver it, or drop it from the contract "
            "and the dbt staging model together (then run `python -m training check-contract`)"
        )


def read_candidate_features(paths: StatePaths, cfg: Config, batch_date: dt.date) -> pd.DataFrame:
    """The interval's rows of the feature mart dbt just built (not yet published)."""
    features = candidate_features(cfg)
    with warehouse.connect(paths, read_only=True) as con:
        if not con.table_exists(*Marts.split(features)):
            raise PublishError(f"{features} does not exist: the dbt build did not run")
        return con.frame(
            f"select * from {features} where batch_date = ? order by {cfg.model.id_column}", [batch_date]
        )


def publish(
    paths: StatePaths,
    cfg: Config,
    batch_date: dt.date,
    interval_start: dt.datetime,
    interval_end: dt.datetime,
    lineage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish the gated interval: replace its feature partition and version the training set.

    The tables are the contract's marts (`cfg.contract.marts`). Returns the small dict that becomes
    the `features` Asset event's extra.
    """
    lineage = lineage or {}
    features, training_set, published = candidate_features(cfg), candidate_training_set(cfg), published_features(cfg)
    ddl = (
        f"create schema if not exists {Marts.split(published)[0]}",
        f"create table if not exists {published} as select * from {features} limit 0",
    )
    with warehouse.connect(paths) as con:
        for table in (features, training_set):
            if not con.table_exists(*Marts.split(table)):
                raise PublishError(f"{table} does not exist: the dbt build did not run for {batch_date}")
    with warehouse.transaction(paths, ddl=ddl) as con:
        feature_rows = con.scalar(f"select count(*) from {features} where batch_date = ?", [batch_date])
        if feature_rows == 0:
            raise PublishError(
                f"no feature rows for batch_date {batch_date}: nothing to publish (was the raw batch loaded?)"
            )
        manifest = versioning.version_table(paths, con, training_set, cfg.model.id_column)
        training_rows = manifest.rows
        con.execute(f"delete from {published} where batch_date = ?", [batch_date])
        con.copy_rows(published, features, {"batch_date": batch_date})
    data_version = versioning.store_manifest(paths, manifest)
    record = versioning.DataVersionRecord(
        data_version=data_version,
        batch_date=batch_date,
        interval_start=interval_start.replace(tzinfo=None),
        interval_end=interval_end.replace(tzinfo=None),
        feature_rows=int(feature_rows),
        training_rows=int(training_rows),
        snapshot_path=str(versioning.manifest_path(paths, data_version)),
        raw_events_md5=lineage.get("raw_events_md5"),
        raw_labels_md5=lineage.get("raw_labels_md5"),
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


def publish_lineage(
    paths: StatePaths, cfg: Config, landed: LandedBatch, gates: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """What a published version records of how it was made: the landed feeds' md5s (events, labels),
    the dbt build, and the GX gates' run ids (joined) and joint verdict (`gates` are their XCom results)."""
    return {
        "raw_events_md5": landed.events.md5,
        "raw_labels_md5": landed.labels.md5,
        "dbt_invocation_id": latest_dbt_invocation(paths, cfg),
        "gx_run_id": ";".join(str(g["run_id"]) for g in gates if g.get("run_id")),
        "gx_success": all(g.get("success") for g in gates),
    }


def latest_dbt_invocation(paths: StatePaths, cfg: Config, model: str | None = None) -> str | None:
    """The dbt invocation id that last built `model` (written by the marts' post-hook); by default
    the contract's feature mart."""
    schema, mart = Marts.split(candidate_features(cfg))  # the post-hook writes into the mart's schema
    if not warehouse.exists(paths):
        return None
    with warehouse.connect(paths, read_only=True) as con:
        if not con.table_exists(schema, "dbt_invocations"):
            return None
        row = con.fetchone(
            f"select invocation_id from {schema}.dbt_invocations where model = ? order by built_at desc limit 1",
            [model or mart],
        )
    return row[0] if row else None


def published_row_count(paths: StatePaths, cfg: Config, batch_date: dt.date | None = None) -> int:
    """Rows of the contract's published features table (of one day, or all); 0 before the first publish."""
    if not warehouse.exists(paths):
        return 0
    published = published_features(cfg)
    with warehouse.connect(paths, read_only=True) as con:
        if not con.table_exists(*Marts.split(published)):
            return 0
        if batch_date is None:
            return int(con.scalar(f"select count(*) from {published}"))
        return int(con.scalar(f"select count(*) from {published} where batch_date = ?", [batch_date]))


def snapshot_path_for(paths: StatePaths, table: str, batch_date: dt.date) -> Path:
    return paths.raw / table / f"batch_date={batch_date.isoformat()}.parquet"


# --------------------------------------------------------------------------------------------
# day order and backfill
# --------------------------------------------------------------------------------------------

#: Label rows the front door holds until their event arrives (admission's history checks).
HELD_FOR_EVENT = ("labels_refer_to_known_events", "labels_of_quarantined_events")


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
        # held label rows are named by their label id (`row_id`, the labels feed's contract id)
        held = con.frame(
            f"select batch_date, row_id, expectation from {rows_table} where table_name = ?", [lab.raw_table]
        )
        raw_columns = con.columns(lab.raw_table)
    if held.empty:
        return {"readmitted_labels": 0}
    held["batch_date"] = pd.to_datetime(held["batch_date"]).dt.date
    reasons = held.groupby(["batch_date", "row_id"])["expectation"].agg(set)
    waiting = reasons[reasons.map(lambda r: r <= set(HELD_FOR_EVENT))].reset_index()
    candidates: dict[dt.date, pd.DataFrame] = {}
    for delivered, ids in waiting.groupby("batch_date")["row_id"]:
        evidence = paths.quarantine / lab.raw_table / f"batch_date={delivered.isoformat()}.parquet"
        if evidence.exists():
            rows = pd.read_parquet(evidence)
            candidates[delivered] = rows[rows[lab.id].astype(str).isin(set(ids.astype(str)))]
    if not candidates or all(f.empty for f in candidates.values()):
        return {"readmitted_labels": 0}
    event_ids = pd.concat([f[lab.event_id] for f in candidates.values()]).astype(str)
    with warehouse.connect(paths, read_only=True) as con:
        events = _values_in(con, ev.raw_table, ev.id, [ev.id, ev.time], event_ids)
        already = _values_in(con, lab.raw_table, lab.id, [lab.id],
                             pd.concat([f[lab.id] for f in candidates.values()]).astype(str))
    event_time = dict(zip(events[ev.id].astype(str), pd.to_datetime(events[ev.time]), strict=True))
    already_ids = set(already[lab.id].astype(str))
    loaded_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    counts: dict[str, int] = {}
    with warehouse.transaction(paths) as con:
        for delivered, rows in candidates.items():
            rows = rows[rows[lab.event_id].astype(str).isin(event_time)]
            if rows.empty:
                continue
            reported = pd.to_datetime(rows[lab.reported_at], errors="coerce")
            happened = pd.to_datetime(rows[lab.event_id].astype(str).map(event_time))
            rows = rows[(reported >= happened).to_numpy()]  # never a label before its event
            rows = rows[~rows[lab.id].astype(str).isin(already_ids)]
            if rows.empty:
                continue
            rows = rows.assign(batch_date=delivered, loaded_at=loaded_at)
            con.insert_frame(lab.raw_table, rows[[c for c in raw_columns if c in rows.columns]])
            ids = sorted(set(rows[lab.id].astype(str)))
            marks = ", ".join("?" for _ in ids)
            kinds = ", ".join("?" for _ in HELD_FOR_EVENT)
            con.execute(
                f"delete from {rows_table} where table_name = ? and batch_date = ? and row_id in ({marks}) "
                f"and expectation in ({kinds})",
                [lab.raw_table, delivered, *ids, *HELD_FOR_EVENT],
            )
            counts[delivered.isoformat()] = len(rows)
    return {"readmitted_labels": sum(counts.values()), "readmitted_by_delivery_day": counts,
            **({"after_loading": day.isoformat()} if day else {})}


def _values_in(con: warehouse.Session, table: str, column: str, select: list[str], values: pd.Series) -> pd.DataFrame:
    """`select` columns of the rows of `table` whose `column` is one of `values` (one semi-join)."""
    return con.rows_with_values(table, column, values, select)


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
    suite (`gate`) and re-copied from the mart, and the training set is versioned again (new partitions
    for the changed days only, a new manifest) and recorded
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
        manifest = versioning.version_table(paths, con, cfg.contract.marts.training_set, cfg.model.id_column)
        training_rows = manifest.rows
    newest = later[-1]
    data_version = versioning.store_manifest(paths, manifest)
    start = dt.datetime.combine(newest, dt.time())
    versioning.record_version(paths, versioning.DataVersionRecord(
        data_version=data_version, batch_date=newest, interval_start=start,
        interval_end=start + dt.timedelta(days=1), feature_rows=counts[newest], training_rows=training_rows,
        snapshot_path=str(versioning.manifest_path(paths, data_version)), raw_events_md5=None, raw_labels_md5=None,
        dbt_invocation_id=latest_dbt_invocation(paths, cfg), gx_run_id=";".join(gx_runs) or None,
        gx_success=True if gate else None, created_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
    ))
    return {
        "republished": [{"batch_date": d.isoformat(), "changed_rows": n, "feature_rows": counts[d]}
                        for d, n in changed.items()],
        "republished_data_version": data_version,
        "republished_as_of": newest.isoformat(),
    }
