"""The front door: which part of a landed batch may enter the warehouse's `raw` tables.

Both source feeds (transactions and the chargeback/label feed) pass the same steps, and every way
a batch can be bad ends the same way — quarantined with a message that names the feed, the day,
what is wrong and what to do — so nothing bad reaches `raw` and nothing already loaded changes:

1. read the landed file (an empty or unreadable file is a batch failure, not a stack trace);
2. schema policy for columns the suite does not know (`admission.extra_columns`: reject | warn |
   allow; warn/allow drop them before anything else sees them);
3. the feed's Great Expectations suite (training.data.validation);
4. checks GX cannot make on one batch, against what is already loaded: transaction ids reused
   from another day (the batch is rejected: loading it would fail dbt's `unique` test for every
   later day), chargebacks whose transaction never existed (orphan labels: held as rows, never a
   reason to refuse the day, since labels refer to past days) or sits in a quarantined batch,
   and chargeback ids already delivered on another day;
5. row-level quarantine: when every failure names its rows and they are at most
   `admission.max_rejected_row_share` of the batch, those rows are quarantined and the rest is
   admitted (written next to the landed file and versioned); otherwise the whole batch is.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from training.config import Config
from training.data import feed_checks, quarantine, validation
from training.data.ingest import RAW_COLUMNS, LandedBatch, LandedFeed
from training.data.quality import DataQualityGateFailed
from training.paths import StatePaths
from training.storage import versioning, warehouse

log = logging.getLogger(__name__)

SUITES = {"transactions": "raw_transactions", "chargebacks": "raw_chargebacks"}
#: Failures that say something about the whole batch, whatever rows they name.
BATCH_LEVEL = {
    "readable_file",
    "ids_not_already_loaded",
    "expect_table_columns_to_match_set",
    "expect_table_row_count_to_be_between",
    "expect_column_values_to_be_in_type_list",
    *feed_checks.BATCH_LEVEL,
}


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
    """The admitted batch (what `ingest.load_raw` loads) and each feed's verdict."""

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

    Transactions go first: a refused transaction batch stops the day before its labels are looked
    at, and the labels of an admitted day may refer to that day's transactions.
    """
    day = landed.batch_date
    tx = _admit_feed(paths, cfg, landed.transactions, day, run_name)
    tx_ids = set(pd.read_parquet(tx.admitted.path, columns=["transaction_id"])["transaction_id"].astype(str))
    cb = _admit_feed(paths, cfg, landed.chargebacks, day, run_name, same_day_transaction_ids=tx_ids)
    return Admission(
        batch=replace(landed, transactions=tx.admitted, chargebacks=cb.admitted),
        feeds={"transactions": tx, "chargebacks": cb},
    )


# --------------------------------------------------------------------------------------------
# one feed
# --------------------------------------------------------------------------------------------


def _admit_feed(
    paths: StatePaths,
    cfg: Config,
    feed: LandedFeed,
    day: dt.date,
    run_name: str | None,
    same_day_transaction_ids: set[str] | None = None,
) -> FeedVerdict:
    suite = SUITES[feed.table]
    table_name = f"raw.{feed.table}"
    frame = _read(paths, feed, day, suite, table_name)
    frame, warnings = _column_policy(cfg, frame, suite, feed, day)
    result = validation.run_checkpoint(
        suite, frame, f"{suite}/{day.isoformat()}", paths, batch_date=day,
        run_name=f"{run_name}__{suite}" if run_name else None,
    )
    failed = list(result.failed) + _history_failures(paths, feed.table, frame, day, same_day_transaction_ids)
    failed, checked = feed_checks.review(paths, cfg, feed.table, frame, day, failed, id_key="transaction_ids")
    warnings += checked
    if not failed:
        return FeedVerdict(feed.table, suite, result.run_id, len(frame), feed, 0, warnings)

    result = replace(result, success=False, failed=failed)
    bad_ids = _row_level_ids(failed)
    share = cfg.admission.max_rejected_row_share
    if bad_ids is not None and len(frame):
        bad_rows = frame["transaction_id"].astype(str).isin(bad_ids)
        exempt = frame["transaction_id"].astype(str).isin(_exempt_ids(failed))
        if (bad_rows & ~exempt).mean() <= share:
            admitted = _write_admitted(paths, feed, frame.loc[~bad_rows], day)
            quarantine.record(result, frame.loc[bad_rows], day, table_name, paths,
                              reason_prefix=f"{int(bad_rows.sum())} of {len(frame)} rows quarantined, the rest admitted")
            warnings.append(
                f"{int(bad_rows.sum())} of {len(frame)} rows quarantined ({result.describe_failures()})"
            )
            log.warning("%s %s: %s", table_name, day, warnings[-1])
            return FeedVerdict(feed.table, suite, result.run_id, len(frame), admitted, int(bad_rows.sum()), warnings)
    quarantine.record(result, frame, day, table_name, paths)
    raise DataQualityGateFailed(_refusal(feed, day, result, share, bad_ids, frame), result)


def _read(paths: StatePaths, feed: LandedFeed, day: dt.date, suite: str, table_name: str) -> pd.DataFrame:
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
                     "guards": "a truncated, empty or corrupt delivery", "transaction_ids": []}],
            data_docs_path=None, statistics={"evaluated_expectations": 1}, row_count=0,
        )
        quarantine.record(result, pd.DataFrame(), day, table_name, paths, evidence_file=path)
        raise DataQualityGateFailed(
            f"The {feed.table} feed for {day} cannot be read ({path}): {problem}. The batch was quarantined "
            f"in {quarantine.REJECTED_BATCHES}; nothing was loaded. Re-deliver the {feed.table} feed for {day} "
            "and re-run that day (data_pipeline with conf {\"batch_date\": \"" + day.isoformat() + "\"}).",
            result,
        ) from None


def _column_policy(
    cfg: Config, frame: pd.DataFrame, suite: str, feed: LandedFeed, day: dt.date
) -> tuple[pd.DataFrame, list[str]]:
    """Drop columns the suite does not know when the policy allows them; `reject` leaves them to GX."""
    known = set(RAW_COLUMNS[feed.table]) | {"batch_date", "loaded_at"}
    extra = sorted(str(c) for c in frame.columns if c not in known)
    policy = cfg.admission.extra_columns
    if not extra or policy == "reject":
        return frame, []
    warnings = []
    if policy == "warn":
        warnings.append(f"extra column(s) {', '.join(extra)} in the {feed.table} feed for {day} were dropped")
        log.warning(warnings[-1])
    return frame.drop(columns=extra), warnings


def _history_failures(
    paths: StatePaths, table: str, frame: pd.DataFrame, day: dt.date, same_day_tx: set[str] | None
) -> list[dict[str, Any]]:
    """Failures only the already-loaded history can show (reused ids, orphan and repeated labels)."""
    if "transaction_id" not in frame.columns or frame.empty or not warehouse.exists(paths):
        return []
    ids = frame["transaction_id"].dropna().astype(str)
    with warehouse.connect(paths, read_only=True) as con:
        if not con.table_exists("raw", "transactions"):
            loaded_tx = pd.DataFrame(columns=["transaction_id", "batch_date"])
        else:
            loaded_tx = _lookup(con, "raw.transactions", "transaction_id", ids, day, other_days_only=table == "transactions")
        loaded_cb = pd.DataFrame(columns=["chargeback_id", "batch_date"])
        if table == "chargebacks" and "chargeback_id" in frame.columns and con.table_exists("raw", "chargebacks"):
            loaded_cb = _lookup(con, "raw.chargebacks", "chargeback_id",
                                frame["chargeback_id"].dropna().astype(str), day, other_days_only=True)
    if table == "transactions":
        if loaded_tx.empty:
            return []
        days = sorted(pd.to_datetime(loaded_tx["batch_date"]).dt.date.unique())
        reused = sorted(loaded_tx["transaction_id"].astype(str).unique())
        return [{
            "expectation": "ids_not_already_loaded", "column": "transaction_id",
            "details": f"{len(reused)} transaction ids already loaded for {_span(days)}"
                       f" (e.g. {', '.join(reused[:3])})",
            "guards": "ids reused from another day: dbt's unique test would fail for every later day",
            "transaction_ids": reused,
        }]
    failures = []
    known = set(loaded_tx["transaction_id"].astype(str)) | (same_day_tx or set())
    unknown = set(ids) - known
    held = sorted(unknown & _quarantined_transaction_ids(paths)) if unknown else []
    orphans = sorted(unknown - set(held))
    if held:
        failures.append({
            "expectation": "labels_of_quarantined_transactions", "column": "transaction_id",
            "details": f"{len(held)} chargebacks for transactions of a quarantined batch (e.g. {', '.join(held[:3])}); "
                       "they load when that day is re-delivered and this day re-run",
            "guards": "a label must not load without its transaction; an earlier bad day must not block this one",
            "transaction_ids": held,
            "exempt_from_share": True,
        })
    if orphans:
        failures.append({
            "expectation": "labels_refer_to_known_transactions", "column": "transaction_id",
            "details": f"{len(orphans)} chargebacks for transactions that were never delivered (e.g. {', '.join(orphans[:3])})",
            "guards": "orphan labels: positives that join to nothing distort label rates and monitoring",
            "transaction_ids": orphans,
            # a label stream refers to past days: its orphans are reported and held, never block the day
            "exempt_from_share": True,
        })
    if not loaded_cb.empty:
        repeated = set(loaded_cb["chargeback_id"].astype(str))
        rows = frame[frame["chargeback_id"].astype(str).isin(repeated)]
        failures.append({
            "expectation": "chargebacks_not_already_loaded", "column": "chargeback_id",
            "details": f"{len(rows)} chargeback ids already delivered on an earlier day",
            "guards": "a re-used chargeback id under other content fails dbt's unique test for every later day",
            "transaction_ids": sorted(rows["transaction_id"].astype(str)),
            "exempt_from_share": True,  # a re-delivered label is redundant: hold it, load the day
        })
    return failures


def _quarantined_transaction_ids(paths: StatePaths) -> set[str]:
    """Ids of transactions the front door kept out (their Parquet evidence in the quarantine folder)."""
    ids: set[str] = set()
    for file in (paths.quarantine / "raw.transactions").glob("batch_date=*.parquet"):
        try:
            ids |= set(pd.read_parquet(file, columns=["transaction_id"])["transaction_id"].dropna().astype(str))
        except Exception:  # noqa: BLE001 - evidence without ids (e.g. a renamed id column) holds no labels
            continue
    return ids


def _lookup(con: warehouse.Session, table: str, column: str, values: pd.Series, day: dt.date,
            other_days_only: bool) -> pd.DataFrame:
    """Rows of `table` whose `column` is one of `values` (batched, so a big batch stays one query per 5k)."""
    out = []
    uniq = sorted(set(values))
    for i in range(0, len(uniq), 5000):
        chunk = uniq[i:i + 5000]
        marks = ", ".join("?" for _ in chunk)
        where = f"{column} in ({marks})" + (" and batch_date <> ?" if other_days_only else "")
        params: list[Any] = [*chunk, day] if other_days_only else list(chunk)
        out.append(con.frame(f"select distinct {column}, batch_date from {table} where {where}", params))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=[column, "batch_date"])


def _row_level_ids(failed: list[dict[str, Any]]) -> set[str] | None:
    """The ids of every offending row, or None when some failure is about the batch as a whole."""
    ids: set[str] = set()
    for item in failed:
        if item["expectation"] in BATCH_LEVEL or not item.get("transaction_ids"):
            return None
        ids |= set(item["transaction_ids"])
    return ids


def _exempt_ids(failed: list[dict[str, Any]]) -> set[str]:
    """Rows held back for a reason outside this batch (not counted against the share)."""
    return {i for item in failed if item.get("exempt_from_share") for i in item["transaction_ids"]}


def _write_admitted(paths: StatePaths, feed: LandedFeed, frame: pd.DataFrame, day: dt.date) -> LandedFeed:
    target = Path(feed.path).with_name(f"batch_date={day.isoformat()}.admitted.parquet")
    frame.to_parquet(target, index=False)
    return LandedFeed(table=feed.table, path=str(target), md5=versioning.snapshot(paths, target), rows=len(frame))


def _span(days: list[dt.date]) -> str:
    return str(days[0]) if len(days) == 1 else f"{days[0]}..{days[-1]} ({len(days)} days)"


def _refusal(feed: LandedFeed, day: dt.date, result: validation.GateResult, share: float,
             bad_ids: set[str] | None, frame: pd.DataFrame) -> str:
    why = result.describe_failures()
    if any(f["expectation"] == "ids_not_already_loaded" for f in result.failed):
        fix = (f"re-deliver the {feed.table} feed for {day} with the source's own ids for that day; if it is a "
               "corrected re-delivery of an earlier day, re-run that day instead")
    elif bad_ids is not None:
        fix = (f"{len(bad_ids)} offending rows exceed admission.max_rejected_row_share ({share:.2%} of "
               f"{len(frame)} rows): fix the source batch, or raise the share in the config if partial days are acceptable")
    else:
        fix = f"fix the {feed.table} feed for {day} at the source and re-run that day"
    return (
        f"The {feed.table} feed for {day} was refused: {why}. The batch was quarantined in "
        f"{quarantine.REJECTED_BATCHES}; nothing was loaded and days already loaded are unchanged. To fix: {fix}."
    )
