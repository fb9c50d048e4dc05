"""The retrain trigger policy and the monitoring table it writes.

One monitoring *window* (a range of batch dates, both ends inclusive) gives three signals, each
`breach`, `ok`, `insufficient` (too few rows / matured frauds: never a breach) or `unavailable`
(an input is missing: never a breach):

* `data_drift` - share of monitored features whose Evidently drift test fires >= drift_share_threshold;
  features whose drift the config expects (`expected_drift: warmup|seasonal` with a reason) are
  reported with that reason and not counted (or counted at their relaxed threshold);
* `prediction_drift` - the score distribution moved (normed Wasserstein >= prediction_drift_threshold);
* `performance` - on matured labels, even the optimistic (bootstrap upper) end of the primary metric
  is below champion holdout value x (1 - performance_tolerance).

The drift reference covers whole weeks and each window is compared with the same weekdays of it
(`select_reference`): busier, pricier weekends are the world's rhythm, not drift.

`decide` turns a history of windows into one decision. It is a pure function so every rule can be
tested without a warehouse. A retrain is triggered when, for some signal, the latest window
breaches and at least k of the last n eligible windows breach on that same signal - counting only
windows whose signal periods do not overlap, so one bad day seen by three overlapping 3-day windows
counts once. Eligible windows are those evaluated against the current champion, scored entirely by
it, and ending after the last promotion or retrain (evidence that already led to a retrain is not
reused). A trigger is blocked while a retrain is in flight, for `cooldown_days` after the last
promotion or retrain, after rejected retrains (`backoff`, growing with each rejection) and beyond
`storm.max_triggers` per `storm.period_days` (`storm_cap`); every block is a recorded decision.
Requiring the same signal k times keeps two unrelated one-off blips (drift one day, an unlucky
fraud sample the next) from adding up to a retrain. A trigger's evidence names the onset (first
breaching window of the episode) so the retrain can anchor its training window there.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa

from training.config import Config
from training.errors import ClosedloopError
from training.monitoring import drift
from training.paths import StatePaths
from training.storage.ledger import engine, ensure_tables, metadata

SIGNALS: tuple[str, ...] = ("data_drift", "prediction_drift", "performance")
Status = Literal["breach", "ok", "insufficient", "unavailable"]


class MonitoringError(ClosedloopError, ValueError):
    """Monitoring inputs are inconsistent; the message says what to pass instead."""


class MonitoringDataError(MonitoringError):
    """The warehouse lacks the tables or columns the monitor reads."""


#: One row per evaluated (window_end, champion_version); re-evaluating a window replaces its row.
monitoring_decisions = sa.Table(
    "monitoring_decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("window_start", sa.Date, nullable=False),
    sa.Column("window_end", sa.Date, nullable=False, index=True),
    sa.Column("champion_version", sa.String(64), nullable=False),
    sa.Column("scored_by_version", sa.String(256)),
    sa.Column("row_count", sa.Integer, nullable=False),
    sa.Column("matured_rows", sa.Integer, nullable=False),
    sa.Column("positives", sa.Integer, nullable=False),
    sa.Column("drift_share", sa.Float),
    sa.Column("feature_scores", sa.Text),  # JSON list of FeatureDrift
    sa.Column("prediction_drift", sa.Float),
    sa.Column("performance", sa.Text),  # JSON: window metrics, champion metrics, floor, bound
    sa.Column("data_drift_status", sa.String(16), nullable=False),
    sa.Column("prediction_drift_status", sa.String(16), nullable=False),
    sa.Column("performance_status", sa.String(16), nullable=False),
    sa.Column("breach_data_drift", sa.Boolean, nullable=False),
    sa.Column("breach_prediction_drift", sa.Boolean, nullable=False),
    sa.Column("breach_performance", sa.Boolean, nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),  # trigger | no_trigger
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("why", sa.Text, nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),  # JSON: the decision's evidence
    sa.Column("window_evidence", sa.Text, nullable=False),  # JSON: WindowEvidence, to rebuild history
    sa.Column("report_path", sa.Text),
    sa.Column("triggered_run_id", sa.String(250)),
    sa.Column("evaluated_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("window_end", "champion_version", name="uq_monitoring_window_champion"),
)


# --------------------------------------------------------------------------------------------
# evidence of one window
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signal:
    """One signal's verdict for one window: value vs threshold and a sentence saying why.

    `start`..`end` are the batch dates behind the signal (the performance signal looks at an older,
    matured period than the drift signals); k-of-n counts only breaches whose periods do not overlap.
    """

    name: str
    status: Status
    value: float | None = None
    threshold: float | None = None
    reason: str = ""
    start: dt.date | None = None
    end: dt.date | None = None

    @property
    def breach(self) -> bool:
        return self.status == "breach"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "value": _finite_or_none(self.value),
            "threshold": _finite_or_none(self.threshold),
            "reason": self.reason,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Signal:
        return cls(
            d["name"],
            d["status"],
            d.get("value"),
            d.get("threshold"),
            d.get("reason", ""),
            dt.date.fromisoformat(d["start"]) if d.get("start") else None,
            dt.date.fromisoformat(d["end"]) if d.get("end") else None,
        )


@dataclass(frozen=True)
class WindowEvidence:
    """Everything measured on one window, with a verdict per signal (see module docstring)."""

    window_start: dt.date
    window_end: dt.date
    champion_version: str
    scored_by_versions: tuple[str, ...]
    rows: int
    matured_rows: int
    positives: int
    signals: dict[str, Signal]
    drift_share: float | None = None
    features: tuple[drift.FeatureDrift, ...] = ()
    prediction: drift.FeatureDrift | None = None
    performance: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)
    report_path: str | None = None
    reference_note: str = ""  # which reference rows the drift was measured against (see select_reference)

    @property
    def scored_by_version(self) -> str | None:
        """The model version that scored every row of the window; None if none or several did."""
        return self.scored_by_versions[0] if len(self.scored_by_versions) == 1 else None

    @property
    def breached(self) -> list[str]:
        return [name for name in SIGNALS if name in self.signals and self.signals[name].breach]

    def signal(self, name: str) -> Signal:
        return self.signals.get(name) or Signal(name, "unavailable", reason="not evaluated")

    def period(self, name: str) -> tuple[dt.date, dt.date]:
        """The batch dates behind signal `name` (the window's own when the signal does not say)."""
        s = self.signal(name)
        return (s.start or self.window_start, s.end or self.window_end)

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "champion_version": self.champion_version,
            "scored_by_versions": list(self.scored_by_versions),
            "rows": self.rows,
            "matured_rows": self.matured_rows,
            "positives": self.positives,
            "signals": {k: v.to_dict() for k, v in self.signals.items()},
            "drift_share": _finite_or_none(self.drift_share),
            "features": [f.to_dict() for f in self.features],
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "performance": {k: _finite_or_none(v) for k, v in self.performance.items()},
            "champion_metrics": {k: _finite_or_none(v) for k, v in self.champion_metrics.items()},
            "report_path": self.report_path,
            "reference_note": self.reference_note,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WindowEvidence:
        return cls(
            window_start=dt.date.fromisoformat(d["window_start"]),
            window_end=dt.date.fromisoformat(d["window_end"]),
            champion_version=str(d["champion_version"]),
            scored_by_versions=tuple(d.get("scored_by_versions") or ()),
            rows=int(d["rows"]),
            matured_rows=int(d.get("matured_rows", 0)),
            positives=int(d.get("positives", 0)),
            signals={k: Signal.from_dict(v) for k, v in d.get("signals", {}).items()},
            drift_share=d.get("drift_share"),
            features=tuple(drift.FeatureDrift.from_dict(f) for f in d.get("features", [])),
            prediction=drift.FeatureDrift.from_dict(d["prediction"]) if d.get("prediction") else None,
            performance={k: _nan_if_none(v) for k, v in (d.get("performance") or {}).items()},
            champion_metrics={k: _nan_if_none(v) for k, v in (d.get("champion_metrics") or {}).items()},
            report_path=d.get("report_path"),
            reference_note=d.get("reference_note") or "",
        )


@dataclass(frozen=True)
class PastTrigger:
    """An earlier drift-monitor trigger (any champion) and what its retrain came to.

    `outcome`: `promoted` / `rejected` (the registry audit row of the triggered train_model run) or
    `pending` (no audit row yet: still running, or it skipped). Feeds the storm cap and the backoff.
    """

    window_end: dt.date
    outcome: Literal["promoted", "rejected", "pending"] = "pending"


@dataclass(frozen=True)
class Decision:
    """Whether to retrain now: a short `reason` code, the `evidence` behind it and a sentence."""

    trigger: bool
    reason: str
    evidence: dict[str, Any]
    why: str

    def conf(self) -> dict[str, Any]:
        """The `conf` for the triggered train_model run (reason + evidence, JSON-ready)."""
        return {"reason": f"drift_monitor:{self.reason}", "why": self.why, "evidence": self.evidence}


# --------------------------------------------------------------------------------------------
# the policy
# --------------------------------------------------------------------------------------------


def _as_date(value: dt.date | dt.datetime | str | None) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        return value.date()
    return value


def _ineligible_because(w: WindowEvidence, champion: str, since: dt.date | None) -> str | None:
    if w.champion_version != champion:
        return f"evaluated against champion v{w.champion_version}, not the current v{champion}"
    if w.scored_by_version != champion:
        by = ", ".join(f"v{v}" for v in w.scored_by_versions) or "no model"
        return f"scored by {by}, not only by the current champion v{champion}"
    if since is not None and w.window_end <= since:
        return f"ends on or before the last promotion/retrain ({since.isoformat()})"
    return None


def _window_brief(w: WindowEvidence, name: str) -> dict[str, Any]:
    s = w.signal(name)
    return {
        "window_start": w.window_start.isoformat(),
        "window_end": w.window_end.isoformat(),
        **{k: v for k, v in s.to_dict().items() if k != "name"},
    }


def _independent(windows: list[WindowEvidence], name: str, n: int | None) -> list[WindowEvidence]:
    """Up to `n` windows, newest first, whose `name` periods do not overlap (the newest always kept).

    Daily runs over a 3-day performance window see each day three times; a one-day blip must count
    once, so k-of-n looks only at windows with disjoint periods.
    """
    out: list[WindowEvidence] = []
    for w in reversed(windows):
        if n is not None and len(out) >= n:
            break
        start, end = w.period(name)
        if out and end >= out[-1].period(name)[0]:
            continue
        out.append(w)
    return out


def _onset(eligible: list[WindowEvidence], name: str, n: int) -> WindowEvidence | None:
    """The first breaching window of the current episode of `name`.

    Walk back from the latest window; the episode ends at `n` consecutive non-breaching windows
    (with disjoint periods), i.e. where k-of-n would have stopped counting.
    """
    first: WindowEvidence | None = None
    gap = 0
    for w in _independent(eligible, name, None):
        if w.signal(name).breach:
            first, gap = w, 0
        else:
            gap += 1
            if gap >= n:
                break
    if first is None:
        return None
    # an overlapping earlier window may breach too (skipped above): take the earliest breaching one
    # whose period overlaps the episode's first window
    f_start = first.period(name)[0]
    for w in eligible:
        if w.signal(name).breach and w.period(name)[1] >= f_start and w.period(name)[0] < f_start:
            return w
    return first


def _storm_guards(
    cfg: Config, now_window_end: dt.date, past_triggers: list[PastTrigger]
) -> tuple[str | None, str, dict[str, Any]]:
    """(reason code or None, sentence, evidence) of the storm cap and the backoff after rejections."""
    st = cfg.drift.storm
    before = sorted((t for t in past_triggers if t.window_end < now_window_end), key=lambda t: t.window_end)
    period_start = now_window_end - dt.timedelta(days=st.period_days - 1)
    in_period = [t for t in before if t.window_end >= period_start]
    rejected_run = 0
    for t in reversed(before):
        if t.outcome != "rejected":
            break
        rejected_run += 1
    ev: dict[str, Any] = {
        "max_triggers": st.max_triggers,
        "period_days": st.period_days,
        "triggers_in_period": [t.window_end.isoformat() for t in in_period],
        "consecutive_rejected_retrains": rejected_run,
        "backoff_days": st.backoff_days,
        "backoff_factor": st.backoff_factor,
    }
    if rejected_run:
        last = before[-1].window_end
        wait = int(math.ceil(st.backoff_days * st.backoff_factor ** (rejected_run - 1)))
        ev["backoff_until"] = (last + dt.timedelta(days=wait)).isoformat()
        waited = (now_window_end - last).days
        if waited < wait:
            return (
                "backoff",
                f"the last {rejected_run} triggered retrain(s) were rejected by the gates (the latest after "
                f"the window ending {last}); backing off {wait} days, {waited} passed",
                ev,
            )
    if len(in_period) >= st.max_triggers:
        return (
            "storm_cap",
            f"{len(in_period)} retrains were already triggered in the last {st.period_days} days "
            f"({', '.join(ev['triggers_in_period'])}; max {st.max_triggers})",
            ev,
        )
    return None, "", ev


def decide(
    cfg: Config,
    history: list[WindowEvidence],
    *,
    now_window_end: dt.date,
    last_promotion_or_retrain_at: dt.date | dt.datetime | str | None,
    retrain_in_flight: bool,
    current_champion_version: str | None,
    past_triggers: list[PastTrigger] | None = None,
) -> Decision:
    """Trigger a retrain or not, from the windows in `history` up to `now_window_end` (see module doc).

    `history` must contain the window ending `now_window_end` (the one just evaluated); windows
    ending later (a backfill re-deciding an old window) are ignored, so a re-run decides the same.
    `past_triggers`: earlier triggers of the monitor (any champion) with their retrain outcome, for
    the storm cap and the backoff; those ending on or after `now_window_end` are ignored likewise.
    """
    k, n = cfg.drift.k_of_n.k, cfg.drift.k_of_n.n
    cooldown = cfg.drift.cooldown_days
    since = _as_date(last_promotion_or_retrain_at)
    upto = sorted((w for w in history if w.window_end <= now_window_end), key=lambda w: w.window_end)
    evidence: dict[str, Any] = {
        "window_end": now_window_end.isoformat(),
        "champion_version": current_champion_version,
        "k_of_n": {"k": k, "n": n, "counting": "windows with non-overlapping periods"},
        "guards": {
            "retrain_in_flight": bool(retrain_in_flight),
            "last_promotion_or_retrain_at": since.isoformat() if since else None,
            "cooldown_days": cooldown,
        },
    }
    if current_champion_version is None:
        return Decision(False, "no_champion", evidence, "There is no champion to monitor yet.")
    latest = [w for w in upto if w.window_end == now_window_end]
    if not latest:
        raise MonitoringError(
            f"history has no window ending {now_window_end}: append the window just evaluated "
            "(see assemble_history) before deciding"
        )
    # several rows for the same window end (e.g. one per champion): prefer the current champion's
    current = [w for w in latest if w.champion_version == current_champion_version]
    now = (current or latest)[-1]

    eligible: list[WindowEvidence] = []
    ignored: list[dict[str, str]] = []
    seen: set[dt.date] = set()
    for w in reversed(upto):  # newest first so a duplicate window end keeps its newest row
        why_not = _ineligible_because(w, current_champion_version, since)
        if why_not is None and w.window_end not in seen:
            seen.add(w.window_end)
            eligible.append(w)
        elif why_not is not None:
            ignored.append({"window_end": w.window_end.isoformat(), "why": why_not})
    eligible.reverse()
    # the onset looks further back than k-of-n: across earlier (rejected) retrains of this champion
    champion_windows: list[WindowEvidence] = []
    seen_c: set[dt.date] = set()
    for w in reversed(upto):
        if _ineligible_because(w, current_champion_version, None) is None and w.window_end not in seen_c:
            seen_c.add(w.window_end)
            champion_windows.append(w)
    champion_windows.reverse()
    evidence["ignored_windows"] = ignored[: 2 * n]
    evidence["latest"] = {name: now.signal(name).to_dict() for name in SIGNALS}
    if now.reference_note:
        evidence["reference"] = now.reference_note
    expected = [f.to_dict() for f in now.features if f.drifted and not f.counted]
    if expected:  # drift the config expects (warm-up, seasonal): shown, not counted, with the reason
        evidence["expected_drift"] = expected

    signals_ev: dict[str, Any] = {}
    fired: list[str] = []
    now_eligible = bool(eligible) and eligible[-1] is now
    considered_max = 0
    for name in SIGNALS:
        recent = list(reversed(_independent(eligible, name, n)))
        considered_max = max(considered_max, len(recent))
        breaches = [w for w in recent if w.signal(name).breach]
        is_fired = now_eligible and now.signal(name).breach and len(breaches) >= k
        signals_ev[name] = {
            "breaches": len(breaches),
            "considered": len(recent),
            "fired": is_fired,
            "windows": [_window_brief(w, name) for w in recent],
        }
        if is_fired:
            fired.append(name)
            onset = _onset(champion_windows, name, n) or now
            o_start, o_end = onset.period(name)
            signals_ev[name]["onset_window_start"] = o_start.isoformat()
            signals_ev[name]["onset_window_end"] = o_end.isoformat()
    evidence["signals"] = signals_ev
    if fired:
        # the drift-aware retrain anchors its training window here: the earliest onset of any fired signal
        first = min(fired, key=lambda s: signals_ev[s]["onset_window_start"])
        evidence["breaching_signals"] = fired
        evidence["breaching_signal"] = first
        evidence["onset_window_start"] = signals_ev[first]["onset_window_start"]
        evidence["onset_window_end"] = signals_ev[first]["onset_window_end"]

    days_since = (now_window_end - since).days if since else None
    in_cooldown = days_since is not None and days_since < cooldown
    evidence["guards"]["days_since_last_promotion_or_retrain"] = days_since
    evidence["guards"]["cooldown_active"] = in_cooldown
    storm_reason, storm_why, storm_ev = _storm_guards(cfg, now_window_end, past_triggers or [])
    evidence["guards"]["storm"] = storm_ev

    if not now_eligible:
        why_not = _ineligible_because(now, current_champion_version, since) or "duplicate window"
        return Decision(
            False,
            "window_not_eligible",
            evidence,
            f"Window ending {now_window_end} does not count: {why_not}.",
        )
    if not fired:
        latest_breaches = now.breached
        if not latest_breaches:
            statuses = ", ".join(f"{s}={now.signal(s).status}" for s in SIGNALS)
            note = ""
            if expected:
                note = " Expected drift not counted: " + "; ".join(
                    f"{f['feature']} ({f['expected']})" for f in expected
                ) + "."
            return Decision(
                False, "no_breach", evidence, f"No signal breached in the latest window ({statuses}).{note}"
            )
        parts = [
            f"{s} breached in {signals_ev[s]['breaches']} of the last {signals_ev[s]['considered']} "
            "non-overlapping windows"
            for s in latest_breaches
        ]
        return Decision(
            False,
            "k_of_n_not_met",
            evidence,
            f"{'; '.join(parts)}; a retrain needs {k} of {n} on the same signal, including the latest.",
        )
    summary = _fired_summary(fired, signals_ev, now)
    if retrain_in_flight:
        return Decision(False, "retrain_in_flight", evidence, f"{summary}, but a retrain is already running.")
    if in_cooldown:
        return Decision(
            False,
            "cooldown",
            evidence,
            f"{summary}, but the last promotion/retrain was {days_since} day(s) ago "
            f"(cooldown {cooldown} days).",
        )
    if storm_reason:
        return Decision(False, storm_reason, evidence, f"{summary}, but {storm_why}.")
    return Decision(
        True,
        "+".join(fired),
        evidence,
        f"{summary}; onset window starts {evidence['onset_window_start']}: retrain.",
    )


def _fired_summary(fired: list[str], signals_ev: dict[str, Any], now: WindowEvidence) -> str:
    parts = []
    for name in fired:
        ev = signals_ev[name]
        ends = [w["window_end"] for w in ev["windows"] if w["status"] == "breach"]
        parts.append(
            f"{name} breached in {ev['breaches']} of {ev['considered']} windows ({', '.join(ends)}): "
            f"{now.signal(name).reason}"
        )
    return "; ".join(parts)


def assemble_history(past: list[WindowEvidence], latest: WindowEvidence) -> list[WindowEvidence]:
    """`past` (e.g. from `history`) with `latest` replacing any earlier row of the same window."""
    kept = [
        w
        for w in past
        if not (w.window_end == latest.window_end and w.champion_version == latest.champion_version)
    ]
    return sorted([*kept, latest], key=lambda w: w.window_end)


# --------------------------------------------------------------------------------------------
# evaluating a window
# --------------------------------------------------------------------------------------------


def _finite_or_none(x: Any) -> Any:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return x
    return f if math.isfinite(f) else None


def _nan_if_none(x: Any) -> float:
    return math.nan if x is None else float(x)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


REFERENCE_DATE_COLUMN = "batch_date"


def select_reference(
    reference: pd.DataFrame, window_start: dt.date, window_end: dt.date, cfg: Config
) -> tuple[pd.DataFrame, str]:
    """The reference rows a window is compared with, and a sentence saying which (for the decision).

    Weekly seasonality (busier, pricier weekends) is not drift: with `drift.reference: day_of_week`
    a window is compared with the reference days of the same weekdays, in proportion (a window of
    Saturday+Sunday against reference Saturdays and Sundays). `whole_weeks` keeps the last whole
    weeks of the reference; `as_given` (or a reference without a `batch_date` column) uses it as is.
    A reference lacking one of the window's weekdays falls back to its whole weeks, and says so.
    """
    mode = cfg.drift.reference
    if mode == "as_given" or REFERENCE_DATE_COLUMN not in reference.columns or reference.empty:
        return reference, f"reference: {len(reference)} rows as given"
    dates = pd.to_datetime(reference[REFERENCE_DATE_COLUMN]).dt.date
    days = sorted(set(dates))
    span = f"{days[0]}..{days[-1]}"
    last = days[-1]
    keep_from = last - dt.timedelta(days=cfg.drift.reference_days - 1)
    whole = (days[-1] - days[0]).days + 1 >= 7
    recent = reference[dates >= keep_from] if whole else reference
    if not whole:
        note = f"reference {span} covers less than a week: all {len(reference)} rows (weekly seasonality not matched)"
        return reference, note
    if mode == "whole_weeks":
        return recent, f"reference: the last whole weeks {keep_from}..{last}, {len(recent)} rows"
    window_days = [window_start + dt.timedelta(days=i) for i in range((window_end - window_start).days + 1)]
    weekdays = {d.weekday() for d in window_days}
    recent_wd = pd.to_datetime(recent[REFERENCE_DATE_COLUMN]).dt.weekday
    available = set(recent_wd)
    if not weekdays <= available:
        missing = sorted(weekdays - available)
        return recent, (
            f"reference lacks weekday(s) {missing} of the window: the whole weeks {keep_from}..{last}, "
            f"{len(recent)} rows"
        )
    if len(weekdays) == 7:
        return recent, f"reference: the whole weeks {keep_from}..{last}, {len(recent)} rows"
    # same weekdays, weighted like the window (a 3-day window Fri-Sun: each weekday once)
    matched = recent[recent_wd.isin(weekdays).to_numpy()]
    names = ",".join(dt.date(2024, 1, 1 + wd).strftime("%a") for wd in sorted(weekdays))
    return matched, f"reference: {names} of {keep_from}..{last} (day-of-week matched), {len(matched)} rows"


def evaluate_window(
    paths: StatePaths,
    cfg: Config,
    window_start: dt.date,
    window_end: dt.date,
    reference_features: pd.DataFrame,
    reference_scores: Any,
    champion_holdout_metrics: dict[str, float],
    current: pd.DataFrame,
    labels: pd.DataFrame | None,
    *,
    champion_version: str,
    save_html: bool = True,
) -> WindowEvidence:
    """Measure one window: drift of `current` vs the champion's reference, and matured performance.

    `current`: the window's rows with the model features, `score` and `model_version` (what
    `load_current_window` returns). `labels`: `<id_column>, <target>, matured` - only rows with
    `matured` true count (an immature label is not a negative). `reference_scores` may be None
    (prediction drift then 'unavailable'); it need not be row-aligned with `reference_features`.
    The Evidently HTML report is written under `paths.reports / "drift"` when drift was computed.
    """
    if window_end < window_start:
        raise MonitoringError(f"window_end {window_end} is before window_start {window_start}")
    reference_features, reference_note = select_reference(reference_features, window_start, window_end, cfg)
    if reference_scores is None and "score" in reference_features.columns and len(reference_features):
        reference_scores = reference_features["score"].to_numpy(dtype="float64")  # row-aligned, same selection
    d = cfg.drift
    id_col, target = cfg.model.id_column, cfg.model.target
    for col in ("score", "model_version"):
        if col not in current.columns:
            raise MonitoringError(
                f"current window frame lacks column {col!r}; pass published predictions joined to "
                "features (load_current_window does)"
            )
    rows = len(current)
    versions = Counter(str(v) for v in current["model_version"].dropna())
    scored_by = tuple(sorted(versions))
    signals: dict[str, Signal] = {}

    # --- data drift and prediction drift ------------------------------------------------------
    drift_share: float | None = None
    features: tuple[drift.FeatureDrift, ...] = ()
    prediction: drift.FeatureDrift | None = None
    report_file: str | None = None
    if rows < d.min_rows or len(reference_features) < d.min_rows:
        why = (
            f"{rows} rows in the window" if rows < d.min_rows else f"{len(reference_features)} reference rows"
        ) + f" < min_rows {d.min_rows}"
        signals["data_drift"] = Signal("data_drift", "insufficient", reason=why)
        signals["prediction_drift"] = Signal("prediction_drift", "insufficient", reason=why)
    else:
        result = drift.data_drift(
            reference_features,
            current,
            cfg,
            reference_scores=reference_scores,
            current_scores=current["score"] if reference_scores is not None else None,
            tags=[f"champion:v{champion_version}", f"window:{window_start}..{window_end}"],
            render=save_html,  # no HTML wanted: the same scores without Evidently's plots
        )
        drift_share = result.drifted_share
        features = tuple(result.features)
        drifted = result.drifted_features
        counted = sum(f.counted for f in result.features)
        msg = (
            f"{len(drifted)} of {counted} counted features drifted"
            + (f" ({', '.join(drifted)})" if drifted else "")
            + f"; share {drift_share:.3f} vs threshold {d.drift_share_threshold}"
        )
        if result.expected_drifts:
            msg += "; expected drift, not counted: " + "; ".join(
                f"{f.feature} {_fmt(f.score)} ({f.expected})" for f in result.expected_drifts
            )
        critical = result.critical_drifts
        if critical:
            msg += f"; critical feature(s) drifted: {', '.join(critical)}"
        signals["data_drift"] = Signal(
            "data_drift",
            "breach" if drift_share >= d.drift_share_threshold or critical else "ok",
            drift_share,
            d.drift_share_threshold,
            msg,
        )
        prediction = result.prediction
        if prediction is None:
            signals["prediction_drift"] = Signal(
                "prediction_drift", "unavailable", reason="no reference scores for the champion"
            )
        else:
            signals["prediction_drift"] = Signal(
                "prediction_drift",
                "breach" if prediction.drifted else "ok",
                prediction.score,
                prediction.threshold,
                f"normed Wasserstein distance of scores {_fmt(prediction.score)} vs threshold "
                f"{prediction.threshold}",
            )
        if save_html and result.snapshot is not None:
            report_file = str(
                drift.save_report(
                    result.snapshot, drift.report_path(paths, champion_version, window_start, window_end)
                )
            )

    # --- matured performance ------------------------------------------------------------------
    performance: dict[str, float] = {}
    matured_rows = positives = 0
    primary = cfg.model.primary_metric
    champion_value = _nan_if_none(champion_holdout_metrics.get(primary))
    if labels is None:
        signals["performance"] = Signal("performance", "unavailable", reason="no labels passed")
    else:
        for col in (id_col, target, "matured"):
            if col not in labels.columns:
                raise MonitoringError(
                    f"labels frame lacks column {col!r} (expected {id_col}, {target}, matured)"
                )
        if id_col not in current.columns:
            raise MonitoringError(f"current window frame lacks {id_col!r}, needed to join the labels")
        ok_labels = labels.loc[
            labels["matured"].fillna(False).astype(bool) & labels[target].notna(), [id_col, target]
        ]
        ok_labels = ok_labels.drop_duplicates(subset=[id_col], keep="last")
        joined = current[[id_col, "score"]].merge(ok_labels, on=id_col, how="inner")
        matured_rows = len(joined)
        y = joined[target].astype(int).to_numpy()
        positives = int(y.sum())
        negatives = matured_rows - positives
        floor = champion_value * (1 - d.performance_tolerance)
        if math.isnan(champion_value):
            signals["performance"] = Signal(
                "performance", "unavailable", reason=f"champion holdout {primary} not given"
            )
        elif positives < d.min_positives or negatives == 0:
            signals["performance"] = Signal(
                "performance",
                "insufficient",
                threshold=floor,
                reason=f"{positives} matured positives (min_positives {d.min_positives}), {negatives} negatives",
            )
        else:
            performance = drift.matured_performance(y, joined["score"].to_numpy(dtype="float64"), cfg)
            upper = performance[f"{primary}_upper"]
            breach = upper < floor
            signals["performance"] = Signal(
                "performance",
                "breach" if breach else "ok",
                performance[primary],
                floor,
                f"matured {primary} {_fmt(performance[primary])} (upper bound {_fmt(upper)} at "
                f"{d.performance_confidence:.0%}) {'<' if breach else '>='} floor {_fmt(floor)} = champion "
                f"holdout {_fmt(champion_value)} x (1 - {d.performance_tolerance}); "
                f"{positives} positives in {matured_rows} matured rows",
            )
    champion_metrics = {str(k): _nan_if_none(v) for k, v in champion_holdout_metrics.items()}
    signals = {
        k: dataclasses.replace(v, start=v.start or window_start, end=v.end or window_end)
        for k, v in signals.items()
    }
    return WindowEvidence(
        window_start=window_start,
        window_end=window_end,
        champion_version=str(champion_version),
        scored_by_versions=scored_by,
        rows=rows,
        matured_rows=matured_rows,
        positives=positives,
        signals=signals,
        drift_share=drift_share,
        features=features,
        prediction=prediction,
        performance=performance,
        champion_metrics=champion_metrics,
        report_path=report_file,
        reference_note=reference_note,
    )


# --------------------------------------------------------------------------------------------
# warehouse read
# --------------------------------------------------------------------------------------------


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def load_current_window(paths: StatePaths, cfg: Config, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Champion predictions of batch dates [start, end] joined to their published features.

    Read-only connection to the warehouse. Columns: the id column, `batch_date`, the model
    features, `score`, `model_version`. Empty frame when nothing was scored in the window.
    """
    from training.storage.warehouse import connect, is_missing_relation

    id_col = cfg.model.id_column
    feats = ", ".join(f"f.{_quote(c)}" for c in cfg.model.features if c != id_col)
    sql = f"""
        select p.transaction_id as {_quote(id_col)}, p.batch_date, {feats},
               p.score, cast(p.model_version as varchar) as model_version
        from published.predictions p
        join published.transaction_features f
          on f.{_quote(id_col)} = p.transaction_id and f.batch_date = p.batch_date
        where p.alias = 'champion' and p.model_name = ? and p.batch_date between ? and ?
        order by p.batch_date, p.transaction_id
    """
    with connect(paths, read_only=True) as con:
        for table in ("predictions", "transaction_features"):
            if not con.table_exists("published", table):
                raise MonitoringDataError(
                    f"warehouse has no published.{table}: run data_pipeline and batch_inference first"
                )
        try:
            return con.frame(sql, [cfg.model.name, start, end])
        except Exception as exc:
            if is_missing_relation(exc):  # a contract column is missing
                raise MonitoringDataError(
                    f"published tables do not match the contract (docs/contracts.md): {exc}"
                ) from None
            raise


# --------------------------------------------------------------------------------------------
# the monitoring table
# --------------------------------------------------------------------------------------------


def _json(obj: Any) -> str:
    return json.dumps(_jsonable(obj), sort_keys=True, allow_nan=False)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _finite_or_none(obj)
    if isinstance(obj, (dt.date, dt.datetime)):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _table(paths: StatePaths) -> sa.Engine:
    eng = engine(paths)
    ensure_tables(eng, monitoring_decisions)
    return eng


def record_decision(
    paths: StatePaths,
    window: WindowEvidence,
    decision: Decision,
    report_path: str | Path | None = None,
    triggered_run_id: str | None = None,
) -> None:
    """Store the window's evidence and decision; re-recording the same window replaces its row."""
    perf = {
        "window": window.performance,
        "champion_holdout": window.champion_metrics,
        "floor": window.signal("performance").threshold,
    }
    row = {
        "window_start": window.window_start,
        "window_end": window.window_end,
        "champion_version": window.champion_version,
        "scored_by_version": ",".join(window.scored_by_versions) or None,
        "row_count": window.rows,
        "matured_rows": window.matured_rows,
        "positives": window.positives,
        "drift_share": _finite_or_none(window.drift_share),
        "feature_scores": _json([f.to_dict() for f in window.features]),
        "prediction_drift": _finite_or_none(window.prediction.score) if window.prediction else None,
        "performance": _json(perf),
        "data_drift_status": window.signal("data_drift").status,
        "prediction_drift_status": window.signal("prediction_drift").status,
        "performance_status": window.signal("performance").status,
        "breach_data_drift": window.signal("data_drift").breach,
        "breach_prediction_drift": window.signal("prediction_drift").breach,
        "breach_performance": window.signal("performance").breach,
        "decision": "trigger" if decision.trigger else "no_trigger",
        "reason": decision.reason,
        "why": decision.why,
        "evidence": _json(decision.evidence),
        "window_evidence": _json(window.to_dict()),
        "report_path": str(report_path) if report_path is not None else window.report_path,
        "triggered_run_id": triggered_run_id,
        "evaluated_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
    }
    t = monitoring_decisions
    with _table(paths).begin() as con:
        con.execute(
            t.delete().where(
                t.c.window_end == window.window_end, t.c.champion_version == window.champion_version
            )
        )
        con.execute(t.insert().values(**row))


def attach_triggered_run(paths: StatePaths, window_end: dt.date, champion_version: str, run_id: str) -> None:
    """Record the train_model run a trigger started (known only after the trigger task ran)."""
    t = monitoring_decisions
    with _table(paths).begin() as con:
        res = con.execute(
            t.update()
            .where(t.c.window_end == window_end, t.c.champion_version == str(champion_version))
            .values(triggered_run_id=run_id)
        )
        if res.rowcount == 0:
            raise MonitoringError(
                f"no monitoring row for window ending {window_end}, champion v{champion_version}"
            )


def history(paths: StatePaths, champion_version: str | None = None, limit: int = 30) -> list[WindowEvidence]:
    """The `limit` most recent recorded windows (optionally of one champion), oldest first."""
    t = monitoring_decisions
    q = sa.select(t.c.window_evidence).order_by(t.c.window_end.desc(), t.c.id.desc()).limit(limit)
    if champion_version is not None:
        q = q.where(t.c.champion_version == str(champion_version))
    with _table(paths).connect() as con:
        rows: list[str] = list(con.execute(q).scalars().all())
    return [WindowEvidence.from_dict(json.loads(r)) for r in reversed(rows)]


_JSON_COLUMNS = ("feature_scores", "performance", "evidence")


def latest_decisions(paths: StatePaths, limit: int = 20) -> list[dict[str, Any]]:
    """The `limit` most recent monitoring rows, newest first, JSON columns parsed (for the UI)."""
    t = monitoring_decisions
    cols = [c for c in t.c if c.name != "window_evidence"]
    q = sa.select(*cols).order_by(t.c.window_end.desc(), t.c.id.desc()).limit(limit)
    with _table(paths).connect() as con:
        rows: list[dict[str, Any]] = [dict(r._mapping) for r in con.execute(q)]
    for r in rows:
        for col in _JSON_COLUMNS:
            r[col] = json.loads(r[col]) if r[col] else None
    return rows
