"""Label maturity learned from the label feed: when is a window's label set (nearly) complete?

A label (a delivered positive) arrives some days after its event; until then the event reads as a
negative. A fixed `windows.label_maturity_days` breaks when the feed slows down: labels arriving
twice as late make a complete-looking window miss half its positives, and matured performance
collapses with no change in the world. So the monitor measures the delay of every delivered label
(its report day minus its event day, in batch days, column names from `cfg.contract`), per report day,
and judges performance only on windows the learned distribution calls complete:

* maturity = max(`label_maturity_days` (floor and fallback), the `quantile` of the delays of the
  labels reported in the last `recent_days`), capped at `max_days`;
* `label_delay_change` - that quantile moved by at least `change_days` from the one of the
  `baseline_days` before: its own signal, alert-worthy, never a retrain;
* while the learned maturity is still rising (above its value `settle_days` ago), the newest
  delays are not observable yet (a label 10 days late is seen only 10 days on), so matured
  performance is `insufficient`, not a breach, until it holds.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from training.config import Config
from training.monitoring.retrain_trigger import Signal
from training.paths import StatePaths

SIGNAL = "label_delay"
REPORTED_DAY = "reported_day"
DELAY_DAYS = "delay_days"
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class LabelMaturity:
    """The maturity the monitor uses on `as_of`, and the delay measurements behind it."""

    as_of: dt.date
    days: int
    floor: int
    source: str
    quantile: float
    recent_labels: int = 0
    recent_quantile_days: float | None = None
    baseline_labels: int = 0
    baseline_quantile_days: float | None = None
    change: bool | None = None  # None: too few labels to tell
    previous_days: int | None = None  # the maturity `settle_days` earlier
    daily: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rising(self) -> bool:
        """The learned maturity is above its value `settle_days` ago: late labels are still arriving."""
        return self.previous_days is not None and self.days > self.previous_days

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["as_of"] = self.as_of.isoformat()
        d["rising"] = self.rising
        return d

    def signal(self, cfg: Config) -> Signal:
        """The `label_delay` signal: `breach` = the delay distribution changed (an alert, never a retrain)."""
        spec = cfg.windows.label_maturity
        if self.change is None:
            return Signal(SIGNAL, "insufficient", self.recent_quantile_days, None, self.source)
        base = self.baseline_quantile_days
        verb = "moved" if self.change else "holds"
        why = (
            f"label delay q{spec.quantile:g} {self.recent_quantile_days:g} days over the labels reported in the "
            f"last {spec.recent_days} days ({self.recent_labels}) {verb} against {base:g} days before "
            f"(change at >= {spec.change_days:g} days); maturity {self.days} days ({self.source})"
        )
        return Signal(SIGNAL, "breach" if self.change else "ok", self.recent_quantile_days, base, why)


def delays(labels: pd.DataFrame) -> pd.DataFrame:
    """`reported_day`, `delay_days` (report day - event day) from frames with `reported_at` and `event_time`."""
    reported = pd.to_datetime(labels["reported_at"]).dt.normalize()
    event = pd.to_datetime(labels["event_time"]).dt.normalize()
    out = pd.DataFrame({REPORTED_DAY: reported.dt.date, DELAY_DAYS: (reported - event).dt.days.astype("float64")})
    return out[out[DELAY_DAYS].notna() & (out[DELAY_DAYS] >= 0)].reset_index(drop=True)


def _between(frame: pd.DataFrame, first: dt.date, last: dt.date) -> pd.Series:
    days = frame[REPORTED_DAY]
    return frame.loc[(days >= first) & (days <= last), DELAY_DAYS]


def _quantile(values: pd.Series, q: float) -> float:
    return float(np.quantile(values.to_numpy(dtype="float64"), q, method="higher"))


def _learned_days(cfg: Config, delay_frame: pd.DataFrame, as_of: dt.date) -> tuple[int, str, pd.Series, float | None]:
    spec, floor = cfg.windows.label_maturity, cfg.windows.label_maturity_days
    recent = _between(delay_frame, as_of - (spec.recent_days - 1) * DAY, as_of)
    if len(recent) < spec.min_labels:
        return floor, f"floor windows.label_maturity_days: {len(recent)} labels reported in the last " \
            f"{spec.recent_days} days < min_labels {spec.min_labels}", recent, None
    q = _quantile(recent, spec.quantile)
    learned = int(math.ceil(q))
    days = min(max(floor, learned), spec.max_days)
    if learned > spec.max_days:
        source = f"learned q{spec.quantile:g} {q:g} days, capped at max_days {spec.max_days}"
    elif learned > floor:
        source = f"learned: q{spec.quantile:g} of recent delays is {q:g} days, above the floor {floor}"
    else:
        source = f"floor {floor} days: q{spec.quantile:g} of recent delays is {q:g} days"
    return days, source, recent, q


def learn(cfg: Config, delay_frame: pd.DataFrame, as_of: dt.date) -> LabelMaturity:
    """The label maturity on `as_of` from the delays of the labels reported up to it (see module doc)."""
    spec, floor = cfg.windows.label_maturity, cfg.windows.label_maturity_days
    if not spec.learn:
        return LabelMaturity(as_of, floor, floor, "windows.label_maturity_days (learning off)", spec.quantile)
    delay_frame = delay_frame[delay_frame[REPORTED_DAY] <= as_of]
    days, source, recent, q = _learned_days(cfg, delay_frame, as_of)
    base_last = as_of - spec.recent_days * DAY
    baseline = _between(delay_frame, base_last - (spec.baseline_days - 1) * DAY, base_last)
    base_q = _quantile(baseline, spec.quantile) if len(baseline) >= spec.min_labels else None
    change = None if q is None or base_q is None else abs(q - base_q) >= spec.change_days
    previous, _, _, _ = _learned_days(cfg, delay_frame, as_of - spec.settle_days * DAY)
    daily = [
        {"reported_day": day.isoformat(), "labels": int(len(g)), "median_days": float(g.median()),
         f"q{spec.quantile:g}_days": _quantile(g, spec.quantile)}
        for day, g in recent.groupby(delay_frame.loc[recent.index, REPORTED_DAY])
    ]
    return LabelMaturity(
        as_of, days, floor, source, spec.quantile, len(recent), q, len(baseline), base_q, change, previous, daily
    )


def no_delays() -> pd.DataFrame:
    """An empty delay frame (no label feed read): `learn` falls back to the floor."""
    return pd.DataFrame({REPORTED_DAY: pd.Series([], dtype=object), DELAY_DAYS: pd.Series([], dtype="float64")})


def load_delays(paths: StatePaths, cfg: Config, first: dt.date, last: dt.date) -> pd.DataFrame:
    """The delays of the labels reported `first`..`last`, from the raw label and event feeds.

    Empty (so the floor applies) while the warehouse holds no raw feeds yet.
    """
    from training.storage.warehouse import WarehouseMissing, connect, quote_ident

    ev, lb = cfg.contract.events, cfg.contract.labels
    sql = f"""
        select l.{quote_ident(lb.reported_at)} as reported_at, e.{quote_ident(ev.time)} as event_time
        from {lb.raw_table} l
        join {ev.raw_table} e on cast(e.{quote_ident(ev.id)} as varchar) = cast(l.{quote_ident(lb.event_id)} as varchar)
        where l.{quote_ident(lb.reported_at)} >= ? and l.{quote_ident(lb.reported_at)} < ?
    """
    empty = no_delays()
    try:
        with connect(paths, read_only=True) as con:
            for table in (lb.raw_table, ev.raw_table):
                if not con.table_exists(*table.split(".", 1)):
                    return empty
            frame = con.frame(
                sql, [dt.datetime.combine(first, dt.time()), dt.datetime.combine(last + DAY, dt.time())]
            )
    except WarehouseMissing:
        return empty
    return delays(frame) if len(frame) else empty


def history_start(cfg: Config, as_of: dt.date) -> dt.date:
    """The first report day `learn` reads on `as_of` (recent + baseline + the settle look-back)."""
    spec = cfg.windows.label_maturity
    return as_of - (spec.recent_days + spec.baseline_days + spec.settle_days) * DAY
