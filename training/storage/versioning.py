"""Data versions: every landed batch and every published training set is a DVC-tracked file.

The DVC repository lives at `StatePaths.data` (no git: `dvc init --no-scm`) with a local folder as
its default remote (a bucket in the services profile). A data version *is* the file's DVC md5, so a
model that records it can always be traced to, and retrained on, the exact bytes it saw.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from training.errors import ClosedloopError
from training.paths import StatePaths
from training.storage import ledger

if TYPE_CHECKING:
    import pandas as pd


class DataVersionNotFound(ClosedloopError, LookupError):
    """No file is stored for the requested data version."""


@dataclass(frozen=True)
class DataVersionRecord:
    data_version: str
    batch_date: dt.date
    interval_start: dt.datetime
    interval_end: dt.datetime
    feature_rows: int
    training_rows: int
    snapshot_path: str
    raw_events_md5: str | None
    raw_labels_md5: str | None
    dbt_invocation_id: str | None
    gx_run_id: str | None
    gx_success: bool | None
    created_at: dt.datetime


def _repo(paths: StatePaths):  # -> dvc.repo.Repo (imported lazily: dvc is slow to import)
    from dvc.repo import Repo

    if not (paths.data / ".dvc").is_dir():
        paths.data.mkdir(parents=True, exist_ok=True)
        paths.dvc_remote.mkdir(parents=True, exist_ok=True)
        repo = Repo.init(str(paths.data), no_scm=True)
        with repo.config.edit() as conf:
            conf["remote"]["local"] = {"url": str(paths.dvc_remote)}
            conf["core"]["remote"] = "local"
            conf["core"]["autostage"] = False
        repo.close()
    return Repo(str(paths.data))


def snapshot(paths: StatePaths, file: Path) -> str:
    """`dvc add` a file under the data repo, push it to the remote, and return its md5."""
    file = Path(file).resolve()
    if paths.data.resolve() not in file.parents:
        raise ValueError(f"{file} is outside the DVC data repo {paths.data}; write it under StatePaths.data")
    if not file.is_file():
        raise FileNotFoundError(f"cannot version {file}: no such file")
    repo = _repo(paths)
    try:
        stages = repo.add(str(file))
        md5 = stages[0].outs[0].hash_info.value
        repo.push()
    finally:
        repo.close()
    return str(md5)


def _cache_path(root: Path, md5: str) -> Path:
    return root / "files" / "md5" / md5[:2] / md5[2:]


def open_version(paths: StatePaths, md5: str) -> Path:
    """The local file holding data version `md5` (fetched back from the remote if the cache lost it)."""
    cached = _cache_path(paths.data / ".dvc" / "cache", md5)
    if cached.is_file():
        return cached
    remote = _cache_path(paths.dvc_remote, md5)
    if remote.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(remote, cached)
        return cached
    raise DataVersionNotFound(
        f"data version {md5} is neither in the DVC cache ({cached.parent}) nor in the remote "
        f"({paths.dvc_remote}); re-run data_pipeline for its interval or restore the remote"
    )


def record_version(paths: StatePaths, record: DataVersionRecord) -> None:
    """Upsert the ledger row of a published data version (re-publishing the same bytes is a no-op)."""
    eng = ledger.engine(paths)
    ledger.ensure_tables(eng, ledger.data_versions)
    row = record.__dict__
    with eng.begin() as conn:
        conn.execute(
            sa.delete(ledger.data_versions).where(ledger.data_versions.c.data_version == record.data_version)
        )
        conn.execute(sa.insert(ledger.data_versions).values(**row))


def publish_frame(
    paths: StatePaths, frame: pd.DataFrame, name: str, *, dbt_invocation_id: str, gx_run_id: str,
    created_at: dt.datetime | None = None,
) -> str:
    """Publish a ready training-set frame as a data version (snapshot + ledger row); returns its md5.

    The pipeline's publish step builds the frame from the marts; replays, benchmarks and tests that
    already hold the frame use this, so their versions look exactly like the pipeline's.
    """
    paths.published.mkdir(parents=True, exist_ok=True)
    file = paths.published / f"{name}.parquet"
    frame.to_parquet(file, index=False)
    md5 = snapshot(paths, file)
    last = max(frame["batch_date"])
    record_version(paths, DataVersionRecord(
        data_version=md5,
        batch_date=last,
        interval_start=dt.datetime.combine(last, dt.time()),
        interval_end=dt.datetime.combine(last + dt.timedelta(days=1), dt.time()),
        feature_rows=len(frame),
        training_rows=len(frame),
        snapshot_path=str(file),
        raw_events_md5=None,
        raw_labels_md5=None,
        dbt_invocation_id=dbt_invocation_id,
        gx_run_id=gx_run_id,
        gx_success=True,
        created_at=created_at or dt.datetime.now(dt.UTC).replace(tzinfo=None),
    ))
    return md5


def _to_record(row: sa.Row) -> DataVersionRecord:
    return DataVersionRecord(**row._mapping)


def get_version(paths: StatePaths, md5: str) -> DataVersionRecord:
    eng = ledger.engine(paths)
    ledger.ensure_tables(eng, ledger.data_versions)
    with eng.connect() as conn:
        row = conn.execute(
            sa.select(ledger.data_versions).where(ledger.data_versions.c.data_version == md5)
        ).first()
    if row is None:
        raise DataVersionNotFound(f"data version {md5} was never published (no row in ops.data_versions)")
    return _to_record(row)


def latest_data_version(paths: StatePaths, as_of: dt.date | None = None) -> DataVersionRecord:
    """The newest published data version with `batch_date <= as_of` (any date when `as_of` is None)."""
    eng = ledger.engine(paths)
    ledger.ensure_tables(eng, ledger.data_versions)
    table = ledger.data_versions
    query = sa.select(table).order_by(table.c.batch_date.desc(), table.c.created_at.desc()).limit(1)
    if as_of is not None:
        query = query.where(table.c.batch_date <= as_of)
    with eng.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        raise DataVersionNotFound(
            "no published data version"
            + (f" on or before {as_of}" if as_of else "")
            + ": run data_pipeline for at least one interval first"
        )
    return _to_record(row)
