"""Incremental data versions (training/storage/versioning.py) on DuckDB and on a real PostgreSQL warehouse.

A training-set version is a manifest of per-day partitions stored under their md5: disk grows with
the days (not days squared), a backfilled day gets a new partition while an older manifest still
opens to its original bytes, a lost partition is named with the fix, and a full-copy version from
before the manifests keeps opening.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from tests.synthetic import make_training_set
from training.data import datasets
from training.paths import StatePaths
from training.storage import ledger, versioning, warehouse
from training.storage.warehouse import WarehouseSettings

TABLE = "ml.ml_training_set"
START = dt.date(2026, 1, 1)
PER_DAY = 1500
DDL = (
    "create schema if not exists ml",
    f"""create table if not exists {TABLE} (
        transaction_id varchar, batch_date date, event_ts timestamp, channel varchar,
        amount double precision, is_fraud integer
    )""",
)


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request, state: StatePaths, monkeypatch) -> str:
    if request.param == "postgres":
        request.getfixturevalue("pg_warehouse")
    else:
        monkeypatch.delenv("CLOSEDLOOP_DBT_TARGET", raising=False)
    assert WarehouseSettings.from_env().backend == request.param
    return request.param


def _day_rows(day: dt.date, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed * 1000 + day.toordinal())
    return pd.DataFrame({
        "transaction_id": [f"tx-{day:%Y%m%d}-{i:07d}" for i in range(PER_DAY)],
        "batch_date": [day] * PER_DAY,
        "event_ts": [dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=int(s))
                     for s in rng.integers(0, 86400, PER_DAY)],
        "channel": rng.choice(["online", "in_store"], PER_DAY),
        "amount": rng.lognormal(3, 1, PER_DAY).round(2),
        "is_fraud": (rng.random(PER_DAY) < 0.02).astype(int),
    })


def _load_day(state: StatePaths, day: dt.date, seed: int = 0) -> None:
    with warehouse.transaction(state, ddl=DDL) as con:
        con.replace_partition(TABLE, {"batch_date": day}, _day_rows(day, seed))


def _publish(state: StatePaths) -> str:
    """What `ingest.publish` does for the training set: version the table, store the manifest."""
    with warehouse.transaction(state, ddl=DDL) as con:
        manifest = versioning.version_table(state, con, TABLE, "transaction_id")
    return versioning.store_manifest(state, manifest)


def _stored_bytes(state: StatePaths) -> int:
    """Bytes of the DVC cache and remote (each inode once: the version folders are hard links)."""
    seen, total = set(), 0
    for root in (state.data, state.dvc_remote):
        for f in root.rglob("*"):
            st = f.stat()
            if f.is_file() and st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def _file_md5s(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in sorted(folder.glob("*.parquet"))}


def _partitions_written(state: StatePaths) -> int:
    with ledger.engine(state).connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(versioning.data_partitions)).scalar_one())


def test_disk_grows_linearly_with_days_and_each_day_is_written_once(backend, state):
    sizes: dict[int, int] = {}
    for i in range(10):
        _load_day(state, START + dt.timedelta(days=i))
        version = _publish(state)
        sizes[i + 1] = _stored_bytes(state)
        assert _partitions_written(state) == i + 1  # only the new day was exported
    manifest = versioning.load_manifest(state, version)
    assert manifest is not None and [p.batch_date for p in manifest.partitions] == [
        (START + dt.timedelta(days=i)).isoformat() for i in range(10)]
    assert manifest.rows == 10 * PER_DAY
    # cache + remote hold each partition twice, plus one small manifest per version
    partitions = sum(p.bytes for p in manifest.partitions)
    manifests = sum(f.stat().st_size for f in (state.data / ".dvc" / "cache").rglob(f"*{versioning.MANIFEST_SUFFIX}"))
    assert manifests < 0.05 * partitions
    assert sizes[10] - sizes[1] <= 2 * (partitions + manifests)
    # linear: 10 days cost about twice 5 days (a full copy per day would cost 55/15 = 3.7x)
    assert (sizes[10] - sizes[1]) / (sizes[5] - sizes[1]) < 2.5

    restored = pd.read_parquet(versioning.open_version(state, version))
    with warehouse.connect(state, read_only=True) as con:
        n = con.scalar(f"select count(*) from {TABLE}")
    assert len(restored) == n == manifest.rows
    assert restored["transaction_id"].is_monotonic_increasing  # date order, then id within a day


def test_an_old_manifest_opens_to_its_original_bytes_after_a_backfill(backend, state):
    for i in range(6):
        _load_day(state, START + dt.timedelta(days=i))
    before = _publish(state)
    view = versioning.open_version(state, before)
    hashes_before, rows_before = _file_md5s(view), pd.read_parquet(view)

    backfilled = START + dt.timedelta(days=2)
    _load_day(state, backfilled, seed=1)  # the day is re-delivered with other rows
    after = _publish(state)
    assert after != before
    old, new = versioning.load_manifest(state, before), versioning.load_manifest(state, after)
    changed = [o.batch_date for o, n in zip(old.partitions, new.partitions, strict=True) if o.md5 != n.md5]
    assert changed == [backfilled.isoformat()]  # one new partition, the other days shared
    assert _partitions_written(state) == 7

    shutil.rmtree(view)  # rebuilt from the cache, not from the folder it left behind
    reopened = versioning.open_version(state, before)
    assert _file_md5s(reopened) == hashes_before
    assert {p.md5 for p in old.partitions} == set(hashes_before.values())  # the bytes are their md5 names
    pd.testing.assert_frame_equal(pd.read_parquet(reopened), rows_before)
    assert not pd.read_parquet(versioning.open_version(state, after)).equals(rows_before)


def test_an_empty_training_set_is_a_version_with_its_columns(backend, state):
    with warehouse.transaction(state, ddl=DDL):
        pass
    version = _publish(state)
    manifest = versioning.load_manifest(state, version)
    assert manifest.partitions == [] and manifest.empty is not None
    assert [c for c, _ in manifest.schema][:2] == ["transaction_id", "batch_date"]
    empty = pd.read_parquet(versioning.open_version(state, version))
    assert empty.empty and list(empty.columns)[:2] == ["transaction_id", "batch_date"]


def test_a_lost_partition_comes_back_from_the_remote_or_is_named_with_the_fix(state):
    version = versioning.publish_frame(state, make_training_set(n_days=4, rows_per_day=200), "training_set",
                                       dbt_invocation_id="t", gx_run_id="t")
    part = versioning.load_manifest(state, version).partitions[1]
    cached = versioning._cache_path(state.data / ".dvc" / "cache", part.md5)
    remote = versioning._cache_path(state.dvc_remote, part.md5)
    view = versioning.open_version(state, version)

    shutil.rmtree(view)
    cached.unlink()  # the cache lost it: fetched back from the remote
    assert _file_md5s(versioning.open_version(state, version))[f"{part.batch_date}.parquet"] == part.md5

    shutil.rmtree(view)
    cached.unlink()
    remote.unlink()  # gone everywhere
    with pytest.raises(versioning.PartitionMissing) as err:
        versioning.open_version(state, version)
    msg = str(err.value)
    for needed in (version, part.batch_date, part.md5, str(state.dvc_remote), "dvc pull"):
        assert needed in msg
    with pytest.raises(versioning.DataVersionNotFound, match="neither in the DVC cache"):
        versioning.open_version(state, "0" * 32)


def test_a_full_copy_version_from_before_the_manifests_still_opens(state, base_config):
    frame = make_training_set(n_days=12, rows_per_day=300)
    old_file = state.published / "training_set.parquet"  # the layout before: one full file per version
    frame.to_parquet(old_file, index=False)
    old = versioning.snapshot(state, old_file)
    versioning.record_version(state, versioning.DataVersionRecord(
        data_version=old, batch_date=max(frame["batch_date"]), interval_start=dt.datetime(2026, 1, 12),
        interval_end=dt.datetime(2026, 1, 13), feature_rows=len(frame), training_rows=len(frame),
        snapshot_path=str(old_file), raw_events_md5=None, raw_labels_md5=None, dbt_invocation_id="t",
        gx_run_id="t", gx_success=True, created_at=dt.datetime(2026, 1, 13)))
    old_file.unlink()  # only the DVC cache keeps it
    new = versioning.publish_frame(state, frame, "training_set", dbt_invocation_id="t", gx_run_id="t")

    path = versioning.open_version(state, old)
    assert path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() == old
    since = dt.date(2026, 1, 6)
    spec = base_config.model
    pd.testing.assert_frame_equal(datasets.load_training_set(state, old, spec, since=since),
                                  datasets.load_training_set(state, new, spec, since=since))
    assert datasets.batch_date_range(state, old) == datasets.batch_date_range(state, new) == (
        dt.date(2026, 1, 1), dt.date(2026, 1, 12))
    days = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(12)]
    assert versioning.version_days(state, old) == versioning.version_days(state, new) == days


def test_the_retrain_rules_count_days_from_the_manifest(state, base_config):
    """The day counts of the retrain policy and the deferral rule come from the manifest, no rows read."""
    from training.monitoring import retrain_deferral, retrain_policy

    version = versioning.publish_frame(state, make_training_set(n_days=9, rows_per_day=100), "training_set",
                                       dbt_invocation_id="t", gx_run_id="t")
    ok, why = retrain_policy.enough_history(state, base_config, version)
    w = base_config.windows
    need = w.validation_days + w.holdout_days + base_config.training.min_training_days
    assert ok is (9 >= need) and (str(9) in why)
    evidence = {"onset_window_start": "2026-01-06"}
    found = retrain_deferral.sufficiency(state, base_config, evidence, version)
    assert found is not None and found.post_onset_days == 4  # 01-06 .. 01-09


def test_partitions_share_one_schema_when_a_day_has_an_all_null_column(backend, state):
    """PostgreSQL rows reach Parquet through pandas, which would type an all-NULL column as null:
    the first day's file would then set a schema the later days cannot be read into."""
    first = START
    _load_day(state, first)
    with warehouse.transaction(state) as con:
        con.execute(f"update {TABLE} set channel = null, event_ts = null where batch_date = ?", [first])
    _load_day(state, first + dt.timedelta(days=1))
    version = _publish(state)
    view = versioning.open_version(state, version)
    schemas = {tuple((c.name, str(c.type)) for c in pq.read_schema(f)) for f in view.glob("*.parquet")}
    assert len(schemas) == 1
    rows = pd.read_parquet(view)
    assert rows["channel"].iloc[:PER_DAY].isna().all() and rows["channel"].iloc[PER_DAY:].notna().all()



def test_a_frame_versioned_before_any_snapshot_leaves_a_repo_that_snapshots(state):
    """The first thing a fresh state versions may be a training set (tests, benchmarks): the DVC repo is
    initialised before the partition writer creates .dvc/, so a later `dvc add` of a landed file works."""
    from tests.synthetic import publish

    frame = make_training_set(n_days=3, rows_per_day=50)
    version = publish(state, frame, "first")
    landed = state.data / "landed.parquet"
    frame.head(10).to_parquet(landed)
    assert versioning.snapshot(state, landed)
    assert len(pd.read_parquet(versioning.open_version(state, version))) == len(frame)


def test_a_snapshot_is_a_dvc_output_dvc_itself_reads(state):
    """snapshot writes the cache, the remote and the `.dvc` pointer without DVC's repo index (which
    loads every pointer of the repo, so landing a day cost more each day): DVC must still see the
    file as tracked and in sync, push nothing, and restore it with `dvc checkout`."""
    from dvc.repo import Repo

    landed = state.raw / "transactions" / "batch_date=2026-01-01.parquet"
    landed.parent.mkdir(parents=True)
    make_training_set(n_days=1, rows_per_day=50).to_parquet(landed)
    content = landed.read_bytes()
    md5 = versioning.snapshot(state, landed)
    assert md5 == hashlib.md5(content).hexdigest()
    repo = Repo(str(state.data))
    try:
        assert repo.status() == {} and repo.status(cloud=True) == {}
        landed.unlink()
        assert repo.status() != {}
        repo.checkout()
        assert landed.read_bytes() == content
    finally:
        repo.close()
