"""The retrain trigger policy: from a history of monitored windows, whether to retrain now.

Each window (measured by `training.monitoring.windows`) carries three signals, each `breach`, `ok`,
`insufficient` (too few rows / matured positives: never a breach) or `unavailable` (an input is
missing: never a breach).

`decide` turns a history of windows into one decision. It is a pure function so every rule can be
tested without a warehouse. A retrain is triggered when, for some signal, the latest window
breaches and at least k of the last n eligible windows breach on that same signal - counting only
windows whose signal periods do not overlap, so one bad day seen by three overlapping 3-day windows
counts once. Eligible windows are those evaluated against the current champion, scored entirely by
it, and ending after the last promotion or retrain (evidence that already led to a retrain is not
reused). A trigger is blocked while a retrain is in flight, for `cooldown_days` after the last
promotion or retrain, after rejected retrains (`backoff`, growing with each rejection) and beyond
`storm.max_triggers` per `storm.period_days` (`storm_cap`); every block is a recorded decision. The
backoff and the cap are budgets *per signal*: a trigger counts only against the signals that fired it,
so retrains started (and rejected) on benign data or prediction drift never block a matured-performance
breach; a trigger whose signals are partly out of budget fires on the others.
Requiring the same signal k times keeps two unrelated one-off blips (drift one day, an unlucky
sample of positives the next) from adding up to a retrain. A trigger's evidence names the onset (first
breaching window of the episode) so the retrain can anchor its training window there.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from training.config import Config
from training.errors import ClosedloopError
from training.monitoring import drift

SIGNALS: tuple[str, ...] = ("data_drift", "prediction_drift", "performance")
#: the label feed's delay (training/monitoring/label_delay.py): recorded and alerted, never a trigger
LABEL_DELAY = "label_delay"
Status = Literal["breach", "ok", "insufficient", "unavailable", "excused"]


class MonitoringError(ClosedloopError, ValueError):
    """Monitoring inputs are inconsistent; the message says what to pass instead."""


def finite_or_none(x: Any) -> Any:
    """`x` as a float, None when it is not finite (JSON has no NaN); non-numbers pass through."""
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return x
    return f if math.isfinite(f) else None


def nan_if_none(x: Any) -> float:
    """The inverse of `finite_or_none` for metrics read back from JSON."""
    return math.nan if x is None else float(x)


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
            "value": finite_or_none(self.value),
            "threshold": finite_or_none(self.threshold),
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
    """Everything measured on one window, with a verdict per signal (see `training.monitoring.windows`)."""

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
    # the label maturity the performance window used, learned from the label feed (label_delay.py)
    label_maturity: dict[str, Any] = field(default_factory=dict)

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
            "drift_share": finite_or_none(self.drift_share),
            "features": [f.to_dict() for f in self.features],
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "performance": {k: finite_or_none(v) for k, v in self.performance.items()},
            "champion_metrics": {k: finite_or_none(v) for k, v in self.champion_metrics.items()},
            "report_path": self.report_path,
            "reference_note": self.reference_note,
            "label_maturity": self.label_maturity,
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
            performance={k: nan_if_none(v) for k, v in (d.get("performance") or {}).items()},
            champion_metrics={k: nan_if_none(v) for k, v in (d.get("champion_metrics") or {}).items()},
            report_path=d.get("report_path"),
            reference_note=d.get("reference_note") or "",
            label_maturity=d.get("label_maturity") or {},
        )


@dataclass(frozen=True)
class PastTrigger:
    """An earlier drift-monitor trigger (any champion) and what its retrain came to.

    `outcome`: `promoted` / `rejected` (the registry audit row of the triggered train_model run) or
    `pending` (no audit row yet: still running, or it skipped). Feeds the storm cap and the backoff.
    `signals`: the signals that fired it (its decision reason, e.g. `data_drift+performance`); the
    budgets are per signal, so it counts only against those. Empty (an older row that does not say)
    counts against every signal.
    """

    window_end: dt.date
    outcome: Literal["promoted", "rejected", "pending"] = "pending"
    signals: tuple[str, ...] = ()

    def counts_for(self, signal: str) -> bool:
        return not self.signals or signal in self.signals

    @classmethod
    def signals_of(cls, reason: str | None) -> tuple[str, ...]:
        """The signals named by a trigger decision's reason (`data_drift+performance`)."""
        return tuple(s for s in (reason or "").split("+") if s in SIGNALS)


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


def _apply_calendar(cfg: Config, w: WindowEvidence) -> tuple[WindowEvidence, list[dict[str, Any]]]:
    """`w` with breaches inside a declared calendar event marked `excused`, and what was excused.

    Holidays and campaigns move volumes and amounts every year; `drift.calendar` declares them with
    a reason, and their breaches are reported, not counted (k-of-n, onset, trigger).
    """
    excused: list[dict[str, Any]] = []
    signals = dict(w.signals)
    for name, sig in w.signals.items():
        if not sig.breach:
            continue
        start, end = w.period(name)
        for event in cfg.drift.calendar:
            if name in event.excuses and event.covers(start, end):
                signals[name] = dataclasses.replace(
                    sig, status="excused", reason=f"{sig.reason} - excused: {event.name} ({event.reason})"
                )
                excused.append({
                    "signal": name, "event": event.name, "reason": event.reason,
                    "event_start": event.start.isoformat(), "event_end": event.end.isoformat(),
                    "window_start": start.isoformat(), "window_end": end.isoformat(),
                })
                break
    return (dataclasses.replace(w, signals=signals) if excused else w), excused


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


def _storm_by_signal(
    cfg: Config, now_window_end: dt.date, past_triggers: list[PastTrigger]
) -> dict[str, tuple[str | None, str, dict[str, Any]]]:
    """The storm cap and backoff of each signal, counting only the triggers that signal fired.

    A matured-performance breach is the evidence that matters most; retrains started (and rejected)
    on benign data or prediction drift must not spend its budget, so every signal has its own.
    """
    return {
        name: _storm_guards(cfg, now_window_end, [t for t in past_triggers if t.counts_for(name)])
        for name in SIGNALS
    }


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
    excused_by_end: dict[dt.date, list[dict[str, Any]]] = {}
    if cfg.drift.calendar:
        marked = []
        for w in upto:
            w, excused = _apply_calendar(cfg, w)
            marked.append(w)
            if excused:
                excused_by_end[w.window_end] = excused
        upto = marked
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
    storm = _storm_by_signal(cfg, now_window_end, past_triggers or [])
    within_budget = [s for s in fired if storm[s][0] is None]
    blocked = [s for s in fired if storm[s][0] is not None]
    # the budget shown: the first fired signal within its budget, else the first blocked one
    shown = (within_budget or blocked or [SIGNALS[-1]])[0]
    storm_reason, storm_why, storm_ev = storm[shown] if not within_budget else (None, "", storm[shown][2])
    evidence["guards"]["storm"] = {
        **storm_ev,
        "budgets": "per signal",
        "signal": shown,
        "by_signal": {s: {"blocked": r, **ev} for s, (r, _, ev) in storm.items()},
    }
    if blocked and within_budget:
        evidence["guards"]["storm"]["blocked_signals"] = {s: storm[s][1] for s in blocked}

    if not now_eligible:
        why_not = _ineligible_because(now, current_champion_version, since) or "duplicate window"
        return Decision(
            False,
            "window_not_eligible",
            evidence,
            f"Window ending {now_window_end} does not count: {why_not}.",
        )
    if now.label_maturity:
        evidence["label_maturity"] = {k: v for k, v in now.label_maturity.items() if k != "daily"}
    delay = now.signals.get(LABEL_DELAY)
    delay_changed = delay is not None and delay.breach
    if delay is not None and delay.breach:  # its own signal: an alert for the label feed, never a retrain
        evidence["label_delay_change"] = {**delay.to_dict(), "alert": True,
                                          "daily": now.label_maturity.get("daily", [])}
    excused_now = excused_by_end.get(now_window_end, [])
    if excused_now:
        evidence["calendar"] = excused_now
    if not fired:
        latest_breaches = now.breached
        if not latest_breaches and excused_now:
            parts = [f"{e['signal']} breached inside {e['event']} ({e['reason']})" for e in excused_now]
            return Decision(
                False,
                "calendar_event",
                evidence,
                f"{'; '.join(parts)}: a declared calendar event (drift.calendar), expected drift - "
                "reported, no trigger spent.",
            )
        if not latest_breaches and delay_changed:
            return Decision(
                False,
                "label_delay_change",
                evidence,
                f"The label feed's delay changed: {delay.reason if delay else ''}. An alert for the label "
                "feed, never a retrain; matured performance waits for the learned maturity.",
            )
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
        return Decision(False, storm_reason, evidence, f"{summary}, but {storm_why} (budget of {shown}).")
    note = ""
    if blocked:
        note = " (" + "; ".join(f"{s} is out of budget: {storm[s][1]}" for s in blocked) + ")"
    return Decision(
        True,
        "+".join(within_budget),
        evidence,
        f"{summary}; onset window starts {evidence['onset_window_start']}: retrain on "
        f"{'+'.join(within_budget)}{note}.",
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
