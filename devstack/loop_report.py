"""What the loop did, day by day: the table and chart the demo prints, and whether the loop closed.

Reads only what the stages recorded (data versions, quarantine, predictions, monitoring decisions,
the registry audit log and model-version tags), so it shows the loop's own evidence, not a replay.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from training.config import Config
from training.model import registry, tracking
from training.monitoring import decision_log
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


def day_table(paths: StatePaths, cfg: Config) -> pd.DataFrame:
    """One row per batch date: data version, rows, GX verdict, drift, matured performance, decision, champion."""
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

    days: set[dt.date] = set()
    for frame, col in ((versions, "batch_date"), (quarantined, "batch_date"), (scored, "batch_date"),
                       (published, "batch_date")):
        if not frame.empty:
            days |= {pd.Timestamp(d).date() for d in frame[col]}
    rows = []
    for day in sorted(days):
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
            row["matured_pr_auc"] = window.get(cfg.model.primary_metric)
            row["signals"] = ",".join(
                name for name in ("data_drift", "prediction_drift", "performance") if latest[f"breach_{name}"]
            ) or "-"
            row["decision"] = f"{latest['decision']} ({latest['reason']})"
        else:
            row.update(drift_share=None, matured_pr_auc=None, signals="-", decision="-")
        rows.append(row)
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no day has been processed)"
    shown = table.copy()
    for col in ("drift_share", "matured_pr_auc"):
        shown[col] = shown[col].map(lambda x: "-" if x is None or pd.isna(x) else f"{x:.3f}")
    return shown.to_string(index=False)


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


def plot(table: pd.DataFrame, moves: list[dict[str, Any]], cfg: Config, out: Path,
         healing: HealingVerdict | None = None, stopped: str | None = None) -> Path:
    """Drift share and matured PR-AUC over days, with the days a new champion started scoring marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(11, 4.8))
    x = pd.to_datetime(table["day"]) if not table.empty else pd.Series(dtype="datetime64[ns]")
    if not table.empty:
        drift = pd.to_numeric(table["drift_share"], errors="coerce")
        ax.bar(x, drift, width=0.6, color="#9ecae1", label="drifted feature share")
        ax.axhline(cfg.drift.drift_share_threshold, color="#3182bd", ls=":", lw=1, label="drift share threshold")
        perf = pd.to_numeric(table["matured_pr_auc"], errors="coerce")
        ax.plot(x, perf, "o-", color="#e6550d", label="champion PR-AUC on the window whose labels matured by that day")
        changes = table["champion"].ne(table["champion"].shift()) & table["champion"].ne("-")
        for day, version in zip(x[changes], table.loc[changes, "champion"], strict=False):
            ax.axvline(day, color="#31a354", lw=1.5)
            ax.annotate(f"{version} serving", (day, 1.0), rotation=90, va="top", ha="right", fontsize=8,
                        color="#31a354")
        for day, decision in zip(x, table["decision"], strict=False):
            if str(decision).startswith("trigger"):
                ax.annotate("retrain", (day, 0.02), color="#de2d26", ha="center", fontsize=8)
    if healing is not None and healing.floor is not None:
        ax.axhline(healing.floor, color="#e6550d", ls="--", lw=1, label=f"{cfg.model.primary_metric} floor (gates.floors)")
    if healing is not None and healing.settled and healing.judged_on:
        mark = pd.Timestamp(healing.judged_on)
        ax.annotate("recovered" if healing.recovered else "not recovered", (mark, healing.matured_metric or 0),
                    xytext=(0, 12), textcoords="offset points", ha="center", fontsize=9, fontweight="bold",
                    color="#31a354" if healing.recovered else "#de2d26")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share / PR-AUC")
    ax.set_title(f"closedloop: {cfg.model.name} - drift and delayed-label performance by day")
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_json(table: pd.DataFrame, moves: list[dict[str, Any]], verdict: LoopVerdict, out: Path,
               healing: HealingVerdict | None = None) -> Path:
    out.write_text(json.dumps({
        "closed": verdict.closed, "why": verdict.why,
        "healing": None if healing is None else {
            "settled": healing.settled, "recovered": healing.recovered, "why": healing.why,
            "window_end": healing.window_end, "matured_metric": healing.matured_metric, "floor": healing.floor,
            "judged_on": healing.judged_on,
        },
        "days": json.loads(table.to_json(orient="records")), "alias_moves": moves,
    }, indent=2, default=str))
    return out
