"""The front door: which part of a landed batch may enter the warehouse's `raw` tables.

Both feeds of the data contract (the events and the labels) pass the same steps, and every way a
batch can be bad ends the same way — quarantined with a message that names the feed, the day, the
rows (by the feed's contract id), the column and what to do — so nothing bad reaches `raw` and
nothing already loaded changes:

1. read the landed file (an empty or unreadable file is a batch failure, not a stack trace);
2. schema policy for columns the contract does not declare (`admission.extra_columns`: reject |
   warn | allow; warn/allow drop them before anything else sees them);
3. the feed's raw suite, generated from the contract's column rules (plus the suite file's extras)
   through a Great Expectations checkpoint (training.data.suites, training.data.validation). The
   rules are the ones dbt's staging tests are checked against (`python -m training check-contract`),
   so a row dbt would refuse is quarantined here and can never block a later day;
4. checks GX cannot make on one batch, against what is already loaded: event ids reused from
   another day (the batch is rejected: loading it would fail dbt's `unique` test for every later
   day), labels whose event never existed (orphan labels: held as rows, never a reason to refuse
   the day, since labels refer to past days) or sits in a quarantined batch, and label ids already
   delivered on another day;
5. row-level quarantine: when every failure names its rows and they are at most
   `admission.max_rejected_row_share` of the batch, those rows are quarantined and the rest is
   admitted (written next to the landed file and versioned); otherwise the whole batch is.

A failure is a dict {expectation, column, details, guards, row_ids, ...}: `row_ids` are values of
the feed's contract id (`events.id`, `labels.id`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from training.config import Config
from training.contract import DataContract, _Feed
from training.data import feed_checks, quarantine, validation
from training.data.ingest import LandedBatch, LandedFeed
from training.data.quality import DataQualityGateFailed
from training.data.suites import BOOKKEEPING_COLUMNS, raw_suite_name
from training.paths import StatePaths
from training.storage import versioning, warehouse

log = logging.getLogger(__name__)

#: Failures that say something about the whole batch, whatever rows they name.
BATCH_LEVEL = {
    "readable_file",
    "ids_not_already_loaded",
    "expect_table_columns_to_match_set",
    "expect_table_row_count_to_be_between",
    "expect_column_values_to_be_in_type_list",
    *feed_checks.BATCH_LEVEL,
}


def feed_suites(contract: DataContract) -> dict[str, str]:
    """Each feed's raw suite by feed name (generated from the contract, `raw_<feed>`)."""
    return {name: raw_suite_name(name) for name in contract.feeds}


@dataclass(frozen=True)
class FeedVerdict:
    """What the front door decided for one feed (small, JSON-safe through `to_xcom`)."""

    table: str
    suite: str
    run_id: str
    delivered_rows: int
    admitted: LandedFeed
    rejected_rows: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_xcom(self) -> dict[str, Any]:
        return {
            "table": self.table, "suite": self.suite, "run_id": self.run_id, "success": True,
            "delivered_rows": self.delivered_rows, "admitted_rows": self.admitted.rows,
            "rejected_rows": self.rejected_rows, "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Admission:
    """The admitted batch (what `ingest.load_raw` loads) and each feed's verdict, by feed name."""

    batch: LandedBatch
    feeds: dict[str, FeedVerdict]

    def to_xcom(self) -> dict[str, Any]:
        return {
            "success": True,
            "run_id": ";".join(v.run_id for v in self.feeds.values()),
            "admitted": self.batch.to_xcom(),
            "feeds": {k: v.to_xcom() for k, v in self.feeds.items()},
        }


def admit(paths: StatePaths, cfg: Config, landed: LandedBatch, run_name: str | None = None) -> Admission:
    """Run the front door on both feeds; raise `DataQualityGateFailed` if a feed is refused.

    Events go first: a refused event batch stops the day before its labels are looked at, and the
    labels of an admitted day may refer to that day's events.
    """
    day = landed.batch_date
    events, labels = cfg.contract.events, cfg.contract.labels
    ev = _admit_feed(paths, cfg, events, landed.events, day, run_name)
    ev_ids = set(pd.read_parquet(ev.admitted.path, columns=[events.id])[events.id].dropna().astype(str))
    lb = _admit_feed(paths, cfg, labels, landed.labels, day, run_name, same_day_event_ids=ev_ids)
    return Admission(
        batch=LandedBatch(batch_date=day, events=ev.admitted, labels=lb.admitted),
        feeds={events.feed: ev, labels.feed: lb},
    )


# --------------------------------------------------------------------------------------------
# one feed
# --------------------------------------------------------------------------------------------


def _role(cfg: Config, spec: _Feed) -> str:
    return "events" if spec is cfg.contract.events else "labels"


def _admit_feed(
    paths: StatePaths,
    cfg: Config,
    spec: _Feed,
    feed: LandedFeed,
    day: dt.date,
    run_name: str | None,
    same_day_event_ids: set[str] | None = None,
) -> FeedVerdict:
    if feed.table != spec.feed:
        raise ValueError(f"landed feed {feed.table!r} given as contract feed {spec.feed!r} ({feed.path})")
    suite = raw_suite_name(spec.feed)
    frame = _read(paths, spec, feed, day, suite)
    frame, warnings = _column_policy(cfg, frame, spec, day)
    result = validation.run_checkpoint(
        suite, frame, f"{suite}/{day.isoformat()}", paths, batch_date=day,
        run_name=f"{run_name}__{suite}" if run_name else None, contract=cfg.contract,
        expectations_dir=cfg.project.expectations_path,
    )
    failed = list(result.failed) + _history_failures(paths, cfg.contract, spec, frame, day, same_day_event_ids)
    failed, checked = feed_checks.review(paths, cfg, feed.table, frame, day, failed)
    warnings += checked
    if not failed:
        return FeedVerdict(feed.table, suite, result.run_id, len(frame), feed, 0, warnings)

    row_ids = _row_keys(frame, spec) if spec.id in frame.columns else None
    if row_ids is not None:
        failed = [_name_rows_without_id(item, row_ids, frame, spec) for item in failed]
    result = replace(result, success=False, failed=failed, id_column=spec.id)
    bad_ids = _row_level_ids(failed)
    share = cfg.admission.max_rejected_row_share
    if bad_ids is not None and len(frame) and row_ids is not None:
        bad_rows = row_ids.isin(bad_ids)
        exempt = row_ids.isin(_exempt_ids(failed))
        if (bad_rows & ~exempt).mean() <= share:
            admitted = _write_admitted(paths, feed, frame.loc[~bad_rows], day)
            n_bad = int(bad_rows.sum())
            quarantine.record(result, frame.loc[bad_rows], day, spec.raw_table, paths,
                              reason_prefix=f"{n_bad} of {len(frame)} rows quarantined, the rest admitted")
            warnings.append(
                f"the {spec.feed} feed for {day}: {n_bad} of {len(frame)} rows quarantined, the rest admitted "
                f"({_rows_named(result, spec)}). To fix: correct those rows at the source and re-deliver the "
                f"{spec.feed} feed for {day}, then re-run that day; the day's other rows are loaded"
            )
            log.warning(warnings[-1])
            return FeedVerdict(feed.table, suite, result.run_id, len(frame), admitted, n_bad, warnings)
    quarantine.record(result, frame, day, spec.raw_table, paths)
    raise DataQualityGateFailed(_refusal(cfg, spec, feed, day, result, share, bad_ids, frame), result)


def _read(paths: StatePaths, spec: _Feed, feed: LandedFeed, day: dt.date, suite: str) -> pd.DataFrame:
    """The landed file as delivered; any read error becomes a quarantined, named batch failure."""
    path = Path(feed.path)
    try:
        if path.stat().st_size == 0:
            raise ValueError("the file is empty (0 bytes)")
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - every read error gets the same clear, quarantined failure
        problem = " ".join(str(exc).split())[:300] or type(exc).__name__
        result = validation.GateResult(
            success=False, suite=suite, batch_id=f"{suite}/{day.isoformat()}", run_id=f"unreadable@{day}",
            failed=[{"expectation": "readable_file", "column": None, "details": problem,
                     "guards": "a truncated, empty or corrupt delivery", "row_ids": []}],
            data_docs_path=None, statistics={"evaluated_expectations": 1}, row_count=0, id_column=spec.id,
        )
        quarantine.record(result, pd.DataFrame(), day, spec.raw_table, paths, evidence_file=path)
        raise DataQualityGateFailed(
            f"The {spec.feed} feed for {day} cannot be read ({path}): {problem}. The batch was quarantined "
            f"in {quarantine.REJECTED_BATCHES}; nothing was loaded. Re-deliver the {spec.feed} feed for {day} "
            "and re-run that day (data_pipeline with conf {\"batch_date\": \"" + day.isoformat() + "\"}).",
            result,
        ) from None


def _column_policy(cfg: Config, frame: pd.DataFrame, spec: _Feed, day: dt.date) -> tuple[pd.DataFrame, list[str]]:
    """Drop columns the contract does not declare when the policy allows them; `reject` leaves them to GX."""
    known = set(spec.column_names) | set(BOOKKEEPING_COLUMNS)
    extra = sorted(str(c) for c in frame.columns if c not in known)
    policy = cfg.admission.extra_columns
    if not extra or policy == "reject":
        return frame, []
    warnings = []
    if policy == "warn":
        warnings.append(f"extra column(s) {', '.join(extra)} in the {spec.feed} feed for {day} were dropped")
        log.warning(warnings[-1])
    return frame.drop(columns=extra), warnings


def _history_failures(
    paths: StatePaths, contract: DataContract, spec: _Feed, frame: pd.DataFrame, day: dt.date,
    same_day_event_ids: set[str] | None,
) -> list[dict[str, Any]]:
    """Failures only the already-loaded history can show (reused ids, orphan and repeated labels)."""
    events, labels = contract.events, contract.labels
    is_events = spec is events
    key = events.id if is_events else labels.event_id  # the column holding event ids in this feed
    if key not in frame.columns or spec.id not in frame.columns or frame.empty or not warehouse.exists(paths):
        return []
    ids = frame[key].dropna().astype(str)
    with warehouse.connect(paths, read_only=True) as con:
        if not con.table_exists(*events.raw_table.split(".")):
            loaded_ev = pd.DataFrame(columns=[events.id, "batch_date"])
        else:
            loaded_ev = _lookup(con, events.raw_table, events.id, ids, day, other_days_only=is_events)
        loaded_lb = pd.DataFrame(columns=[labels.id, "batch_date"])
        if not is_events and con.table_exists(*labels.raw_table.split(".")):
            loaded_lb = _lookup(con, labels.raw_table, labels.id, frame[labels.id].dropna().astype(str), day,
                                other_days_only=True)
    if is_events:
        if loaded_ev.empty:
            return []
        days = sorted(pd.to_datetime(loaded_ev["batch_date"]).dt.date.unique())
        reused = sorted(loaded_ev[events.id].astype(str).unique())
        return [{
            "expectation": "ids_not_already_loaded", "column": events.id,
            "details": f"{len(reused)} {events.id} values already loaded for {_span(days)}"
                       f" (e.g. {', '.join(reused[:3])})",
            "guards": "ids reused from another day: dbt's unique test would fail for every later day",
            "row_ids": reused,
        }]

    def label_ids(event_ids: set[str]) -> list[str]:
        return sorted(frame.loc[frame[key].astype(str).isin(event_ids), labels.id].astype(str))

    failures = []
    known = set(loaded_ev[events.id].astype(str)) | (same_day_event_ids or set())
    unknown = set(ids) - known
    held = set(unknown & _quarantined_event_ids(paths, events)) if unknown else set()
    orphans = unknown - held
    if held:
        failures.append({
            "expectation": "labels_of_quarantined_events", "column": key,
            "details": f"{len(held)} {labels.feed} rows for {events.feed} rows of a quarantined batch "
                       f"(e.g. {key} {', '.join(sorted(held)[:3])}); they load when that day is re-delivered "
                       "and this day re-run",
            "guards": "a label must not load without its event; an earlier bad day must not block this one",
            "row_ids": label_ids(held),
            "exempt_from_share": True,
        })
    if orphans:
        failures.append({
            "expectation": "labels_refer_to_known_events", "column": key,
            "details": f"{len(orphans)} {labels.feed} rows for {events.feed} rows that were never delivered "
                       f"(e.g. {key} {', '.join(sorted(orphans)[:3])})",
            "guards": "orphan labels: labels that join to nothing distort label rates and monitoring",
            "row_ids": label_ids(orphans),
            # a label stream refers to past days: its orphans are reported and held, never block the day
            "exempt_from_share": True,
        })
    if not loaded_lb.empty:
        repeated = sorted(set(loaded_lb[labels.id].astype(str)))
        failures.append({
            "expectation": "labels_not_already_loaded", "column": labels.id,
            "details": f"{len(repeated)} {labels.id} values already delivered on an earlier day",
            "guards": "a re-used label id under other content fails dbt's unique test for every later day",
            "row_ids": repeated,
            "exempt_from_share": True,  # a re-delivered label is redundant: hold it, load the day
        })
    return failures


def _quarantined_event_ids(paths: StatePaths, events: _Feed) -> set[str]:
    """Ids of events the front door kept out (their Parquet evidence in the quarantine folder)."""
    ids: set[str] = set()
    for file in (paths.quarantine / events.raw_table).glob("batch_date=*.parquet"):
        try:
            ids |= set(pd.read_parquet(file, columns=[events.id])[events.id].dropna().astype(str))
        except Exception:  # noqa: BLE001 - evidence without ids (e.g. a renamed id column) holds no labels
            continue
    return ids


def _lookup(con: warehouse.Session, table: str, column: str, values: pd.Series, day: dt.date,
            other_days_only: bool) -> pd.DataFrame:
    """Distinct (`column`, batch_date) of the rows of `table` whose `column` is one of `values`.

    One semi-join in the warehouse against the batch's ids loaded as a relation (an index lookup on
    PostgreSQL, a hash join over the id column on DuckDB): its cost does not grow with a list of
    `in (...)` literals per few thousand ids.
    """
    return con.rows_with_values(
        table, column, values, [column, "batch_date"], distinct=True,
        where="batch_date <> ?" if other_days_only else "", params=[day] if other_days_only else [],
    )


def _row_keys(frame: pd.DataFrame, spec: _Feed) -> pd.Series:
    """Each row's id as text; a row without an id is named by its position in the delivered file."""
    keys = frame[spec.id].astype(str)
    missing = frame[spec.id].isna().to_numpy()
    keys[missing] = [f"(no {spec.id}: row {i} of the file)" for i in missing.nonzero()[0]]
    return keys


def _name_rows_without_id(item: dict[str, Any], keys: pd.Series, frame: pd.DataFrame, spec: _Feed) -> dict[str, Any]:
    """GX cannot name a row by an id it lacks: the not-null check on the id names those rows by position."""
    if item["expectation"] != "expect_column_values_to_not_be_null" or item.get("column") != spec.id:
        return item
    return {**item, "row_ids": keys[frame[spec.id].isna().to_numpy()].tolist()}


def _row_level_ids(failed: list[dict[str, Any]]) -> set[str] | None:
    """The ids of every offending row, or None when some failure is about the batch as a whole."""
    ids: set[str] = set()
    for item in failed:
        if item["expectation"] in BATCH_LEVEL or not item.get("row_ids"):
            return None
        ids |= set(item["row_ids"])
    return ids


def _exempt_ids(failed: list[dict[str, Any]]) -> set[str]:
    """Rows held back for a reason outside this batch (not counted against the share)."""
    return {i for item in failed if item.get("exempt_from_share") for i in item["row_ids"]}


def _write_admitted(paths: StatePaths, feed: LandedFeed, frame: pd.DataFrame, day: dt.date) -> LandedFeed:
    target = Path(feed.path).with_name(f"batch_date={day.isoformat()}.admitted.parquet")
    frame.to_parquet(target, index=False)
    return LandedFeed(table=feed.table, path=str(target), md5=versioning.snapshot(paths, target), rows=len(frame))


def _span(days: list[dt.date]) -> str:
    return str(days[0]) if len(days) == 1 else f"{days[0]}..{days[-1]} ({len(days)} days)"


def _rows_named(result: validation.GateResult, spec: _Feed, n: int = 5) -> str:
    """`merchant_category: 1 nulls ...: rows <id column> id-1, id-2` per failure, for the messages."""
    parts = []
    for item in result.failed:
        ids = list(item.get("row_ids") or [])
        what = f"{item['column']}: {item['details']}" if item.get("column") else item["details"]
        rows = f"; rows {spec.id} {', '.join(ids[:n])}{', ...' if len(ids) > n else ''}" if ids else ""
        parts.append(f"{item['expectation']}({what}{rows})")
    return ", ".join(parts)


def _refusal(cfg: Config, spec: _Feed, feed: LandedFeed, day: dt.date, result: validation.GateResult,
             share: float, bad_ids: set[str] | None, frame: pd.DataFrame) -> str:
    role = _role(cfg, spec)
    why = _rows_named(result, spec)
    names = {f["expectation"] for f in result.failed}
    schema = [f for f in result.failed if f["expectation"] == "expect_table_columns_to_match_set"]
    types = [f for f in result.failed if f["expectation"] == "expect_column_values_to_be_in_type_list"]
    if "ids_not_already_loaded" in names:
        fix = (f"re-deliver the {spec.feed} feed for {day} with the source's own ids for that day; if it is a "
               "corrected re-delivery of an earlier day, re-run that day instead")
    elif schema or types:
        cols = ", ".join(str(f["column"] or f["details"]) for f in schema + types)
        fix = (f"the landed file {feed.path} does not match contract.{role}.columns ({cols}): re-deliver it with "
               f"the contract's columns and types, or, if the source changed for good, change contract.{role}.columns "
               "and the dbt staging model together and run `python -m training check-contract`")
    elif bad_ids is not None:
        fix = (f"{len(bad_ids)} offending rows exceed admission.max_rejected_row_share ({share:.2%} of "
               f"{len(frame)} rows): fix the source batch, or raise the share in the config if partial days are acceptable")
    else:
        fix = f"fix the {spec.feed} feed for {day} at the source and re-run that day"
    return (
        f"The {spec.feed} feed for {day} was refused: {why}. The batch was quarantined in "
        f"{quarantine.REJECTED_BATCHES}; nothing was loaded and days already loaded are unchanged. To fix: {fix}."
    )
