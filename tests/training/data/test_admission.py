"""The front door (training/data/admission.py) against every kind of bad delivery we could think of.

Each test lands real simulated days, edits a delivered file the way a broken source would, and
checks three things: the message names the feed, the day and the fix; the quarantine records it;
and nothing already loaded changes (a clean later day still loads and dbt still builds).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from training.config import Config, with_overrides
from training.data import admission, ingest
from training.data.dbt import run_dbt
from training.data.ingest import LandedBatch, LandedFeed
from training.data.quality import DataQualityGateFailed
from training.paths import StatePaths
from training.storage import warehouse


@pytest.fixture
def cfg(small_config: Config) -> Config:
    return with_overrides(small_config, simulator={"transactions_per_day": 800, "n_customers": 300})


def _day(cfg: Config, i: int) -> dt.date:
    return cfg.simulator.start_date + dt.timedelta(days=i)


def _admit_and_load(paths: StatePaths, cfg: Config, batch: LandedBatch) -> admission.Admission:
    result = admission.admit(paths, cfg, batch)
    ingest.load_raw(paths, result.batch)
    return result


def _edited(batch: LandedBatch, role: str, frame: pd.DataFrame | None = None, raw: bytes | None = None) -> LandedBatch:
    """The same landed batch with one feed's file (`events` | `labels`) replaced by an edited delivery."""
    feed: LandedFeed = getattr(batch, role)
    path = Path(feed.path).with_name(Path(feed.path).stem + ".edited.parquet")
    if raw is not None:
        path.write_bytes(raw)
    else:
        assert frame is not None
        frame.to_parquet(path, index=False)
    return replace(batch, **{role: replace(feed, path=str(path), rows=0 if frame is None else len(frame))})


def _raw_counts(paths: StatePaths) -> dict[str, int]:
    with warehouse.connect(paths, read_only=True) as con:
        return {t: int(con.scalar(f"select count(*) from raw.{t}")) for t in ("transactions", "chargebacks")}


def _quarantined(paths: StatePaths, day: dt.date) -> pd.DataFrame:
    with warehouse.connect(paths, read_only=True) as con:
        return con.frame("select * from quarantine.rejected_batches where batch_date = ?", [day])


@pytest.fixture
def loaded(state: StatePaths, cfg: Config) -> list[dt.date]:
    """Three clean days admitted and loaded."""
    days = [_day(cfg, i) for i in range(3)]
    for day in days:
        result = _admit_and_load(state, cfg, ingest.land(state, cfg, day))
        assert all(v.rejected_rows == 0 for v in result.feeds.values())
    return days


def test_reused_transaction_ids_are_refused_and_a_later_clean_day_still_builds(state, cfg, loaded):
    before = _raw_counts(state)
    day = _day(cfg, 3)
    batch = ingest.land(state, cfg, day)
    tx = ingest.read_landed(batch.events)
    old = ingest.read_landed(ingest.land(state, cfg, loaded[0]).events)
    tx.loc[: len(old) - 1, "transaction_id"] = old["transaction_id"].to_numpy()[: len(tx)]  # ids reused, new times
    with pytest.raises(DataQualityGateFailed) as err:
        admission.admit(state, cfg, _edited(batch, "events", tx))
    msg = str(err.value)
    assert f"transactions feed for {day} was refused" in msg
    assert f"already loaded for {loaded[0]}" in msg and "re-deliver" in msg
    assert _raw_counts(state) == before  # nothing loaded, nothing changed
    assert "ids_not_already_loaded" in _quarantined(state, day)["reason"].iloc[0]

    # the next clean day is admitted and dbt builds: an earlier bad day never blocks a later one
    _admit_and_load(state, cfg, ingest.land(state, cfg, _day(cfg, 4)))
    result = run_dbt(["build"], state, cfg, env={"CLOSEDLOOP_DBT_UNIT_TESTS": "false"})
    assert result.success


def test_re_running_a_loaded_day_is_not_a_reuse(state, cfg, loaded):
    result = _admit_and_load(state, cfg, ingest.land(state, cfg, loaded[-1]))
    assert result.feeds["transactions"].rejected_rows == 0


def test_orphan_labels_are_quarantined_and_the_rest_of_the_label_feed_loads(state, cfg, loaded):
    day = _day(cfg, 3)
    batch = ingest.land(state, cfg, day)
    cb = ingest.read_landed(batch.labels)
    assert len(cb) >= 2, "the simulator should deliver chargebacks by day 4"
    orphan = cb.iloc[[0]].assign(chargeback_id="cb-orphan-1", transaction_id="tx-20991231-0000001")
    edited = pd.concat([cb, orphan], ignore_index=True)
    result = _admit_and_load(state, cfg, _edited(batch, "labels", edited))
    verdict = result.feeds["chargebacks"]
    assert verdict.rejected_rows == 1 and verdict.admitted.rows == len(cb)
    assert "never delivered" in verdict.warnings[0]
    with warehouse.connect(state, read_only=True) as con:
        rows = con.frame("select id_column, row_id, expectation from quarantine.rejected_rows where batch_date = ?", [day])
        loaded_cb = con.scalar("select count(*) from raw.chargebacks where batch_date = ?", [day])
    assert rows.to_dict("records") == [
        {"id_column": "chargeback_id", "row_id": "cb-orphan-1", "expectation": "labels_refer_to_known_events"}
    ]
    assert loaded_cb == len(cb)


def test_chargeback_ids_delivered_again_on_another_day_are_quarantined(state, cfg, loaded):
    with warehouse.connect(state, read_only=True) as con:
        earlier = con.frame("select chargeback_id, transaction_id, reported_at, reason_code from raw.chargebacks limit 1")
    assert len(earlier) == 1
    day = _day(cfg, 3)
    batch = ingest.land(state, cfg, day)
    cb = ingest.read_landed(batch.labels)
    again = earlier.assign(reported_at=pd.Timestamp(day) + pd.Timedelta(hours=1))
    result = admission.admit(state, cfg, _edited(batch, "labels", pd.concat([cb, again], ignore_index=True)))
    assert result.feeds["chargebacks"].rejected_rows == 1
    assert "already delivered" in result.feeds["chargebacks"].warnings[0]


@pytest.mark.parametrize("content", [b"", b"not a parquet file at all"], ids=["zero_bytes", "garbage"])
def test_unreadable_file_is_a_named_quarantined_failure(state, cfg, loaded, content):
    before = _raw_counts(state)
    day = _day(cfg, 3)
    batch = _edited(ingest.land(state, cfg, day), "events", raw=content)
    with pytest.raises(DataQualityGateFailed) as err:
        admission.admit(state, cfg, batch)
    msg = str(err.value)
    assert f"transactions feed for {day} cannot be read" in msg and batch.events.path in msg
    assert "Re-deliver" in msg
    q = _quarantined(state, day)
    assert len(q) == 1 and "readable_file" in q["reason"].iloc[0]
    assert Path(q["snapshot_path"].iloc[0]).read_bytes() == content  # the delivered bytes kept as evidence
    assert _raw_counts(state) == before


def test_unreadable_label_file_names_the_label_feed(state, cfg, loaded):
    day = _day(cfg, 3)
    batch = _edited(ingest.land(state, cfg, day), "labels", raw=b"")
    with pytest.raises(DataQualityGateFailed, match=f"chargebacks feed for {day} cannot be read"):
        admission.admit(state, cfg, batch)


@pytest.mark.parametrize("policy", ["reject", "warn", "allow"])
def test_extra_column_policy(state, cfg, policy):
    cfg = with_overrides(cfg, admission={"extra_columns": policy})
    day = _day(cfg, 0)
    batch = ingest.land(state, cfg, day)
    tx = ingest.read_landed(batch.events).assign(loyalty_tier="gold")
    edited = _edited(batch, "events", tx)
    if policy == "reject":
        with pytest.raises(DataQualityGateFailed, match="unexpected: loyalty_tier"):
            admission.admit(state, cfg, edited)
        return
    result = _admit_and_load(state, cfg, edited)
    assert result.feeds["transactions"].admitted.rows == len(tx)
    assert bool(result.feeds["transactions"].warnings) == (policy == "warn")
    with warehouse.connect(state, read_only=True) as con:
        assert "loyalty_tier" not in con.columns("raw.transactions")


def test_a_few_out_of_range_rows_are_quarantined_alone_and_many_stop_the_batch(state, cfg, loaded):
    day = _day(cfg, 3)
    batch = ingest.land(state, cfg, day)
    tx = ingest.read_landed(batch.events)
    few = tx.copy()
    few.loc[[0, 1], "event_ts"] = pd.Timestamp(day) + pd.Timedelta(days=3)  # two future timestamps
    result = _admit_and_load(state, cfg, _edited(batch, "events", few))
    assert result.feeds["transactions"].rejected_rows == 2
    assert result.feeds["transactions"].admitted.rows == len(tx) - 2
    q = _quarantined(state, day)
    assert q["reason"].iloc[0].startswith("2 of ")

    many = tx.copy()
    many.loc[: len(tx) // 10, "event_ts"] = pd.Timestamp(day) + pd.Timedelta(days=3)
    with pytest.raises(DataQualityGateFailed, match="exceed admission.max_rejected_row_share"):
        admission.admit(state, cfg, _edited(batch, "events", many))
