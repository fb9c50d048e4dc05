"""The loop on one picture: is the model still good, did the inputs shift, and what did the loop do about it.

Drawn from `loop_history.day_table` (one row per simulated day) for `make demo`'s
`reports/demo_loop.png` and the model-health page alike. Two panels share the day axis:

* top - the champion's primary metric on matured labels, with the champion floor (`gates.floors`)
  and the monitor's own retrain floor; the days a version started serving, the triggers, the deferred
  retrain and the healing verdict are marked on it;
* bottom - the share of monitored features that drifted, with its threshold (`drift.drift_share_threshold`).

The scenario's onset is shaded on both; a run that stopped before the loop had its say says so in
the headline. Legends sit outside the axes so they never cover a label. No Airflow import.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from training.config import Config
from training.monitoring.loop_history import HealingVerdict, LoopVerdict

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GOOD, BAD, WAIT, DRIFT, SHIFT, NONE = "#2ca02c", "#d62728", "#ff7f0e", "#6baed6", "#fde0dd", "#f0f0f0"
GREEN_STAR = GOOD


def _day(x: Any) -> dt.date:
    return pd.Timestamp(x).date()


def _num(x: Any) -> float | None:
    v = pd.to_numeric(x, errors="coerce")
    return None if pd.isna(v) else float(v)


def scenario_onsets(cfg: Config) -> list[tuple[dt.date, str]]:
    """(first day, name) of each change a simulated source was told to make, from its section's
    `known_events()` hook (none for a source that is not simulated)."""
    return cfg.simulator.known_events() if cfg.simulator is not None else []


def served_from(table: pd.DataFrame) -> list[tuple[dt.date, str]]:
    """(first day, "vN") each time the version scoring as @champion changed."""
    out: list[tuple[dt.date, str]] = []
    current = None
    for day, version in zip(table["day"], table["champion"], strict=True):
        if version not in (None, "-") and version != current:
            out.append((_day(day), str(version)))
            current = version
    return out


def _promotion_label(version: str, moves: list[dict[str, Any]]) -> str:
    """'v2 serves (drift retrain)': why that version became champion, from the audit log."""
    for m in moves:
        if f"v{m.get('to_version')}" == version:
            action = str(m.get("action"))
            if action == "first_promote":
                return f"{version} serves (first champion)"
            if action == "rollback":
                return f"{version} serves (rollback)"
            if str(m.get("trigger_reason") or "").startswith("drift_monitor"):
                return f"{version} serves (drift retrain)"
            return f"{version} serves ({action.replace('_', ' ')})"
    return f"{version} serves"


def headline(verdict: LoopVerdict | None, healing: HealingVerdict | None, stopped: str | None, metric: str) -> tuple[str, str]:
    """The one-line story and its colour: healed, not healed, still open, or stopped early."""
    if stopped:
        state = "loop closed, healing not judged" if verdict and verdict.closed else "loop NOT closed"
        return f"Run stopped early ({state}): {stopped}", BAD
    if verdict is not None and not verdict.closed:
        return f"Loop not closed yet: {verdict.why}", WAIT
    if healing is not None and healing.settled:
        value, floor = healing.matured_metric or 0.0, healing.floor or 0.0
        if healing.recovered:
            return (f"Loop closed and healed: the new champion's live {metric} {value:.2f} >= floor {floor:.2f}",
                    GOOD)
        return f"Loop closed but NOT healed: the new champion's live {metric} {value:.2f} < floor {floor:.2f}", BAD
    if verdict is not None and verdict.closed:
        return "Loop closed: a drift-triggered retrain was promoted (its live window has not matured yet)", GOOD
    return "What the loop saw and did, day by day", "black"


def draw(table: pd.DataFrame, moves: list[dict[str, Any]], cfg: Config, *,
         verdict: LoopVerdict | None = None, healing: HealingVerdict | None = None,
         stopped: str | None = None) -> Figure:
    """The chart of `table` (loop_history.day_table) as a matplotlib Figure (Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import DateFormatter, DayLocator
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    metric = cfg.model.primary_metric
    label = metric.replace("_", "-").upper()
    fig = Figure(figsize=(14, 9), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # a renderer of its own: no pyplot, no global backend switch (the API server draws too)
    perf_ax, loop_ax, drift_ax = fig.subplots(3, 1, sharex=True, height_ratios=(3, 1.1, 2))
    text, colour = headline(verdict, healing, stopped, label)
    fig.suptitle(text, color=colour, fontsize=13, fontweight="bold")

    if table.empty:
        perf_ax.text(0.5, 0.5, "no day has been processed yet", ha="center", va="center", transform=perf_ax.transAxes)
        return fig

    days = [pd.Timestamp(d) for d in table["day"]]
    one = pd.Timedelta(days=1)
    lo, hi = days[0] - one / 2, days[-1] + one / 2
    onsets = [(pd.Timestamp(d), kind) for d, kind in scenario_onsets(cfg) if pd.Timestamp(d) <= days[-1]]
    served = served_from(table)
    for ax in (perf_ax, loop_ax, drift_ax):
        ax.set_xlim(lo, hi)
        for onset, _kind in onsets:
            ax.axvspan(onset - one / 2, hi, color=SHIFT, zorder=0)
        for day, _version in served:
            ax.axvline(pd.Timestamp(day) - one / 2, color=GOOD, lw=1.5, zorder=1)
        if stopped:
            ax.axvline(hi, color=BAD, lw=4)

    # -- top: is the model still good? ----------------------------------------------------------
    perf_ax.grid(axis="y", color="#dddddd", lw=0.6)
    if served and pd.Timestamp(served[0][0]) > days[0]:
        perf_ax.axvspan(lo, pd.Timestamp(served[0][0]) - one / 2, color=NONE, zorder=0)
        perf_ax.text(lo + one / 4, 0.5, "no champion yet:\nnothing scored", fontsize=9, color="#777777", va="center")
    values = pd.to_numeric(table["matured_pr_auc"], errors="coerce")
    perf_ax.plot(days, values, "o-", color="#1f77b4", lw=2, ms=5, zorder=3)
    if "perf_floor" in table:
        perf_ax.step(days, pd.to_numeric(table["perf_floor"], errors="coerce"), where="mid", color=WAIT, lw=1.2,
                     ls=":", zorder=2)
    floor = cfg.gates.floors.get(metric)
    if floor is not None:
        perf_ax.axhline(floor, color=BAD, ls="--", lw=1.3, zorder=2)
    perf_ax.set_ylim(0, 1.05)
    perf_ax.set_ylabel(f"champion {label}\non matured labels")
    perf_ax.set_title(f"Is the model still good?  {label} of the serving champion, measured once the day's labels "
                      "matured (plotted on the day the monitor measured it)", loc="left", fontsize=10)
    for onset, kind in onsets:
        name = f"{kind.replace('_', ' ')} (scenario) from {onset:%m-%d}"
        right = onset > lo + (hi - lo) * 0.6  # near the right edge: the label runs leftwards, into the axes
        perf_ax.text(onset - one / 2, 1.0, f"{name} \u2192 " if right else f" {name}", va="top",
                     ha="right" if right else "left", fontsize=9, color="#a50f15", fontweight="bold")
    if healing is not None and healing.settled and healing.judged_on and healing.matured_metric is not None:
        x, y, ok = pd.Timestamp(healing.judged_on), healing.matured_metric, healing.recovered
        perf_ax.plot([x], [y], "*", ms=18, color=GOOD if ok else BAD, zorder=5)
        perf_ax.annotate(("healed" if ok else "not healed") + f": {y:.2f} {'>=' if ok else '<'} floor",
                         (x, y), xytext=(0, 16), textcoords="offset points",
                         ha="right" if x > lo + (hi - lo) * 0.6 else "center", fontsize=9,
                         fontweight="bold", color=GOOD if ok else BAD)
    if stopped:
        perf_ax.text(hi, 0.5, "run stopped ", color=BAD, ha="right", va="center", fontsize=10, fontweight="bold",
                     rotation=90)
    perf_ax.legend(handles=[
        Line2D([], [], color="#1f77b4", marker="o", lw=2, label=f"champion {label} (matured labels)"),
        Line2D([], [], color=BAD, ls="--", label=f"{label} floor (gates.floors{'' if floor is None else f' = {floor:.2f}'})"),
        Line2D([], [], color=WAIT, ls=":", label="monitor's retrain floor\n(holdout x (1 - tolerance))"),
        Line2D([], [], color=GREEN_STAR, marker="*", ls="", ms=12, label="new champion's first matured\nlive window"),
        Patch(color=SHIFT, label="scenario: the world changed"),
        Patch(color=NONE, label="no champion yet"),
    ], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)

    # -- middle: what the loop did --------------------------------------------------------------
    loop_ax.set_ylim(0, 2)
    loop_ax.set_yticks([1.5, 0.5], ["champion", "drift monitor"], fontsize=9)
    loop_ax.tick_params(axis="y", length=0)
    loop_ax.set_title("What the loop did: which version served, when the monitor triggered a retrain", loc="left",
                      fontsize=10)
    ends = [pd.Timestamp(d) - one / 2 for d, _ in served[1:]] + [hi]
    for (day, version), end, shade in zip(served, ends, ("#c6dbef", "#c7e9c0") * len(served), strict=False):
        start = pd.Timestamp(day) - one / 2
        loop_ax.broken_barh([(start, end - start)], (1.1, 0.8), color=shade, zorder=2)
        # a short last span (a champion promoted near the end): the label ends at the right edge
        # instead of running under the legend
        short_tail = end == hi and (end - start) < 4 * one
        loop_ax.text(end - one / 5 if short_tail else start + one / 5, 1.5, _promotion_label(version, moves),
                     va="center", ha="right" if short_tail else "left", fontsize=9, fontweight="bold",
                     color="#08306b" if shade == "#c6dbef" else "#00441b", zorder=3, clip_on=True)
    deferred_days = [d for d, v in zip(days, table.get("deferred", ["-"] * len(days)), strict=True) if v not in (None, "-")]
    for day in deferred_days:
        later = [pd.Timestamp(d) - one / 2 for d, _ in served if pd.Timestamp(d) > day]
        end = later[0] if later else hi
        loop_ax.broken_barh([(day, end - day)], (0.15, 0.7), color=WAIT, alpha=0.35, zorder=2)
    for day, decision in zip(days, table["decision"], strict=True):
        if decision in (None, "-"):
            continue
        trig = str(decision).startswith("trigger")
        loop_ax.plot([day], [0.5], "v" if trig else "o", color=BAD if trig else "#999999", ms=11 if trig else 4,
                     zorder=4)
        if trig:
            reason = str(decision).split("(", 1)[-1].rstrip(")")
            note = f"retrain triggered ({reason})"
            if day in deferred_days:
                deferred = table.loc[[d == day for d in days], "deferred"].iloc[0]
                note += f",\ndeferred until labels matured ({deferred})"
            right_half = day > lo + (hi - lo) * 0.6
            loop_ax.text(day + (-one / 3 if right_half else one / 3), 0.5, note, va="center",
                         ha="right" if right_half else "left", fontsize=8, color="#7f2704", zorder=5,
                         bbox={"fc": "white", "ec": WAIT, "alpha": 0.9, "pad": 2})
        if trig:
            drift_ax.axvline(day, color=BAD, lw=1, ls="--", zorder=1)
    loop_ax.legend(handles=[
        Line2D([], [], color=GOOD, lw=1.5, label="a new version starts serving"),
        Line2D([], [], color=BAD, marker="v", ls="", ms=9, label="retrain triggered"),
        Line2D([], [], color="#999999", marker="o", ls="", ms=4, label="monitored, no trigger"),
        Patch(color=WAIT, alpha=0.35, label="retrain deferred (waits for labels)"),
    ], loc="upper left", bbox_to_anchor=(1.01, 1.1), fontsize=8, frameon=False)

    # -- bottom: did the inputs shift? ----------------------------------------------------------
    drift_ax.grid(axis="y", color="#dddddd", lw=0.6)
    share = pd.to_numeric(table["drift_share"], errors="coerce")
    breach = table["signals"].astype(str).str.contains("data_drift")
    drift_ax.bar(days, share.fillna(0), width=0.7, color=[BAD if b else DRIFT for b in breach], zorder=3)
    measured = share.notna()
    drift_ax.plot([d for d, m in zip(days, measured, strict=True) if m], share[measured], "_", color="#08519c",
                  ms=10, mew=2, zorder=4)
    threshold = cfg.drift.drift_share_threshold
    drift_ax.axhline(threshold, color=BAD, ls="--", lw=1.3, zorder=2)
    top = max(threshold * 2, float(share.max()) * 1.2 if measured.any() else 0.0)
    drift_ax.set_ylim(-top * 0.03, top)  # a measured 0 stays visible above the axis line
    if measured.any() and float(share.max()) == 0.0 and "nearest_drift_ratio" in table:
        ratios = pd.to_numeric(table["nearest_drift_ratio"], errors="coerce")
        note = "No monitored feature drifted on any day shown"
        if ratios.notna().any():
            i = int(ratios.idxmax())
            note += (f"\n(closest: {table['nearest_drift'][i]} at {ratios[i]:.0%} of its threshold on "
                     f"{pd.Timestamp(table['day'][i]):%m-%d}): whatever changed, the inputs did not show it")
        drift_ax.text(0.01, 0.93, note,
                      transform=drift_ax.transAxes, va="top", fontsize=9, color="#08306b",
                      bbox={"fc": "white", "ec": DRIFT, "alpha": 0.9, "pad": 3}, zorder=6)
    drift_ax.set_ylabel("share of features\nthat drifted")
    drift_ax.set_title("Did the inputs shift?  share of monitored features whose drift test fired", loc="left",
                       fontsize=10)
    drift_ax.legend(handles=[
        Patch(color=DRIFT, label="drifted feature share"),
        Patch(color=BAD, label="data-drift breach"),
        Line2D([], [], color="#08519c", marker="_", ls="", mew=2, ms=10, label="measured (0 = no feature drifted)"),
        Line2D([], [], color=BAD, ls="--", label=f"drift share threshold ({threshold:.2f})"),
        Line2D([], [], color=BAD, ls="--", lw=1, label="retrain triggered"),
    ], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    drift_ax.xaxis.set_major_locator(DayLocator())
    drift_ax.xaxis.set_major_formatter(DateFormatter("%m-%d"))
    for tick in drift_ax.get_xticklabels():
        tick.set_rotation(60)
        tick.set_fontsize(8)
    drift_ax.set_xlabel(f"simulated day (batch date): all {len(days)} days delivered, days with nothing measured "
                        "left empty")
    return fig


def png(fig: Figure, out: Path | None = None) -> bytes:
    """The figure as PNG bytes (and written to `out` if given)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    data = buf.getvalue()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    return data
