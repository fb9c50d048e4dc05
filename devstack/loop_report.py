"""What the loop did, day by day: the table, chart and JSON summary `make demo` prints and writes.

The reading (day table, alias moves, closed/healed verdicts) lives in `training.monitoring.loop_history`
and the chart in `training.monitoring.health_chart`, so the model-health page shows the same picture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from training.config import Config
from training.monitoring import health_chart
from training.monitoring.loop_history import (  # noqa: F401 - the demo's report API, kept in one place
    HealingVerdict,
    LoopVerdict,
    day_table,
    healing_verdict,
    loop_verdict,
    promotions,
)


def format_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no day has been processed)"
    shown = table.copy()
    for col in ("drift_share", "matured_pr_auc", "perf_floor"):
        shown[col] = shown[col].map(lambda x: "-" if x is None or pd.isna(x) else f"{x:.3f}")
    if "nearest_drift" in shown:  # the feature nearest its drift threshold, as % of that threshold
        shown["nearest_drift"] = [
            "-" if name is None or pd.isna(ratio) else f"{name} {ratio:.0%}"
            for name, ratio in zip(shown["nearest_drift"], shown.pop("nearest_drift_ratio"), strict=True)
        ]
    return shown.to_string(index=False)


def plot(table: pd.DataFrame, moves: list[dict[str, Any]], cfg: Config, out: Path,
         healing: HealingVerdict | None = None, stopped: str | None = None,
         verdict: LoopVerdict | None = None) -> Path:
    """reports/demo_loop.png: the same two-panel chart the model-health page shows (training.monitoring.health_chart)."""
    health_chart.png(health_chart.draw(table, moves, cfg, verdict=verdict, healing=healing, stopped=stopped), out)
    return out


def write_json(table: pd.DataFrame, moves: list[dict[str, Any]], verdict: LoopVerdict, out: Path,
               healing: HealingVerdict | None = None, stopped: str | None = None) -> Path:
    out.write_text(json.dumps({
        "closed": verdict.closed, "why": verdict.why, "stopped_early": stopped,
        "healing": None if healing is None else {
            "settled": healing.settled, "recovered": healing.recovered, "why": healing.why,
            "window_end": healing.window_end, "matured_metric": healing.matured_metric, "floor": healing.floor,
            "judged_on": healing.judged_on,
        },
        "days": json.loads(table.to_json(orient="records")), "alias_moves": moves,
    }, indent=2, default=str))
    return out
