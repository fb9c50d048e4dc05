"""Data versions: every landed batch and every published training set is content-addressed.

The DVC repository lives at `StatePaths.data` (no git: `dvc init --no-scm`) with a local folder as
its default remote (a bucket in the services profile). A landed batch is one `dvc add`-ed file and
its version is the file's DVC md5.

A published training set is *incremental*: each batch date's rows are one Parquet partition,
written once into the DVC cache layout (`files/md5/<2>/<30>`, mirrored to the remote) under the
md5 of its bytes, and a version is a small JSON manifest (the partitions' md5s, rows and sizes, and
the schema) stored the same way; the manifest's md5 is the data version id. A day whose rows did
not change is not written again, so disk grows with the days, not with days squared; a backfilled
day gets a new partition and a new manifest while older manifests still name their bytes. Full
single-file versions from before this layout keep opening. A model that records a data version can
always be traced to, and retrained on, the exact bytes it saw.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
import yaml

from training.errors import ClosedloopError
from training.paths import StatePaths
from training.storage import ledger

if TYPE_CHECKING:
    import pandas as pd

    from training.storage.warehouse import Session

BATCH_DATE = "batch_date"
MANIFEST_FORMAT = "closedloop.training-set/1"
MANIFEST_SUFFIX = ".manifest"


class DataVersionNotFound(ClosedloopError, LookupError):
    """No file is stored for the requested data version."""


class PartitionMissing(DataVersionNotFound):
    """A data version's manifest names a partition whose bytes are in neither the cache nor the remote."""


#: Partitions already written, by the fingerprint of the warehouse rows they hold: a publish exports
#: only the days whose fingerprint has no partition yet (the new day, a backfilled or changed day).
data_partitions = sa.Table(
    "data_partitions",
    ledger.metadata,
    sa.Column("fingerprint", sa.String(255), primary_key=True),
    sa.Column("md5", sa.String(64), nullable=False),
    sa.Column("batch_date", sa.Date, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)


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
    """Version a file under the data repo as `dvc add` + `dvc push` would, and return its md5.

    The file's content goes into the DVC cache and the remote under its md5 and a `<file>.dvc`
    pointer is written next to it (DVC 3's single-output format, so `dvc status` / `dvc pull` /
    `dvc checkout` treat it as their own). Not through `Repo.add` / `Repo.push`: both load every
    `.dvc` file of the repo first, so a day's landing cost grew with the days already landed.
    """
    file = Path(file).resolve()
    if paths.data.resolve() not in file.parents:
        raise ValueError(f"{file} is outside the DVC data repo {paths.data}; write it under StatePaths.data")
    if not file.is_file():
        raise FileNotFoundError(f"cannot version {file}: no such file")
    _ensure_repo(paths)
    md5 = _file_md5(file)
    cached = _cache_path(_cache(paths), md5)
    _put(file, cached, move=False)
    _put(cached, _cache_path(paths.dvc_remote, md5), move=False)
    pointer = {"outs": [{"md5": md5, "size": file.stat().st_size, "hash": "md5", "path": file.name}]}
    dvcfile = file.with_name(file.name + ".dvc")
    tmp = dvcfile.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        tmp.write_text(yaml.safe_dump(pointer, sort_keys=False))
        os.replace(tmp, dvcfile)
    finally:
        tmp.unlink(missing_ok=True)
    return md5


def _cache_path(root: Path, md5: str) -> Path:
    return root / "files" / "md5" / md5[:2] / md5[2:]


def _cache(paths: StatePaths) -> Path:
    return paths.data / ".dvc" / "cache"


def open_version(paths: StatePaths, md5: str) -> Path:
    """The local Parquet file or folder holding data version `md5`; readers take either as it is.

    A manifest version opens as a folder of its partitions (hard links into the DVC cache, one
    `<batch_date>.parquet` each, in date order), built once per version; a partition the cache lost
    is fetched back from the remote. A full single-file version (the layout before manifests) opens
    as that file.
    """
    manifest = load_manifest(paths, md5)
    if manifest is not None:
        return _materialize(paths, md5, manifest)
    cached = _cache_path(_cache(paths), md5)
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
    """Publish a ready training-set frame as a data version (partitions + manifest + ledger row); returns its id.

    The pipeline's publish step versions the warehouse's training set (`version_table`); replays,
    benchmarks and tests that already hold the frame use this, so their versions look exactly like
    the pipeline's. Rows keep their order within a batch date. `name` is only the callers' label: a
    version is named by its manifest's md5.
    """
    manifest = version_frame(paths, frame)
    md5 = store_manifest(paths, manifest)
    last = max(frame["batch_date"])
    file = manifest_path(paths, md5)
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


# --------------------------------------------------------------------------------------------
# incremental training-set versions: content-addressed partitions + a manifest
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    """One batch date's rows of a training set: a Parquet file stored under the md5 of its bytes."""

    batch_date: str  # ISO date; "" for the schema-only file of an empty training set
    md5: str
    rows: int
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """A training-set version: its partitions in date order and the columns they share."""

    schema: list[list[str]]  # [column, Arrow type]
    partitions: list[Partition] = field(default_factory=list)
    empty: Partition | None = None  # a schema-only file, only when no partition holds rows

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)

    def to_bytes(self) -> bytes:
        """The canonical bytes whose md5 is the data version id (same content, same id)."""
        doc = {
            "format": MANIFEST_FORMAT,
            "schema": self.schema,
            "partitions": [asdict(p) for p in self.partitions],
            "empty": asdict(self.empty) if self.empty else None,
        }
        return json.dumps(doc, sort_keys=True, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        doc = json.loads(data)
        if doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a {MANIFEST_FORMAT} manifest (format {doc.get('format')!r})")
        return cls(
            schema=[list(c) for c in doc["schema"]],
            partitions=[Partition(**p) for p in doc["partitions"]],
            empty=Partition(**doc["empty"]) if doc.get("empty") else None,
        )


def manifest_path(paths: StatePaths, md5: str) -> Path:
    """Where the manifest of data version `md5` lives in the local DVC cache."""
    cached = _cache_path(_cache(paths), md5)
    return cached.with_name(cached.name + MANIFEST_SUFFIX)


def _file_md5(file: Path) -> str:
    h = hashlib.md5()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _put(src: Path, dst: Path, *, move: bool) -> None:
    """Place `src` at `dst` atomically (a temporary name, then a rename): never a half-written file."""
    if dst.is_file():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        if move:
            shutil.move(src, tmp)
        else:
            shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o444)  # cache files are immutable, as DVC keeps them
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _ensure_repo(paths: StatePaths) -> None:
    if not (paths.data / ".dvc").is_dir():
        _repo(paths).close()


def _store_blob(paths: StatePaths, file: Path, suffix: str = "") -> str:
    """Move `file` into the DVC cache under its md5 and copy it to the remote; returns the md5."""
    _ensure_repo(paths)
    md5 = _file_md5(file)
    cached = _cache_path(_cache(paths), md5)
    cached = cached.with_name(cached.name + suffix)
    remote = _cache_path(paths.dvc_remote, md5)
    remote = remote.with_name(remote.name + suffix)
    if cached.is_file():
        file.unlink()
    else:
        _put(file, cached, move=True)
    _put(cached, remote, move=False)
    return md5


def _incoming(paths: StatePaths) -> Path:
    """A fresh temporary file name next to the cache (same file system: the move is a rename)."""
    _ensure_repo(paths)  # before anything creates .dvc/: an existing .dvc/ is taken for an initialised repo
    folder = paths.data / ".dvc" / "tmp" / "closedloop-incoming"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{os.getpid()}-{uuid.uuid4().hex}.parquet"


def store_manifest(paths: StatePaths, manifest: Manifest) -> str:
    """Store a manifest in the cache and the remote; its md5 is the data version id."""
    tmp = _incoming(paths).with_suffix(".json")
    tmp.write_bytes(manifest.to_bytes())
    return _store_blob(paths, tmp, MANIFEST_SUFFIX)


def load_manifest(paths: StatePaths, md5: str) -> Manifest | None:
    """The manifest of data version `md5` (fetched back from the remote if needed); None for a version
    stored as one full file (or not stored at all)."""
    local = manifest_path(paths, md5)
    if not local.is_file():
        remote = _cache_path(paths.dvc_remote, md5)
        remote = remote.with_name(remote.name + MANIFEST_SUFFIX)
        if not remote.is_file():
            return None
        _put(remote, local, move=False)
    data = local.read_bytes()
    if hashlib.md5(data).hexdigest() != md5:
        raise DataVersionNotFound(
            f"the manifest of data version {md5} at {local} does not hash to its name: it was modified; "
            f"delete it so it is fetched again from the remote {paths.dvc_remote}"
        )
    return Manifest.from_bytes(data)


def version_days(paths: StatePaths, md5: str) -> list[dt.date]:
    """The batch dates data version `md5` holds rows of, in order: from its manifest (no data read),
    or from the `batch_date` column of a full-copy version."""
    manifest = load_manifest(paths, md5)
    if manifest is not None:
        return [dt.date.fromisoformat(p.batch_date) for p in manifest.partitions if p.rows]
    import pandas as pd

    dates = pd.read_parquet(open_version(paths, md5), columns=[BATCH_DATE])[BATCH_DATE]
    return sorted({pd.Timestamp(d).date() for d in dates.dropna().unique()})


def _partition_file(paths: StatePaths, version: str, part: Partition) -> Path:
    """The cached bytes of one partition of `version`, fetched back from the remote if the cache lost them."""
    cached = _cache_path(_cache(paths), part.md5)
    if cached.is_file():
        return cached
    remote = _cache_path(paths.dvc_remote, part.md5)
    if remote.is_file():
        _put(remote, cached, move=False)
        return cached
    raise PartitionMissing(
        f"data version {version}: partition {part.batch_date or '(schema only)'} (md5 {part.md5}, "
        f"{part.rows} rows) is neither in the DVC cache ({cached}) nor in the remote ({remote}); "
        f"restore the remote folder {paths.dvc_remote} (e.g. `dvc pull` / copy from its backup) so it holds "
        f"files/md5/{part.md5[:2]}/{part.md5[2:]}, then open the version again; re-publishing "
        f"{part.batch_date or 'the interval'} makes a new version, it cannot bring these bytes back"
    )


def _versions_dir(paths: StatePaths) -> Path:
    return paths.published / "versions"


def _view_name(part: Partition) -> str:
    return f"{part.batch_date}.parquet" if part.batch_date else "empty.parquet"


def _materialize(paths: StatePaths, md5: str, manifest: Manifest) -> Path:
    """The folder of a manifest's partitions (hard links: no bytes copied), built once and reused."""
    parts = manifest.partitions or ([manifest.empty] if manifest.empty else [])
    view = _versions_dir(paths) / md5
    if view.is_dir() and all(
        (view / _view_name(p)).is_file() and (view / _view_name(p)).stat().st_size == p.bytes for p in parts
    ):
        return view
    tmp = _versions_dir(paths) / f".tmp-{md5}-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        for part in parts:
            src = _partition_file(paths, md5, part)
            try:
                os.link(src, tmp / _view_name(part))
            except OSError:  # another file system: copy
                shutil.copyfile(src, tmp / _view_name(part))
        if view.is_dir():
            shutil.rmtree(view)
        try:
            os.replace(tmp, view)
        except OSError:  # another process built it meanwhile
            if not view.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return view


def _schema_of(file: Path) -> list[list[str]]:
    import pyarrow.parquet as pq

    return [[f.name, str(f.type)] for f in pq.read_schema(file)]


def _known_partitions(paths: StatePaths, fingerprints: list[str]) -> dict[str, Partition]:
    """The partitions already written for these fingerprints (only those whose bytes are still stored)."""
    if not fingerprints:
        return {}
    eng = ledger.engine(paths)
    ledger.ensure_tables(eng, data_partitions)
    t = data_partitions
    with eng.connect() as conn:
        rows = conn.execute(sa.select(t).where(t.c.fingerprint.in_(fingerprints))).all()
    out = {}
    for r in rows:
        part = Partition(r.batch_date.isoformat(), r.md5, int(r.rows), int(r.bytes))
        if _cache_path(_cache(paths), r.md5).is_file() or _cache_path(paths.dvc_remote, r.md5).is_file():
            out[r.fingerprint] = part
    return out


def _remember(paths: StatePaths, fingerprint: str, part: Partition) -> None:
    eng = ledger.engine(paths)
    t = data_partitions
    try:
        with eng.begin() as conn:
            conn.execute(sa.delete(t).where(t.c.fingerprint == fingerprint))
            conn.execute(sa.insert(t).values(
                fingerprint=fingerprint, md5=part.md5, batch_date=dt.date.fromisoformat(part.batch_date),
                rows=part.rows, bytes=part.bytes, created_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
            ))
    except sa.exc.IntegrityError:  # a concurrent publish recorded the same rows first: either entry serves
        pass


def version_partitions(
    paths: StatePaths,
    fingerprints: Mapping[dt.date, tuple[int, str]],
    export_day: Callable[[dt.date, Path], None],
    export_empty: Callable[[Path], None],
) -> Manifest:
    """The manifest of a training set given each batch date's (rows, content fingerprint).

    Only days whose fingerprint has no stored partition yet are exported (`export_day(day, file)`)
    and stored; the others reuse the partition an earlier publish wrote. The manifest is returned,
    not stored (`store_manifest`), so a caller can store it once its own transaction committed.
    """
    ledger.ensure_tables(ledger.engine(paths), data_partitions)
    days = sorted(d for d, (rows, _) in fingerprints.items() if rows)
    known = _known_partitions(paths, [fingerprints[d][1] for d in days])
    parts: list[Partition] = []
    for day in days:
        rows, fingerprint = fingerprints[day]
        part = known.get(fingerprint)
        if part is None or part.batch_date != day.isoformat():
            tmp = _incoming(paths)
            export_day(day, tmp)
            size = tmp.stat().st_size
            part = Partition(day.isoformat(), _store_blob(paths, tmp), rows, size)
            _remember(paths, fingerprint, part)
        parts.append(part)
    if parts:
        return Manifest(schema=_schema_of(_partition_file(paths, "(being published)", parts[0])), partitions=parts)
    tmp = _incoming(paths)
    export_empty(tmp)
    size = tmp.stat().st_size
    empty = Partition("", _store_blob(paths, tmp), 0, size)
    return Manifest(schema=_schema_of(_partition_file(paths, "(being published)", empty)), empty=empty)


def _schema_key(columns: list[tuple[str, str]]) -> str:
    return hashlib.md5(json.dumps(columns).encode()).hexdigest()[:12]


def version_table(paths: StatePaths, con: Session, table: str, order_by: str) -> Manifest:
    """The manifest of warehouse table `table` (a training set with a `batch_date` column).

    One grouped query fingerprints every day's rows in the database (count and an order-free sum of
    row hashes, keyed by backend and column types); only days with a new fingerprint are exported,
    each ordered by `order_by`.
    """
    types = con.frame(
        "select column_name, data_type from information_schema.columns where table_schema = ? "
        "and table_name = ? order by ordinal_position",
        table.split(".", 1),
    )
    key = f"{con.backend}:{table}:{_schema_key(list(zip(types['column_name'], types['data_type'], strict=True)))}"
    prints = {day: (rows, f"{key}:{rows}:{digest}") for day, (rows, digest) in con.day_fingerprints(table).items()}

    declared = dict(zip(types["column_name"], types["data_type"], strict=True))

    def export_day(day: dt.date, file: Path) -> None:
        con.export_parquet(
            f"select * from {table} where {BATCH_DATE} = date '{day.isoformat()}' order by {order_by}", file
        )
        _type_null_columns(file, declared)

    def export_empty(file: Path) -> None:
        con.export_parquet(f"select * from {table} where 1 = 0", file)
        _type_null_columns(file, declared)

    return version_partitions(paths, prints, export_day, export_empty)


#: Arrow types of the warehouse column types a day's export can leave untyped (all NULL on PostgreSQL).
_ARROW_TYPES = {
    "character varying": "string", "varchar": "string", "text": "string", "double precision": "float64",
    "double": "float64", "real": "float32", "integer": "int32", "bigint": "int64", "smallint": "int16",
    "boolean": "bool", "date": "date32", "timestamp without time zone": "timestamp[us]",
    "timestamp": "timestamp[us]",
}


def _type_null_columns(file: Path, declared: Mapping[str, str]) -> None:
    """Give a partition's all-NULL columns their declared type (PostgreSQL rows reach Parquet through
    pandas, which types an all-None column as null), so every partition of a version shares one schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(file)
    untyped = [f.name for f in schema if pa.types.is_null(f.type)]
    if not untyped:
        return
    table = pq.read_table(file)
    for name in untyped:
        arrow = _ARROW_TYPES.get(str(declared.get(name, "")).lower())
        if arrow is None:
            raise ValueError(f"column {name} of type {declared.get(name)!r} exported untyped; add it to _ARROW_TYPES")
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pa.nulls(len(table), type=pa.type_for_alias(arrow)))
    pq.write_table(table, file)


def version_frame(paths: StatePaths, frame: pd.DataFrame) -> Manifest:
    """The manifest of a training-set frame (one partition per `batch_date`, rows in frame order)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    dates = pd.to_datetime(frame[BATCH_DATE]).dt.date
    order = dates.argsort(kind="mergesort").to_numpy()
    table = pa.Table.from_pandas(frame.iloc[order], preserve_index=False)
    sorted_dates = dates.iloc[order].to_numpy()
    hashes = pd.util.hash_pandas_object(frame.iloc[order], index=False).to_numpy()
    key = f"frame:{_schema_key([(f.name, str(f.type)) for f in table.schema])}"
    bounds: dict[dt.date, tuple[int, int]] = {}
    for i, day in enumerate(sorted_dates):
        lo, _ = bounds.get(day, (i, i))
        bounds[day] = (lo, i + 1)
    prints = {
        day: (hi - lo, f"{key}:{hi - lo}:{int(hashes[lo:hi].astype('uint64').sum(dtype='uint64'))}")
        for day, (lo, hi) in bounds.items()
    }

    def export_day(day: dt.date, file: Path) -> None:
        lo, hi = bounds[day]
        pq.write_table(table.slice(lo, hi - lo), file)

    def export_empty(file: Path) -> None:
        pq.write_table(table.slice(0, 0), file)

    return version_partitions(paths, prints, export_day, export_empty)
