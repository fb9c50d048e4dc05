"""One drift-monitor run: load the frames, measure the window, decide, record.

Glue between the stores (registry, frozen holdout, published predictions, the newest data version)
and the pure pieces in `training.drift` / `training.monitoring`. Two windows, because labels are late:

Every window's signals, decision and Evidently HTML report are also logged to MLflow (experiment
`closedloop/<model>/monitoring`), beside the report kept in the state directory.

* the **drift window** — the last `drift.window_days` scored days — for data and prediction drift
  against the champion's frozen holdout (recent, out-of-sample, row-aligned with its scores);
* the **performance window** — the `drift.performance_window_days` days whose labels have matured
  (`windows.label_maturity_days` before the drift window's end) — for PR-AUC / recall vs the
  champion's own holdout values.

Time is the data's time (batch dates), never the wall clock, so backfills and simulations decide
as the real days would.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pandas as pd

from training import datasets, monitoring, registry, versioning
from training.config import Config
from training.evaluate import score_version
from training.monitoring import Signal, WindowEvidence
from training.paths import StatePaths

DAY = dt.timedelta(days=1)


def _labels_for(paths: StatePaths, cfg: Config, ids: pd.Series, as_of: dt.date) -> pd.DataFrame:
    """Matured labels of `ids` from the newest data version on or before `as_of`."""
    record = versioning.latest_data_version(paths, as_of)
    target, id_col = cfg.model.target, cfg.model.id_column
    frame = pd.read_parquet(versioning.open_version(paths, record.data_version), columns=[id_col, target])
    frame = frame[frame[id_col].isin(set(ids))]
    frame["matured"] = True  # the published training set holds matured labels only
    return frame


def _last_retrain_at(paths: StatePaths, champion: dict[str, Any]) -> dt.date | None:
    """The later of: the batch date of the champion's training data, the last window that triggered."""
    dates: list[dt.date] = []
    data_version = champion["lineage"].get("data_version")
    if data_version:
        try:
            dates.append(versioning.get_version(paths, data_version).batch_date)
        except versioning.DataVersionNotFound:
            pass
    for row in monitoring.latest_decisions(paths, limit=200):
        if row.get("decision") == "trigger":
            dates.append(dt.date.fromisoformat(str(row["window_end"])[:10]))
            break
    return max(dates) if dates else None


def log_to_mlflow(paths: StatePaths, cfg: Config, window: WindowEvidence, decision: monitoring.Decision) -> str:
    """One MLflow run per evaluated window (experiment `closedloop/<model>/monitoring`): the signals as
    metrics, the decision as tags, the Evidently HTML report as an artifact. Re-evaluating a window
    adds a run; the monitoring table keeps one row per window."""
    import mlflow

    from training import tracking

    experiment_id = tracking.ensure_experiment(paths, cfg, "monitoring")  # also points MLflow there
    metrics = {"rows": float(window.rows), "matured_rows": float(window.matured_rows),
               "positives": float(window.positives)}
    if window.drift_share is not None:
        metrics["drift_share"] = float(window.drift_share)
    if window.prediction is not None:
        metrics["prediction_drift"] = float(window.prediction.score)
    for key, value in (window.performance or {}).items():
        if isinstance(value, int | float) and value == value:
            metrics[f"matured_{key}"] = float(value)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"drift {window.window_end}") as run:
        mlflow.set_tags(tracking.portable({
            "window_start": window.window_start.isoformat(), "window_end": window.window_end.isoformat(),
            "champion_version": window.champion_version, "decision": "trigger" if decision.trigger else "no_trigger",
            "reason": decision.reason, "breached": ",".join(window.breached) or "-",
        }, paths))
        mlflow.log_metrics(metrics)
        mlflow.log_text(decision.why, "decision.txt")
        if window.report_path:
            mlflow.log_artifact(window.report_path, artifact_path="evidently")
    return run.info.run_id


def monitor_interval(
    paths: StatePaths, cfg: Config, batch_date: dt.date, *, retrain_in_flight: bool = False
) -> dict[str, Any]:
    """Evaluate the window ending `batch_date`, decide whether to retrain, record it; small dict back."""
    status = registry.model_status(paths, cfg)
    champion = status.get("champion")
    if champion is None:
        return {"window_end": batch_date.isoformat(), "decision": "no_champion", "trigger": False,
                "why": "no champion yet: nothing to monitor"}
    version = str(champion["version"])
    id_col = cfg.model.id_column
    holdout = datasets.load_holdout(paths, champion["lineage"]["holdout_hash"], id_col)
    reference_scores = score_version(cfg.model.name, version, holdout, repeats=1).scores
    holdout_metrics = champion["holdout_metrics"]

    d = cfg.drift
    drift_start = batch_date - (d.window_days - 1) * DAY
    current = monitoring.load_current_window(paths, cfg, drift_start, batch_date)
    evidence = monitoring.evaluate_window(
        paths, cfg, drift_start, batch_date, holdout, reference_scores, holdout_metrics, current, None,
        champion_version=version,
    )

    perf_end = batch_date - cfg.windows.label_maturity_days * DAY
    perf_start = perf_end - (d.performance_window_days - 1) * DAY
    matured = monitoring.load_current_window(paths, cfg, perf_start, perf_end)
    if matured.empty:
        perf_signal = Signal("performance", "insufficient", reason=f"nothing scored in {perf_start}..{perf_end}")
        perf = dataclasses.replace(evidence, signals={**evidence.signals, "performance": perf_signal})
    else:
        scored_by = set(matured["model_version"].astype(str))
        labels = _labels_for(paths, cfg, matured[id_col], batch_date)
        perf_ev = monitoring.evaluate_window(
            paths, cfg, perf_start, perf_end, holdout.iloc[:0], None, holdout_metrics, matured, labels,
            champion_version=version, save_html=False,
        )
        signal = perf_ev.signal("performance")
        if scored_by != {version}:
            signal = Signal("performance", "unavailable", reason=(
                f"matured window {perf_start}..{perf_end} was scored by v{', v'.join(sorted(scored_by))}, "
                f"not only by the current champion v{version}"))
        else:
            signal = dataclasses.replace(signal, reason=f"window {perf_start}..{perf_end}: {signal.reason}")
        perf = dataclasses.replace(
            evidence,
            signals={**evidence.signals, "performance": signal},
            performance=perf_ev.performance,
            matured_rows=perf_ev.matured_rows,
            positives=perf_ev.positives,
        )
    window: WindowEvidence = perf

    past = monitoring.history(paths, champion_version=version, limit=max(d.k_of_n.n * 3, 10))
    decision = monitoring.decide(
        cfg,
        monitoring.assemble_history(past, window),
        now_window_end=batch_date,
        last_promotion_or_retrain_at=_last_retrain_at(paths, champion),
        retrain_in_flight=retrain_in_flight,
        current_champion_version=version,
    )
    monitoring.record_decision(paths, window, decision, report_path=window.report_path)
    perf_signal = window.signal("performance")
    log_to_mlflow(paths, cfg, window, decision)
    return {
        "window_start": drift_start.isoformat(),
        "window_end": batch_date.isoformat(),
        "champion_version": version,
        "rows": window.rows,
        "drift_share": window.drift_share,
        "prediction_drift": window.prediction.score if window.prediction else None,
        "matured_pr_auc": window.performance.get(cfg.model.primary_metric) if window.performance else None,
        "performance_status": perf_signal.status,
        "breached": window.breached,
        "decision": "trigger" if decision.trigger else "no_trigger",
        "trigger": decision.trigger,
        "reason": decision.reason,
        "why": decision.why,
        "conf": decision.conf(),
        "report_path": window.report_path,
    }
