"""The monitoring ledger table: every window's evidence and decision, trigger or not, and why.

Re-evaluating a window replaces its row; `history` rebuilds the windows `decide` needs from it and
`latest_decisions` feeds the model-health page and the loop report.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from training.monitoring.retrain_trigger import Decision, MonitoringError, WindowEvidence, finite_or_none
from training.paths import StatePaths
from training.storage.ledger import engine, ensure_tables, metadata

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
        return finite_or_none(obj)
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
        "drift_share": finite_or_none(window.drift_share),
        "feature_scores": _json([f.to_dict() for f in window.features]),
        "prediction_drift": finite_or_none(window.prediction.score) if window.prediction else None,
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
