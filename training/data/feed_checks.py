"""Feed-level sanity: what no single row shows, checked against the recent loaded days.

The suites judge rows one at a time; a truncated export, a feed whose clock moved by an hour, a
label reported before its event or a label line delivered twice all pass them (or, for the
duplicate, refuse the whole day including its events). The front door (training/data/admission.py)
hands every feed's failures through `review`, which adds:

- volume (events feed, batch-level): the day's row count against the median of the recent loaded
  days (`admission.feed_checks.volume`);
- whole-feed time shift (events feed, batch-level): the day's hour-of-day profile against the
  recent days', moved by every whole hour; a clearly better fit at a non-zero shift names the shift
  (`admission.feed_checks.time_shift`);
- label before its event (labels feed, row-level, held): `reported_at` earlier than the event's time;
- label duplicates (labels feed, row-level, held): the suite's uniqueness failures on the label id
  (or on the event id when the contract declares it unique) hold only those rows, not the day.

Names come from `cfg.contract`; failures have the admission's shape (expectation, column, details,
guards, row ids, exempt_from_share). The recent days' volume and profile are one SQL query.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.config import Config
from training.contract import DataContract
from training.paths import StatePaths
from training.storage import warehouse

log = logging.getLogger(__name__)

VOLUME = "volume_against_recent_days"
TIME_SHIFT = "event_time_not_shifted"
LABEL_BEFORE_EVENT = "labels_reported_after_their_event"
UNIQUE = "expect_column_values_to_be_unique"
#: Failures about the whole batch (the front door refuses it, whatever rows they name).
BATCH_LEVEL = {VOLUME, TIME_SHIFT}


def row_id_column(contract: DataContract, feed: str) -> str:
    """The column the front door names a feed's rows by: the feed's own contract id."""
    return contract.events.id if feed == contract.events.feed else contract.labels.id


def review(
    paths: StatePaths,
    cfg: Config,
    feed: str,
    frame: pd.DataFrame,
    day: dt.date,
    failed: list[dict[str, Any]],
    *,
    id_key: str = "row_ids",
) -> tuple[list[dict[str, Any]], list[str]]:
    """The feed's failures with the feed-level checks added, and the warnings of `warn` policies.

    `failed` are the suite's and the history checks' failures; label duplicates among them become
    held rows (policy `hold`). New failures name their rows under `id_key`.
    """
    contract, policy = cfg.contract, cfg.admission.feed_checks
    out, warnings = list(failed), list[str]()
    if frame.empty:
        return out, warnings
    if feed == contract.events.feed:
        recent = _recent_days(paths, cfg, day)
        for check, spec in ((_volume, policy.volume), (_time_shift, policy.time_shift)):
            if spec.policy == "off":
                continue
            failure = check(cfg, frame, day, recent)
            if failure is None:
                continue
            event = _declared_volume_event(cfg, day) if check is _volume else None
            if event is not None:  # a declared holiday or campaign: expected volume, not a broken export
                warnings.append(f"{failure['details']} (expected: calendar event {event.name!r}, "
                                f"{event.reason}; loaded)")
                log.warning("%s %s: %s", contract.events.raw_table, day, warnings[-1])
            elif spec.policy == "warn":
                warnings.append(f"{failure['details']} (admission.feed_checks: warn, loaded anyway)")
                log.warning("%s %s: %s", contract.events.raw_table, day, warnings[-1])
            else:
                out.append(failure | {id_key: []})
    elif feed == contract.labels.feed:
        if policy.label_duplicates == "hold":
            out = [_held_duplicate(contract, item) for item in out]
        if policy.label_before_event == "quarantine":
            before = _labels_before_events(paths, contract, frame, day)
            if before is not None:
                out.append({k if k != "row_ids" else id_key: v for k, v in before.items()})
    return out, warnings


def _declared_volume_event(cfg: Config, day: dt.date) -> Any:
    """The config's calendar event (drift.calendar) covering `day` that excuses data drift, if any:
    its volume is expected to differ from the days around it."""
    for event in cfg.drift.calendar:
        if event.covers(day, day) and "data_drift" in event.excuses:
            return event
    return None


# --------------------------------------------------------------------------------------------
# the events feed against the recent days
# --------------------------------------------------------------------------------------------


def _recent_days(paths: StatePaths, cfg: Config, day: dt.date) -> pd.DataFrame:
    """Rows per (loaded day, hour of day) of the events within `recent_days` of `day`, `day` itself
    excluded (a backfilled day is compared with the days around it). One query."""
    ev = cfg.contract.events
    span = max(cfg.admission.feed_checks.volume.recent_days, cfg.admission.feed_checks.time_shift.recent_days)
    empty = pd.DataFrame({"batch_date": [], "hour": [], "n": [], "distance": []})
    if not warehouse.exists(paths):
        return empty
    schema, table = ev.raw_table.split(".")
    with warehouse.connect(paths, read_only=True) as con:
        if not con.table_exists(schema, table):
            return empty
        frame = con.frame(
            f"select batch_date, cast(extract(hour from {ev.time}) as integer) as hour, count(*) as n "
            f"from {ev.raw_table} where batch_date between ? and ? and batch_date <> ? "
            f"and {ev.time} is not null group by 1, 2",
            [day - dt.timedelta(days=span), day + dt.timedelta(days=span), day],
        )
    frame["batch_date"] = pd.to_datetime(frame["batch_date"]).dt.date
    frame["distance"] = [abs((d - day).days) for d in frame["batch_date"]]
    return frame


def _nearest(recent: pd.DataFrame, days: int) -> pd.DataFrame:
    return recent[recent["distance"] <= days]


def _volume(cfg: Config, frame: pd.DataFrame, day: dt.date, recent: pd.DataFrame) -> dict[str, Any] | None:
    spec = cfg.admission.feed_checks.volume
    per_day = _nearest(recent, spec.recent_days).groupby("batch_date")["n"].sum()
    if len(per_day) < spec.min_history_days:
        return None
    median = float(per_day.median())
    ratio = len(frame) / median if median else float("inf")
    if spec.min_ratio <= ratio <= spec.max_ratio:
        return None
    low = ratio < spec.min_ratio
    return {
        "expectation": VOLUME, "column": None,
        "details": (
            f"{len(frame):,} rows, {ratio:.2f} x the median of the {len(per_day)} loaded days within "
            f"{spec.recent_days} days ({median:,.0f} rows); admission.feed_checks.volume allows "
            f"{spec.min_ratio:g}-{spec.max_ratio:g} x (re-deliver the complete day; if the volume is real, "
            "set admission.feed_checks.volume.policy: warn or widen its ratios)"
        ),
        "guards": ("a truncated or partial export would load as a complete day" if low
                   else "a replayed or merged export would load as one day"),
    }


def hour_profile(hours: pd.Series | np.ndarray) -> np.ndarray:
    """Share of rows per hour of day (24 bins)."""
    counts = np.bincount(np.asarray(hours, dtype=int) % 24, minlength=24).astype(float)
    return counts / counts.sum() if counts.sum() else counts


def estimate_shift(day_profile: np.ndarray, reference: np.ndarray) -> tuple[int, float, float]:
    """(best whole-hour shift, distance at it, distance unmoved): the shift `k` such that the day's
    profile looks like the reference moved by `k` hours (k = -1: the day's clock is an hour early).
    Distance = total variation between the two hour-of-day profiles."""
    distances = {k: 0.5 * float(np.abs(np.roll(reference, k) - day_profile).sum()) for k in range(-12, 12)}
    best = min(distances, key=lambda k: (distances[k], abs(k)))
    return best, distances[best], distances[0]


def _time_shift(cfg: Config, frame: pd.DataFrame, day: dt.date, recent: pd.DataFrame) -> dict[str, Any] | None:
    spec, ev = cfg.admission.feed_checks.time_shift, cfg.contract.events
    history = _nearest(recent, spec.recent_days)
    if history["batch_date"].nunique() < spec.min_history_days or ev.time not in frame.columns:
        return None
    times = pd.to_datetime(frame[ev.time], errors="coerce").dropna()
    if len(times) < spec.min_rows:
        return None
    reference = hour_profile(np.repeat(history["hour"].to_numpy(), history["n"].to_numpy()))
    shift, best, unmoved = estimate_shift(hour_profile(times.dt.hour), reference)
    if shift == 0 or unmoved < spec.min_distance or best > (1 - spec.min_improvement) * unmoved:
        return None
    start = pd.Timestamp(day)
    outside = float(((times < start) | (times >= start + pd.Timedelta(days=1))).mean())
    return {
        "expectation": TIME_SHIFT, "column": ev.time,
        "details": (
            f"the whole feed's {ev.time} looks shifted by {shift:+d} h: its hour-of-day profile matches the "
            f"{history['batch_date'].nunique()} loaded days around it moved by {shift:+d} h (distance {best:.3f}) "
            f"far better than unmoved ({unmoved:.3f}), and {outside:.2%} of its rows fall outside {day} "
            f"(correct the feed's clock or time zone at the source; if the change is real, "
            "set admission.feed_checks.time_shift.policy: warn)"
        ),
        "guards": ("a clock or time-zone change at the source: every row's point-in-time features and day "
                   "would be wrong, not only the rows pushed out of the interval"),
    }


# --------------------------------------------------------------------------------------------
# the labels feed against its events
# --------------------------------------------------------------------------------------------


def _held_duplicate(contract: DataContract, item: dict[str, Any]) -> dict[str, Any]:
    """A uniqueness failure on the label id (or a unique event id) held as rows, not counted."""
    lab = contract.labels
    unique_cols = {lab.id} | ({lab.event_id} if lab.columns[lab.event_id].unique else set())
    if item.get("expectation") != UNIQUE or item.get("column") not in unique_cols or item.get("exempt_from_share"):
        return item
    return item | {
        "details": f"{item.get('details')}; those rows are held (admission.feed_checks.label_duplicates: hold), "
                   "the rest of the day loads",
        "exempt_from_share": True,
    }


def _labels_before_events(
    paths: StatePaths, contract: DataContract, frame: pd.DataFrame, day: dt.date
) -> dict[str, Any] | None:
    lab, ev = contract.labels, contract.events
    if lab.event_id not in frame.columns or lab.reported_at not in frame.columns or lab.id not in frame.columns:
        return None
    labels = pd.DataFrame({
        "label_id": frame[lab.id].astype(str),
        "event_id": frame[lab.event_id].astype(str),
        "reported_at": pd.to_datetime(frame[lab.reported_at], errors="coerce"),
    }).dropna()
    events = _event_times(paths, contract, set(labels["event_id"]), day)
    joined = labels.merge(events, on="event_id", how="inner")
    early = joined[joined["reported_at"] < joined["event_time"]]
    if early.empty:
        return None
    ids = sorted(early["label_id"].unique())  # rows are named by the labels feed's own id
    return {
        "expectation": LABEL_BEFORE_EVENT, "column": lab.reported_at,
        "details": f"{len(early)} labels reported before their event's {ev.time} (e.g. {', '.join(ids[:3])})",
        "guards": "a label known before its event happened is a clock or join error; it would leak into "
                  "point-in-time features and training windows",
        "row_ids": ids,
        # one bad label must not refuse the day's labels (and with them its events)
        "exempt_from_share": True,
    }


def _event_times(paths: StatePaths, contract: DataContract, ids: set[str], day: dt.date) -> pd.DataFrame:
    """`event_id, event_time` of the given ids: loaded events, and the day's own delivered events."""
    ev = contract.events
    parts = []
    if ids and warehouse.exists(paths):
        schema, table = ev.raw_table.split(".")
        with warehouse.connect(paths, read_only=True) as con:
            if con.table_exists(schema, table):
                uniq = sorted(ids)
                for i in range(0, len(uniq), 5000):
                    chunk = uniq[i:i + 5000]
                    parts.append(con.frame(
                        f"select {ev.id} as event_id, {ev.time} as event_time from {ev.raw_table} "
                        f"where {ev.id} in ({', '.join('?' for _ in chunk)})", chunk,
                    ))
    delivered = _delivered_events(paths, contract, day)
    if delivered is not None:
        parts.append(delivered[delivered["event_id"].isin(ids)])
    if not parts:
        return pd.DataFrame(columns=["event_id", "event_time"])
    out = pd.concat(parts, ignore_index=True)
    out["event_id"] = out["event_id"].astype(str)
    out["event_time"] = pd.to_datetime(out["event_time"], errors="coerce")
    return out.dropna().drop_duplicates("event_id", keep="last")


def _delivered_events(paths: StatePaths, contract: DataContract, day: dt.date) -> pd.DataFrame | None:
    """The day's events as landed (labels may refer to events of their own day, not loaded yet)."""
    ev = contract.events
    path = Path(paths.raw) / ev.feed / f"batch_date={day.isoformat()}.parquet"
    try:
        frame = pd.read_parquet(path, columns=[ev.id, ev.time])
    except Exception:  # noqa: BLE001 - no readable delivery: only loaded events are compared
        return None
    return pd.DataFrame({"event_id": frame[ev.id].astype(str), "event_time": frame[ev.time]})
