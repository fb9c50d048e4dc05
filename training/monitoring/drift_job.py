"""One drift-monitor run: load the frames, measure the window, decide, record.

Glue between the stores (registry, frozen holdout, published predictions, the newest data version,
the monitoring table in `decision_log`) and the measuring (`windows`, `drift`) and deciding
(`retrain_trigger`) pieces of `training.monitoring`. Two windows, because labels are late:

Every window's signals, decision and Evidently HTML report are also logged to MLflow (experiment
`closedloop/<model>/monitoring`), beside the report kept in the state directory.

* the **drift window** — the last `drift.window_days` scored days — for data and prediction drift
  against the champion's frozen holdout (recent, out-of-sample, row-aligned with its scores);
* the **performance window** — the `drift.performance_window_days` days whose labels have matured
  (the maturity learned from the label feed's delays, `training.monitoring.label_delay`, at least
  `windows.label_maturity_days` before the drift window's end) — for PR-AUC / recall vs the
  champion's own holdout values.

Time is the data's time (batch dates), never the wall clock, so backfills and simulations decide
as the real days would.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from training.config import Config
from training.data import datasets
from training.model import registry
from training.model.evaluate import score_version
from training.monitoring import (
    change_point,
    decision_log,
    estimated_performance,
    label_delay,
    retrain_deferral,
    retrain_trigger,
    windows,
)
from training.monitoring.retrain_trigger import Decision, PastTrigger, Signal, WindowEvidence
from training.paths import StatePaths
from training.storage import versioning
from training.storage.warehouse import WarehouseMissing

DAY = dt.timedelta(days=1)


def _labels_for(paths: StatePaths, cfg: Config, ids: pd.Series, as_of: dt.date) -> pd.DataFrame:
    """Matured labels of `ids` from the newest data version on or before `as_of`.

    The id filter runs inside the Parquet scan, so only the window's rows are ever held in memory.
    """
    record = versioning.latest_data_version(paths, as_of)
    target, id_col = cfg.model.target, cfg.model.id_column
    wanted = sorted(set(ids.dropna()))
    frame = pd.read_parquet(
        versioning.open_version(paths, record.data_version), columns=[id_col, target],
        filters=[(id_col, "in", wanted)] if wanted else None,
    )
    frame = frame[frame[id_col].isin(set(wanted))]  # also when `ids` is empty (no filter above)
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
    for row in decision_log.latest_decisions(paths, limit=200):
        if row.get("decision") == "trigger":
            dates.append(dt.date.fromisoformat(str(row["window_end"])[:10]))
            break
    return max(dates) if dates else None


def log_to_mlflow(paths: StatePaths, cfg: Config, window: WindowEvidence, decision: Decision) -> str:
    """One MLflow run per evaluated window (experiment `closedloop/<model>/monitoring`): the signals as
    metrics, the decision as tags, the Evidently HTML report as an artifact. Re-evaluating a window
    adds a run; the monitoring table keeps one row per window."""
    import mlflow

    from training.model import tracking

    experiment_id = tracking.ensure_experiment(paths, cfg, "monitoring")  # also points MLflow there
    metrics = {"rows": float(window.rows), "matured_rows": float(window.matured_rows),
               "positives": float(window.positives)}
    if window.drift_share is not None:
        metrics["drift_share"] = float(window.drift_share)
    if window.prediction is not None:
        metrics["prediction_drift"] = float(window.prediction.score)
    for key, value in (window.performance or {}).items():
        if isinstance(value, int | float) and value == value:
            metrics[key if key.startswith("estimated_") else f"matured_{key}"] = float(value)
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


def estimate_window(
    cfg: Config, current: pd.DataFrame, holdout_metrics: dict[str, float], version: str,
    start: dt.date, end: dt.date,
) -> tuple[Signal, dict[str, float]]:
    """The early `estimated_performance` signal of the drift window (recorded, never counted by the trigger).

    Expected PR-AUC / precision / recall from the champion's calibrated scores
    (`training.monitoring.estimated_performance`), against the matured signal's floor: `breach` when
    even the upper end of the estimate's 90 % band is below it. Returns the signal and the figures
    as `estimated_<metric>` for the window's performance dict.
    """
    rows = current[current["model_version"].astype(str) == version] if not current.empty else current
    if len(rows) < cfg.drift.min_rows:
        return Signal("estimated_performance", "insufficient", reason=f"{len(rows)} rows scored by v{version}",
                      start=start, end=end), {}
    est = estimated_performance.estimate(rows["score"].to_numpy(dtype="float64"),
                                         threshold=cfg.model.decision_threshold, seed=cfg.training.seed)
    figures = {f"estimated_{k}": v for k, v in est.items()}
    champion = holdout_metrics.get("pr_auc")
    if champion is None or champion != champion:
        return Signal("estimated_performance", "unavailable", est["pr_auc"],
                      reason="champion holdout pr_auc not given", start=start, end=end), figures
    floor = float(champion) * (1 - cfg.drift.performance_tolerance)
    breach = est["pr_auc_high"] < floor
    return Signal(
        "estimated_performance", "breach" if breach else "ok", est["pr_auc"], floor,
        f"estimated pr_auc {est['pr_auc']:.3f} (90 % band {est['pr_auc_low']:.3f}..{est['pr_auc_high']:.3f}) from "
        f"calibrated scores {'<' if breach else '>='} floor {floor:.3f}; early signal, not counted",
        start=start, end=end,
    ), figures


def measure_interval(
    paths: StatePaths,
    cfg: Config,
    batch_date: dt.date,
    *,
    reference: pd.DataFrame,
    reference_scores: Any,
    holdout_metrics: dict[str, float],
    version: str,
    load_window: Callable[[dt.date, dt.date], pd.DataFrame],
    load_labels: Callable[[pd.Series, dt.date], pd.DataFrame],
    save_html: bool = True,
    load_label_delays: Callable[[dt.date, dt.date], pd.DataFrame] | None = None,
) -> WindowEvidence:
    """The evidence of the window ending `batch_date`: drift window + matured performance window.

    Stores are behind the two loaders (the DAG reads the warehouse, an example's in-memory
    replay under examples/ reads memory), so both run exactly this. `reference` may carry
    `batch_date` and `score` columns: the drift window is then compared with the matching weekdays
    of it (see `windows.select_reference`). `load_label_delays(first, last)`: the delays of the labels
    reported on those days (`label_delay.delays`); with `windows.label_maturity.learn` the performance
    window is placed by the maturity learned from them, else `windows.label_maturity_days` back.
    """
    d = cfg.drift
    id_col = cfg.model.id_column
    drift_start = batch_date - (d.window_days - 1) * DAY
    current = load_window(drift_start, batch_date)
    evidence = windows.evaluate_window(
        paths, cfg, drift_start, batch_date, reference, reference_scores, holdout_metrics, current, None,
        champion_version=version, save_html=save_html,
    )

    maturity = label_delay.learn(
        cfg,
        load_label_delays(label_delay.history_start(cfg, batch_date), batch_date)
        if load_label_delays is not None and cfg.windows.label_maturity.learn
        else label_delay.no_delays(),
        batch_date,
    )
    if cfg.windows.label_maturity.learn:
        evidence = dataclasses.replace(
            evidence,
            signals={**evidence.signals, label_delay.SIGNAL: maturity.signal(cfg)},
            label_maturity=maturity.to_dict(),
        )
    estimated_signal, estimated = estimate_window(cfg, current, holdout_metrics, version, drift_start, batch_date)
    evidence = dataclasses.replace(evidence, signals={**evidence.signals, "estimated_performance": estimated_signal})

    perf_end = batch_date - maturity.days * DAY
    perf_start = perf_end - (d.performance_window_days - 1) * DAY
    if maturity.rising:
        perf_signal = Signal("performance", "insufficient", reason=(
            f"label delay rising: learned maturity {maturity.days} days, {maturity.previous_days} "
            f"{cfg.windows.label_maturity.settle_days} days ago; the newest delays are not observable yet, so "
            f"matured performance waits until it holds"), start=perf_start, end=perf_end)
        return dataclasses.replace(evidence, signals={**evidence.signals, "performance": perf_signal})
    matured = load_window(perf_start, perf_end)
    if matured.empty:
        perf_signal = Signal("performance", "insufficient", reason=f"nothing scored in {perf_start}..{perf_end}",
                             start=perf_start, end=perf_end)
        return dataclasses.replace(evidence, signals={**evidence.signals, "performance": perf_signal},
                                   performance=estimated)
    scored_by = set(matured["model_version"].astype(str))
    labels = load_labels(matured[id_col], batch_date)
    perf_ev = windows.evaluate_window(
        paths, cfg, perf_start, perf_end, reference.iloc[:0], None, holdout_metrics, matured, labels,
        champion_version=version, save_html=False,
    )
    signal = perf_ev.signal("performance")
    if scored_by != {version}:
        signal = Signal("performance", "unavailable", reason=(
            f"matured window {perf_start}..{perf_end} was scored by v{', v'.join(sorted(scored_by))}, "
            f"not only by the current champion v{version}"), start=perf_start, end=perf_end)
    else:
        signal = dataclasses.replace(
            signal, reason=f"window {perf_start}..{perf_end} (maturity {maturity.days} days): {signal.reason}"
        )
    return dataclasses.replace(
        evidence,
        signals={**evidence.signals, "performance": signal},
        performance={**perf_ev.performance, **estimated},
        matured_rows=perf_ev.matured_rows,
        positives=perf_ev.positives,
    )


#: How far back a change point is searched (at most; never before the champion served).
ONSET_LOOKBACK_DAYS = 28


def locate_onset(
    cfg: Config,
    decision: Decision,
    window: WindowEvidence,
    *,
    reference: pd.DataFrame,
    serving_since: dt.date | None,
    load_window: Callable[[dt.date, dt.date], pd.DataFrame],
    load_labels: Callable[[pd.Series, dt.date], pd.DataFrame],
) -> Decision:
    """`decision` with its onset re-estimated by change-point detection on the fired signals' daily series.

    The window-based onset (start of the episode's first breaching window) is kept in the evidence
    as `onset_from_windows`; each fired signal's change point (day, bootstrap interval, p-value) goes
    to `onset_change_point`. The earliest *significant* change point becomes `onset_window_start`
    (what the drift-aware retrain anchors at) with `onset_interval`; without one the window-based
    onset stands and the evidence says so. Only days served by the current champion are searched.
    """
    if not decision.trigger or not decision.evidence.get("onset_window_start"):
        return decision
    ev = dict(decision.evidence)
    now = dt.date.fromisoformat(ev["window_end"])
    start = now - (ONSET_LOOKBACK_DAYS - 1) * DAY
    if serving_since is not None:
        start = max(start, serving_since)
    frame = load_window(start, now)
    if not frame.empty:
        frame = frame[frame["model_version"].astype(str) == window.champion_version]
    if frame.empty:
        return decision
    # the warehouse returns batch_date as datetime64: the daily series are keyed by calendar days
    frame = frame.assign(batch_date=pd.to_datetime(frame["batch_date"]).dt.date)
    id_col, target = cfg.model.id_column, cfg.model.target
    found: dict[str, change_point.ChangePoint] = {}
    for name in ev.get("breaching_signals") or []:
        if name == "performance":
            part = frame[frame["batch_date"] <= now - cfg.windows.label_maturity_days * DAY]
            series = change_point.performance_series(part, load_labels(part[id_col], now), id_col, target)
        elif name == "prediction_drift":
            series = change_point.score_series(frame, reference)
        else:
            drifted = [f.feature for f in window.features if f.drifted and f.counted]
            series = change_point.feature_series(frame, reference, drifted)
        cp = change_point.detect(series, name=name, seed=cfg.training.seed)
        if cp is not None:
            found[name] = cp
    ev["onset_from_windows"] = ev["onset_window_start"]
    ev["onset_change_point"] = {k: v.to_dict() for k, v in found.items()}
    significant = [cp for cp in found.values() if cp.significant]
    if not significant:
        ev["onset_source"] = "first breaching window (no significant change point in the daily series)"
        return dataclasses.replace(decision, evidence=ev)
    best = min(significant, key=lambda cp: cp.onset)
    ev["onset_window_start"] = best.onset.isoformat()
    ev["onset_interval"] = [best.low.isoformat(), best.high.isoformat()]
    ev["onset_source"] = f"change point of the daily {best.series} series"
    why = (f"{decision.why} Onset by change point on the daily {best.series} series: {best.onset} "
           f"({change_point.INTERVAL_LEVEL:.0%} interval {best.low}..{best.high}, p={best.p_value:.3f}; "
           f"first breaching window started {ev['onset_from_windows']}).")
    return dataclasses.replace(decision, evidence=ev, why=why)


def champion_serving_since(paths: StatePaths, champion: dict[str, Any]) -> dt.date | None:
    """The first day the champion can have scored: the day after its training data ends."""
    data_version = champion["lineage"].get("data_version")
    if not data_version:
        return None
    try:
        return versioning.get_version(paths, data_version).batch_date + DAY
    except versioning.DataVersionNotFound:
        return None


def champion_reference(paths: StatePaths, cfg: Config, champion: dict[str, Any]) -> pd.DataFrame:
    """The drift reference: the last `drift.reference_days` of the champion's training data, scored by it.

    Whole weeks (a frozen holdout of a few days covers a few weekdays only, so weekends looked like
    drift against a weekday holdout); `batch_date` kept for the day-of-week match. A champion from a
    drift-aware retrain (its `onset` is known) is compared with its post-onset days only: the days
    before the onset are the old world it was retrained to leave, and measuring against them would
    report the same shift again and waste a second retrain. Falls back to the frozen holdout when the
    champion's data version is unknown.
    """
    id_col = cfg.model.id_column
    version = str(champion["version"])
    data_version = champion["lineage"].get("data_version")
    frame: pd.DataFrame | None = None
    if data_version and cfg.drift.reference != "as_given":
        try:  # only the reference days are read (filter pushed into the Parquet scan)
            _, last = datasets.batch_date_range(paths, data_version)
            since = last - (cfg.drift.reference_days - 1) * DAY
            frame = datasets.load_training_set(paths, data_version, cfg.model, since=since)
        except (FileNotFoundError, versioning.DataVersionNotFound, datasets.DatasetError):
            frame = None
    if frame is None or frame.empty or datasets.BATCH_DATE not in frame.columns:
        frame = datasets.load_holdout(paths, champion["lineage"]["holdout_hash"], id_col)
    else:
        dates = pd.to_datetime(frame[datasets.BATCH_DATE]).dt.date
        first = max(dates) - (cfg.drift.reference_days - 1) * DAY
        onset = reference_onset(champion)
        if onset is not None and first < onset <= max(dates):
            first = onset  # re-anchored: the new world the champion was trained on
        frame = frame[(dates >= first).to_numpy()].reset_index(drop=True)
    scores = score_version(cfg.model.name, version, frame, repeats=1).scores
    return frame.assign(score=np.asarray(scores, dtype="float64"))


def reference_onset(champion: dict[str, Any]) -> dt.date | None:
    """The onset a drift-aware champion's training window was anchored at (registry tag `onset`)."""
    value = champion.get("onset")
    try:
        return dt.date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


def past_triggers(paths: StatePaths, cfg: Config, limit: int = 50) -> list[PastTrigger]:
    """Earlier triggers of the monitor (any champion) and their retrain's outcome from the audit log."""
    outcome_by_run: dict[str, str] = {}
    for row in reversed(registry.audit_log(paths, cfg.model.name, limit=200)):  # oldest first
        run = row.get("airflow_run_id")
        if run and row["action"] in (*registry.PROMOTING, "reject"):
            outcome_by_run[run] = "rejected" if row["action"] == "reject" else "promoted"
    out = []
    for row in decision_log.latest_decisions(paths, limit=limit):
        if row.get("decision") != "trigger":
            continue
        outcome = outcome_by_run.get(row.get("triggered_run_id") or "", "pending")
        out.append(PastTrigger(
            dt.date.fromisoformat(str(row["window_end"])[:10]),
            outcome,  # type: ignore[arg-type]
            PastTrigger.signals_of(row.get("reason")),  # budgets are per signal
        ))
    return sorted(out, key=lambda t: t.window_end)


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
    d = cfg.drift
    drift_start = batch_date - (d.window_days - 1) * DAY
    reference = champion_reference(paths, cfg, champion)

    def load_window(start: dt.date, end: dt.date) -> pd.DataFrame:
        return windows.load_current_window(paths, cfg, start, end)

    def load_labels(ids: pd.Series, as_of: dt.date) -> pd.DataFrame:
        return _labels_for(paths, cfg, ids, as_of)

    window = measure_interval(
        paths, cfg, batch_date,
        reference=reference,
        reference_scores=None,
        holdout_metrics=champion["holdout_metrics"],
        version=version,
        load_window=load_window,
        load_labels=load_labels,
        load_label_delays=lambda first, last: label_delay.load_delays(paths, cfg, first, last),
    )

    past = decision_log.history(paths, champion_version=version, limit=max(d.k_of_n.n * 3, 10))
    # a drift retrain deferred until enough post-onset labels mature is a retrain in flight too:
    # triggering again would only merge into it (and count against the storm cap)
    retrain_in_flight = retrain_in_flight or retrain_deferral.pending(paths) is not None
    decision = retrain_trigger.decide(
        cfg,
        retrain_trigger.assemble_history(past, window),
        now_window_end=batch_date,
        last_promotion_or_retrain_at=_last_retrain_at(paths, champion),
        retrain_in_flight=retrain_in_flight,
        current_champion_version=version,
        past_triggers=past_triggers(paths, cfg),
    )
    decision = locate_onset(cfg, decision, window, reference=reference,
                            serving_since=champion_serving_since(paths, champion),
                            load_window=load_window, load_labels=load_labels)
    decision_log.record_decision(paths, window, decision, report_path=window.report_path)
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


def monitor_days(
    paths: StatePaths, cfg: Config, days: Sequence[dt.date], *, retrain_in_flight: Callable[[], bool],
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Decide the windows ending on `days`, oldest first; the last decision is the run's.

    It stops at the first trigger: one retrain per run, later windows are re-decided by the next
    run. `retrain_in_flight` is asked before each window, since a retrain may start meanwhile.
    """
    result: dict[str, Any] = {}
    for day in days:
        result = monitor_interval(paths, cfg, day, retrain_in_flight=retrain_in_flight())
        log(f"{day}: {result['decision']}: {result['why']}")
        if result.get("trigger"):
            break
    return result


def windows_ready(paths: StatePaths, cfg: Config, days: Sequence[dt.date]) -> tuple[bool, str]:
    """Can the windows ending on `days` be judged yet, and why (not)?

    Each day must be scored by the champion and a data version covering it published (so its matured
    labels are). With no champion nothing is scored, so there is nothing to wait for.
    """
    if registry.current_champion(paths, cfg) is None:
        return True, "no champion yet: nothing is scored, nothing to wait for"
    for day in days:
        try:
            scored = not windows.load_current_window(paths, cfg, day, day).empty
            published = versioning.latest_data_version(paths, day).batch_date == day
        except (windows.MonitoringDataError, versioning.DataVersionNotFound, WarehouseMissing) as exc:
            return False, f"waiting for {day}: {exc}"
        if not (scored and published):
            return False, f"waiting for {day}: scored={scored}, labels published={published}"
    return True, f"scored and labels published: {', '.join(d.isoformat() for d in days)}"
