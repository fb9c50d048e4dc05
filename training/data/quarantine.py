"""The quarantine: where a rejected batch (or its rejected rows) is recorded with its evidence.

One row per rejected batch in `quarantine.rejected_batches`, the offending row ids GX can name in
`quarantine.rejected_rows` (`row_id`, the value of the feed's id column named in `id_column`), and a
copy of the batch as received under `StatePaths.quarantine`.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from training.data.validation import GateResult
from training.paths import StatePaths
from training.storage import warehouse

QUARANTINE_SCHEMA = "quarantine"
REJECTED_BATCHES = f"{QUARANTINE_SCHEMA}.rejected_batches"
REJECTED_ROWS = f"{QUARANTINE_SCHEMA}.rejected_rows"

_REJECTED_BATCHES_DDL = f"""
create table if not exists {REJECTED_BATCHES} (
    batch_date date, table_name varchar, suite varchar, reason varchar, failed_expectations json,
    row_count bigint, snapshot_path varchar, rejected_at timestamp
)"""
_REJECTED_ROWS_DDL = f"""
create table if not exists {REJECTED_ROWS} (
    batch_date date, table_name varchar, id_column varchar, row_id varchar, expectation varchar,
    rejected_at timestamp
)"""
_ROW_COLUMNS = ["batch_date", "table_name", "id_column", "row_id", "expectation", "rejected_at"]


@dataclass(frozen=True)
class QuarantineRecord:
    batch_date: dt.date
    table_name: str
    reason: str
    row_count: int
    rejected_rows: int
    snapshot_path: str


def _write_snapshot(df: pd.DataFrame, target: Path) -> None:
    """A Parquet copy of the batch as received; a broken batch can have mixed-type columns."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        df.to_parquet(target, index=False)
    except Exception:  # pyarrow rejects object columns mixing types; keep the evidence as text
        as_text = df.copy()
        for col in as_text.columns:
            if as_text[col].dtype == object:
                as_text[col] = as_text[col].map(lambda v: None if v is None else str(v))
        as_text.to_parquet(target, index=False)


def record(
    result: GateResult,
    df: pd.DataFrame,
    batch_date: dt.date,
    table_name: str,
    paths: StatePaths,
    *,
    reason_prefix: str | None = None,
    evidence_file: Path | None = None,
) -> QuarantineRecord:
    """Record a rejected batch (or its rejected rows): one row in quarantine.rejected_batches, the
    offending row ids in quarantine.rejected_rows and a copy of the evidence under `StatePaths.quarantine`.

    `evidence_file` keeps the delivered bytes as they are (a file that could not be read at all);
    otherwise `df` is written as Parquet. `reason_prefix` says what happened when only rows were
    quarantined. Idempotent per (batch_date, table_name): a re-run replaces the previous record.
    Nothing else in the warehouse is touched.
    """
    rejected_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    snapshot = paths.quarantine / table_name / f"batch_date={batch_date.isoformat()}.parquet"
    if evidence_file is not None:
        snapshot = snapshot.with_name(f"batch_date={batch_date.isoformat()}{evidence_file.suffix}.delivered")
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(evidence_file, snapshot) if evidence_file.exists() else snapshot.write_bytes(b"")
    else:
        _write_snapshot(df, snapshot)
    failed_json = json.dumps([{k: v for k, v in f.items() if k != "row_ids"} | {
        "rejected_ids": len(f.get("row_ids") or [])} for f in result.failed])
    rows = pd.DataFrame(
        [
            {"row_id": row_id, "expectation": f["expectation"]}
            for f in result.failed
            for row_id in f.get("row_ids") or []
        ],
        columns=["row_id", "expectation"],
    ).drop_duplicates()
    reason = f"GX suite '{result.suite}' rejected batch {result.batch_id} (run {result.run_id}): {result.summary()}"
    if reason_prefix:
        reason = f"{reason_prefix}. {reason}"
    ddl = (f"create schema if not exists {QUARANTINE_SCHEMA}", _REJECTED_BATCHES_DDL, _REJECTED_ROWS_DDL)
    batch_row = pd.DataFrame([{
        "batch_date": batch_date, "table_name": table_name, "suite": result.suite, "reason": reason,
        "failed_expectations": failed_json, "row_count": len(df), "snapshot_path": str(snapshot),
        "rejected_at": rejected_at,
    }])
    row_frame = rows.assign(
        batch_date=batch_date, table_name=table_name, id_column=result.id_column, rejected_at=rejected_at
    )[_ROW_COLUMNS]
    with warehouse.transaction(paths, ddl=ddl) as con:
        where = {"batch_date": batch_date, "table_name": table_name}
        con.replace_partition(REJECTED_BATCHES, where, batch_row)
        con.replace_partition(REJECTED_ROWS, where, row_frame)
    return QuarantineRecord(
        batch_date=batch_date, table_name=table_name, reason=reason, row_count=len(df),
        rejected_rows=len(rows), snapshot_path=str(snapshot),
    )

