"""Feed-level sanity at the front door (training/data/feed_checks.py), on real simulated days.

Four clean days are admitted and loaded once; each test edits day 5's delivery the way a broken
source would (a truncated export, a clock an hour early, a label before its event, a label line
sent twice) and checks what the front door now does: refuse the batch naming the problem, or hold
only the offending rows and admit the rest.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.config import Config, with_overrides
from training.data import admission, feed_checks, ingest
from training.data.ingest import LandedBatch
from training.data.quality import DataQualityGateFailed
from training.paths import StatePaths
from training.storage import warehouse

N_HISTORY = 4


@pytest.fixture(scope="module")
def cfg(base_config: Config) -> Config:
    # 3000 events a day: enough rows for the hour-of-day profile (time_shift.min_rows 2000)
    return with_overrides(base_config, simulator={"transactions_per_day": 3000, "n_customers": 800,
                                                  "n_merchants": 120, "fraud_rate": 0.015})


def _day(cfg: Config, i: int) -> dt.date:
    return cfg.start_date + dt.timedelta(days=i)


@pytest.fixture(scope="module")
def history(module_state: StatePaths, cfg: Config) -> StatePaths:
    """Four clean days admitted and loaded; the checks are active from the fourth (3 days of history)."""
    for i in range(N_HISTORY):
        result = admission.admit(module_state, cfg, ingest.land(module_state, cfg, _day(cfg, i)))
        assert all(v.rejected_rows == 0 and not v.warnings for v in result.feeds.values()), result.to_xcom()
        ingest.load_raw(module_state, result.batch)
    return module_state


@pytest.fixture(scope="module")
def day5(history: StatePaths, cfg: Config) -> LandedBatch:
    return ingest.land(history, cfg, _day(cfg, N_HISTORY))


def _edited(batch: LandedBatch, feed: str, frame: pd.DataFrame) -> LandedBatch:
    landed = getattr(batch, feed)
    path = Path(landed.path).with_name(Path(landed.path).stem + ".edited.parquet")
    frame.to_parquet(path, index=False)
    return replace(batch, **{feed: replace(landed, path=str(path), rows=len(frame))})


def _raw_rows(paths: StatePaths, day: dt.date) -> int:
    with warehouse.connect(paths, read_only=True) as con:
        return int(con.scalar("select count(*) from raw.transactions where batch_date = ?", [day]))


@pytest.mark.parametrize("rows", [40, "half"], ids=["40_rows", "half_size"])
def test_a_truncated_events_feed_is_refused_naming_its_volume(history, cfg, day5, rows):
    tx = ingest.read_landed(day5.events)
    n = len(tx) // 2 if rows == "half" else rows
    with pytest.raises(DataQualityGateFailed) as err:
        admission.admit(history, cfg, _edited(day5, "events", tx.iloc[:n]))
    msg = str(err.value)
    assert f"transactions feed for {day5.batch_date} was refused" in msg
    found = re.search(rf"{feed_checks.VOLUME} ?\({n:,} rows, (\d\.\d\d) x the median of the {N_HISTORY} loaded days", msg)
    assert found and float(found.group(1)) < 0.6, msg  # the weekend days around it carry 1.2x a weekday
    ratio = found.group(1)
    assert "admission.feed_checks.volume" in msg
    assert _raw_rows(history, day5.batch_date) == 0  # nothing loaded

    # policy warn: the same delivery is admitted, with the finding as a warning
    warn = with_overrides(cfg, admission={"feed_checks": {"volume": {"policy": "warn"}}})
    result = admission.admit(history, warn, _edited(day5, "events", tx.iloc[:n]))
    assert result.feeds["transactions"].admitted.rows == n
    assert any(f"{ratio} x the median" in w for w in result.feeds["transactions"].warnings)


def test_a_declared_calendar_event_excuses_its_volume(history, cfg, day5):
    """A holiday or campaign declared in drift.calendar changes the volume on purpose: the door loads
    the day with the finding and the event's reason as a warning instead of refusing it."""
    tx = ingest.read_landed(day5.events)
    holiday = with_overrides(cfg, drift={"calendar": [{
        "name": "closing_sale", "start": str(day5.batch_date), "end": str(day5.batch_date),
        "reason": "stores closed at noon: half the usual volume",
    }]})
    result = admission.admit(history, holiday, _edited(day5, "events", tx.iloc[: len(tx) // 2]))
    assert result.feeds["transactions"].admitted.rows == len(tx) // 2
    [warning] = result.feeds["transactions"].warnings
    assert re.search(r"\d\.\d\d x the median", warning) and "calendar event 'closing_sale'" in warning
    assert "half the usual volume" in warning


def test_a_feed_shifted_by_an_hour_is_refused_naming_the_shift(history, cfg, day5):
    tx = ingest.read_landed(day5.events)
    shifted = tx.assign(event_ts=tx["event_ts"] - pd.Timedelta(hours=1))
    with pytest.raises(DataQualityGateFailed) as err:
        admission.admit(history, cfg, _edited(day5, "events", shifted))
    msg = str(err.value)
    assert feed_checks.TIME_SHIFT in msg and "looks shifted by -1 h" in msg
    assert f"of its rows fall outside {day5.batch_date}" in msg
    # the batch as a whole was refused, not only the rows pushed into the previous day
    assert "exceed admission.max_rejected_row_share" not in msg
    assert _raw_rows(history, day5.batch_date) == 0


def test_estimate_shift_finds_the_moved_hours():
    reference = np.arange(1, 25, dtype=float) ** 2
    reference /= reference.sum()
    for k in (-3, -1, 2):
        shift, best, unmoved = feed_checks.estimate_shift(np.roll(reference, k), reference)
        assert (shift, best) == (k, 0.0) and unmoved > 0.05
    assert feed_checks.estimate_shift(reference, reference)[0] == 0


def test_a_label_reported_before_its_event_is_held_as_a_row(history, cfg, day5):
    tx = ingest.read_landed(day5.events)
    cb = ingest.read_landed(day5.labels)
    event = tx[tx["event_ts"].dt.hour >= 12].iloc[0]  # an event of the day itself, in the afternoon
    early = cb.iloc[[0]].assign(chargeback_id="cb-early-1", transaction_id=event["transaction_id"],
                                reported_at=pd.Timestamp(day5.batch_date) + pd.Timedelta(hours=1))
    result = admission.admit(history, cfg, _edited(day5, "labels", pd.concat([cb, early], ignore_index=True)))
    verdict = result.feeds["chargebacks"]
    assert verdict.rejected_rows == 1 and verdict.admitted.rows == len(cb)
    assert "1 labels reported before their event's event_ts" in verdict.warnings[0]
    with warehouse.connect(history, read_only=True) as con:
        held = con.frame("select row_id, expectation from quarantine.rejected_rows where batch_date = ? "
                         "and table_name = 'raw.chargebacks'", [day5.batch_date])
    assert held.to_dict("records") == [{"row_id": "cb-early-1",
                                        "expectation": feed_checks.LABEL_BEFORE_EVENT}]
    assert result.feeds["transactions"].admitted.rows == len(tx)


def test_a_duplicate_label_line_holds_only_its_rows(history, cfg, day5):
    tx = ingest.read_landed(day5.events)
    cb = ingest.read_landed(day5.labels)
    assert len(cb) >= 10, "the simulator should deliver labels by day 5"
    twice = pd.concat([cb, cb.iloc[[3]]], ignore_index=True)
    result = admission.admit(history, cfg, _edited(day5, "labels", twice))
    assert result.feeds["transactions"].admitted.rows == len(tx)  # the day's events are not refused
    verdict = result.feeds["chargebacks"]
    assert verdict.rejected_rows == 2 and verdict.admitted.rows == len(cb) - 1  # both lines of that id held
    assert "label_duplicates: hold" in verdict.warnings[0]

    refuse = with_overrides(cfg, admission={"feed_checks": {"label_duplicates": "refuse"}})
    with pytest.raises(DataQualityGateFailed, match="exceed admission.max_rejected_row_share"):
        admission.admit(history, refuse, _edited(day5, "labels", twice))
