"""The loop's own record, day by day: what the demo prints and the model-health page draws.

Reads only what the stages recorded (data versions, quarantine, predictions, monitoring decisions,
retrain deferrals, the registry audit log and model-version tags), so it shows the loop's evidence,
not a replay. `day_table` has one row per simulated day - days before the first score included, with
empty cells - so a chart of it shows every day. No Airflow import: the plugin and devstack both use it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa

from training.config import Config
from training.model import registry, tracking
from training.monitoring import decision_log, drift, retrain_deferral
from training.paths import StatePaths
from training.storage import ledger, warehouse


@dataclass(frozen=True)
class LoopVerdict:
    closed: bool
    why: str


@dataclass(frozen=True)
class HealingVerdict:
    """Did the loop heal on live data: did a window scored only by the new champion mature above the floor?

    `settled` is False while no such window has matured yet (the demo keeps delivering days).
    """

    settled: bool
    recovered: bool
    why: str
    window_end: str | None = None
    matured_metric: float | None = None
    floor: float | None = None
    judged_on: str | None = None  # the day the monitor measured that window (the chart's x)


def _warehouse_frame(paths: StatePaths, sql: str, table: tuple[str, str]) -> pd.DataFrame:
    if not warehouse.exists(paths):
        return pd.DataFrame()
    with warehouse.connect(paths, read_only=True) as con:
        if not con.table_exists(*table):
            return pd.DataFrame()
        return con.frame(sql)


def day_table(paths: StatePaths, cfg: Config, through: dt.date | None = None) -> pd.DataFrame:
    """One row per day, `cfg.start_date` (or the first recorded day) to `through` (or the
    last recorded day): data version, rows, GX verdict, champion, drift, matured performance, decision.

    Days with nothing recorded yet (before the first champion scores, say) are rows with empty cells,
    not left out. `perf_floor` is the monitor's own performance floor for that window (champion holdout
    x (1 - tolerance)); `deferred` says a triggered retrain was deferred on that day (waiting for labels).
    """
    eng = ledger.engine(paths)
    ledger.ensure_tables(eng, ledger.data_versions)
    with eng.connect() as con:
        versions = pd.read_sql(
            sa.select(ledger.data_versions.c.batch_date, ledger.data_versions.c.data_version,
                      ledger.data_versions.c.feature_rows, ledger.data_versions.c.gx_success), con
        )
    quarantined = _warehouse_frame(
        paths, "select batch_date, table_name, reason from quarantine.rejected_batches",
        ("quarantine", "rejected_batches"),
    )
    scored = _warehouse_frame(
        paths,
        "select batch_date, alias, min(model_version) as version, count(*) as n "
        "from published.predictions group by 1, 2",
        ("published", "predictions"),
    )
    decisions = pd.DataFrame(decision_log.latest_decisions(paths, limit=10_000))
    published = _warehouse_frame(
        paths, "select batch_date, count(*) as n from published.transaction_features group by 1",
        ("published", "transaction_features"),
    )

    deferrals = pd.DataFrame(retrain_deferral.deferrals(paths, limit=1000))

    days: set[dt.date] = set()
    for frame, col in ((versions, "batch_date"), (quarantined, "batch_date"), (scored, "batch_date"),
                       (published, "batch_date"), (decisions, "window_end")):
        if not frame.empty:
            days |= {pd.Timestamp(d).date() for d in frame[col]}
    if through is not None:
        days.add(through)
    if not days:
        return pd.DataFrame()
    first = min(min(days), cfg.start_date)
    last = max(days)
    rows = []
    for day in (first + dt.timedelta(days=i) for i in range((last - first).days + 1)):
        row: dict[str, Any] = {"day": day.isoformat()}
        v = versions[pd.to_datetime(versions["batch_date"]).dt.date == day] if not versions.empty else versions
        q = quarantined[pd.to_datetime(quarantined["batch_date"]).dt.date == day] if not quarantined.empty else quarantined
        pub = published[pd.to_datetime(published["batch_date"]).dt.date == day] if not published.empty else published
        if not len(v) and not versions.empty:  # same bytes as an earlier day (e.g. no matured label yet)
            earlier = versions[pd.to_datetime(versions["batch_date"]).dt.date <= day]
            v = earlier.sort_values("batch_date").tail(1)
        row["data_version"] = v["data_version"].iloc[-1][:8] if len(v) else "-"
        row["rows"] = int(pub["n"].iloc[0]) if len(pub) else 0
        row["gx"] = "quarantined" if len(q) and not len(pub) else ("pass" if len(pub) else "-")
        s = scored[(pd.to_datetime(scored["batch_date"]).dt.date == day) & (scored["alias"] == "champion")] \
            if not scored.empty else scored
        row["champion"] = f"v{s['version'].iloc[0]}" if len(s) else "-"
        sh = scored[(pd.to_datetime(scored["batch_date"]).dt.date == day) & (scored["alias"] == "challenger")] \
            if not scored.empty else scored
        row["shadow"] = f"v{sh['version'].iloc[0]}" if len(sh) else "-"
        d = decisions[pd.to_datetime(decisions["window_end"]).dt.date == day] if not decisions.empty else decisions
        if len(d):
            latest = d.iloc[0]
            perf = latest["performance"] or {}
            window = perf.get("window") or {}
            row["drift_share"] = latest["drift_share"]
            row["nearest_drift"], row["nearest_drift_ratio"] = nearest_to_drift(latest["feature_scores"])
            row["matured_pr_auc"] = window.get(cfg.model.primary_metric)
            row["signals"] = ",".join(
                name for name in ("data_drift", "prediction_drift", "performance") if latest[f"breach_{name}"]
            ) or "-"
            row["decision"] = f"{latest['decision']} ({latest['reason']})"
            row["perf_floor"] = perf.get("floor")
        else:
            row.update(drift_share=None, nearest_drift=None, nearest_drift_ratio=None, matured_pr_auc=None,
                       signals="-", decision="-", perf_floor=None)
        dd = deferrals[pd.to_datetime(deferrals["deferred_batch_date"]).dt.date == day] \
            if not deferrals.empty else deferrals
        row["deferred"] = (f"{int(dd['post_onset_days'].iloc[0])} of {int(dd['needed_days'].iloc[0])} "
                           "post-onset days matured") if len(dd) else "-"
        rows.append(row)
    return pd.DataFrame(rows)


def nearest_to_drift(feature_scores: list[dict[str, Any]] | None) -> tuple[str | None, float | None]:
    """The counted feature closest to its drift threshold, and how close (1.0 = at the threshold).

    The drifted share counts features past their thresholds only, so it is 0 on every day no feature
    crossed one; this says how near the nearest came (a p-value test is near as its p-value falls).
    """
    best: tuple[str | None, float | None] = (None, None)
    for f in (drift.FeatureDrift.from_dict(d) for d in feature_scores or []):
        if not f.counted or math.isnan(f.score) or f.threshold <= 0:
            continue
        ratio = f.score / f.threshold if f.higher_is_drift else (f.threshold / f.score if f.score > 0 else math.inf)
        if best[1] is None or ratio > best[1]:
            best = (f.feature, ratio)
    return best


def promotions(paths: StatePaths, cfg: Config) -> list[dict[str, Any]]:
    """Alias moves, oldest first, with the trigger reason recorded on each promoted version."""
    rows = [r for r in reversed(registry.audit_log(paths, cfg.model.name, limit=1000))
            if r["action"] in ("first_promote", "promote", "force_promote", "rollback")]
    if not rows:
        return rows
    mc = tracking.client(paths)
    for r in rows:
        try:
            mv = mc.get_model_version(cfg.model.name, r["to_version"])
            r["trigger_reason"] = mv.tags.get("trigger_reason")
            r["data_version"] = mv.tags.get("data_version")
            r["training_window_end"] = mv.tags.get("training_window_end")
        except Exception:  # a deleted version: keep the audit row as it is
            r["trigger_reason"] = None
    return rows


def loop_verdict(paths: StatePaths, cfg: Config) -> LoopVerdict:
    """Closed = a first champion, then a drift-triggered retrain promoted a new champion."""
    moves = promotions(paths, cfg)
    if not any(m["action"] == "first_promote" for m in moves):
        return LoopVerdict(False, "no first champion was promoted (see train_model runs and the gate reports)")
    triggers = [r for r in decision_log.latest_decisions(paths, limit=10_000) if r["decision"] == "trigger"]
    if not triggers:
        return LoopVerdict(False, "the drift monitor never triggered a retrain (see monitoring_decisions)")
    drift_promotions = [
        m for m in moves if m["action"] == "promote" and str(m.get("trigger_reason") or "").startswith("drift_monitor")
    ]
    if not drift_promotions:
        return LoopVerdict(
            False,
            f"the drift monitor triggered {len(triggers)} retrain(s) but no drift-triggered challenger was promoted",
        )
    m = drift_promotions[0]
    return LoopVerdict(
        True,
        f"v{m['from_version']} -> v{m['to_version']} promoted after a drift-triggered retrain "
        f"({m['trigger_reason']})",
    )


def healing_verdict(paths: StatePaths, cfg: Config) -> HealingVerdict:
    """After the loop closed: the first monitoring window scored only by the new champion whose labels
    matured, against the champion floor of the primary metric (`gates.floors`)."""
    closed = loop_verdict(paths, cfg)
    if not closed.closed:
        return HealingVerdict(False, False, f"the loop has not closed yet: {closed.why}")
    moves = [m for m in promotions(paths, cfg)
             if m["action"] == "promote" and str(m.get("trigger_reason") or "").startswith("drift_monitor")]
    new = str(moves[0]["to_version"])
    metric = cfg.model.primary_metric
    floor = cfg.gates.floors.get(metric)
    if floor is None:
        return HealingVerdict(True, False, f"gates.floors has no {metric} floor to judge recovery against")
    # a window's performance signal looks at an older, matured period: judge the first one whose
    # days were all scored by the new champion (the drift window itself says nothing about labels)
    for window in decision_log.history(paths, champion_version=new, limit=1000):
        perf = window.signal("performance")
        value = (window.performance or {}).get(metric)
        if value is None or perf.start is None or perf.end is None:
            continue  # labels not matured yet, or too few positives to measure
        if _champion_versions(paths, perf.start, perf.end) != {new}:
            continue  # some of those days were still scored by the old champion
        ok = float(value) >= float(floor)
        why = (f"v{new}'s first live window with matured labels ({perf.start}..{perf.end}, judged "
               f"{window.window_end}) scored {metric} {float(value):.3f} {'>=' if ok else '<'} the champion "
               f"floor {float(floor):.3f} (gates.floors)"
               + (f"; the monitor's own floor for v{new} is {float(perf.threshold):.3f}" if perf.threshold else ""))
        return HealingVerdict(True, ok, why, str(perf.end), float(value), float(floor), str(window.window_end))
    return HealingVerdict(False, False, f"no window scored only by v{new} has matured labels yet")


def _champion_versions(paths: StatePaths, start: dt.date, end: dt.date) -> set[str]:
    """The model versions whose @champion scores are in published.predictions for days start..end."""
    frame = _warehouse_frame(
        paths,
        "select distinct cast(model_version as varchar) as v from published.predictions "
        f"where alias = 'champion' and batch_date between '{start.isoformat()}' and '{end.isoformat()}'",
        ("published", "predictions"),
    )
    return set() if frame.empty else {str(v) for v in frame["v"]}
