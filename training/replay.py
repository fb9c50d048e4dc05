"""Replay days through the whole loop in-process, with the decisions the DAGs make.

Why: trying a config or a new source over a month of days should not need the Airflow stack, and
must not decide differently from it. Each day runs what the DAG tasks call, in their order:
`data_pipeline` (day order → land → front door → load raw → dbt build → feature gate → publish),
`train_model` on the features event (`retrain_policy.decide_run`, the deferral it plans, train,
evaluate), `batch_inference` (score the day) and `drift_monitor` (`drift_job.windows_ready` and
`monitor_days`, then the shadow judgement, `shadow.judge`, which may roll the champion back); a drift
trigger starts the retrain right away, as `TriggerDagRunOperator` would.
A refused day (day order or a gate) stops the replay: later days depend on it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from training.config import Config
from training.errors import ClosedloopError
from training.paths import StatePaths

DAY = dt.timedelta(days=1)


class DayRefused(ClosedloopError, RuntimeError):
    """A day the front door, the feature gate or the day order refused: the replay stops there."""


@dataclass
class DayReport:
    """What happened to one day (one line of `describe()`, the dict for JSON output)."""

    day: dt.date
    admitted: bool = False
    published: dict[str, Any] = field(default_factory=dict)
    training: list[dict[str, Any]] = field(default_factory=list)
    scored: dict[str, Any] = field(default_factory=dict)
    drift: dict[str, Any] = field(default_factory=dict)
    shadow: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"{self.day}: admitted, published {self.published.get('feature_rows', 0)} feature rows"]
        for t in self.training:
            parts.append(f"{t['step']}: {t['outcome']} ({t['why']})")
        parts.append(f"infer: {self.scored.get('status')} {self.scored.get('rows', 0)} rows")
        parts.append(f"drift: {self.drift.get('decision')} ({self.drift.get('why')})")
        for c in self.shadow.get("comparisons") or []:
            parts.append(f"shadow {c['kind']}: {c['verdict']}" + (f" -> {c['action']}" if c.get("action") else ""))
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "admitted": self.admitted, "published": self.published,
                "training": self.training, "scored": self.scored, "drift": self.drift, "shadow": self.shadow}


def run_id(day: dt.date, step: str) -> str:
    """A stable run id per day and step: re-running a replay reuses the idempotent results."""
    return f"replay__{day.isoformat()}__{step}"


def data_day(paths: StatePaths, cfg: Config, day: dt.date) -> dict[str, Any]:
    """`data_pipeline` for one day; raises `DayRefused` with the refusal message when a gate or the day order says no."""
    from training.data import admission, ingest, quality
    from training.data.dbt import run_dbt

    try:
        ingest.check_day_order(paths, cfg, day)
        landed = ingest.land(paths, cfg, day)
        admitted = admission.admit(paths, cfg, landed, run_name=run_id(day, "raw_gate"))
    except (ingest.DayOrderError, quality.DataQualityGateFailed) as exc:
        raise DayRefused(f"{day} refused: {exc}") from exc
    ingest.load_raw(paths, admitted.batch)
    ingest.readmit_held_labels(paths, cfg, day)
    # the incremental marts rebuild this day and the later ones, as the data_pipeline DAG passes them
    run_dbt(["build"], paths, cfg, rebuild_from=day)
    features = cfg.contract.marts.features
    start, end = dt.datetime.combine(day, dt.time()), dt.datetime.combine(day + DAY, dt.time())
    suite = cfg.contract.marts.split(features)[1]  # the feature gate's suite, as in the data_pipeline DAG
    frame = quality.load_warehouse_batch(day, paths, table=features)
    try:
        gate = quality.gate(suite, frame, day, paths, {"interval_start": start, "interval_end": end},
                            run_name=run_id(day, suite))
    except quality.DataQualityGateFailed as exc:
        raise DayRefused(f"{day} refused: {exc}") from exc
    lineage = ingest.publish_lineage(paths, cfg, landed, [admitted.to_xcom(), gate.to_xcom()])
    return ingest.publish(paths, cfg, day, start, end, lineage=lineage) | ingest.republish_later_days(paths, cfg, day)


def train_run(
    paths: StatePaths, cfg: Config, run: str, *, reason: str | None, evidence: dict[str, Any] | None,
    data_version: str | None,
) -> dict[str, Any]:
    """One `train_model` run: decide, then train and evaluate (promote or reject) when it should."""
    from training.model.evaluate import evaluate_challenger
    from training.model.train import TrainRequest, train_model
    from training.monitoring import retrain_deferral
    from training.monitoring.retrain_policy import NothingToTrain, decide_run

    try:
        decision, why = decide_run(paths, cfg, reason=reason, evidence=evidence, data_version=data_version,
                                   airflow_run_id=run)
    except NothingToTrain as exc:
        return {"outcome": "skipped", "why": f"nothing to train on: {exc}"}
    if decision is None:
        # a drift retrain waiting for matured post-onset days is recorded as a pending deferral
        outcome = "deferred" if reason and retrain_deferral.pending(paths) is not None else "skipped"
        return {"outcome": outcome, "why": why}
    trained = train_model(paths, cfg, TrainRequest(
        reason=decision["reason"], evidence=decision["evidence"], data_version=decision["data_version"],
        airflow_dag_id="train_model", airflow_run_id=run,
    ))
    if decision.get("deferral_id") is not None:
        retrain_deferral.resolve(paths, decision["deferral_id"], trained.version, trained.data_version)
    result = evaluate_challenger(paths, cfg, version=trained.version, airflow_run_id=run)
    verdict = "promoted" if result.action in ("promote", "first_promote") else "rejected"
    failed = f"; failed gates: {', '.join(result.failed_gates)}" if result.failed_gates else ""
    return {"outcome": f"trained v{trained.version}, {verdict}", "why": f"{why}{failed}",
            "version": trained.version, "action": result.action, "failed_gates": result.failed_gates}


def replay_day(paths: StatePaths, cfg: Config, day: dt.date) -> DayReport:
    """All four DAGs for one day, in the order their Assets chain them."""
    from training.monitoring.decision_log import attach_triggered_run
    from training.monitoring.drift_job import monitor_days, windows_ready
    from training.serving.inference import score_interval

    report = DayReport(day)
    report.published = data_day(paths, cfg, day)
    report.admitted = True
    report.training.append({"step": "train", **train_run(
        paths, cfg, run_id(day, "features"), reason=None, evidence=None,
        data_version=report.published.get("data_version"),
    )})
    report.scored = score_interval(paths, cfg, day)
    ready, why = windows_ready(paths, cfg, [day])
    if not ready:
        report.drift = {"decision": "not_ready", "why": why}
        return report
    report.drift = monitor_days(paths, cfg, [day], retrain_in_flight=lambda: False, log=lambda _: None)
    from training.monitoring.shadow import judge

    report.shadow = judge(paths, cfg, day, airflow_run_id=run_id(day, "shadow"))
    if report.drift.get("trigger"):
        conf, run = report.drift["conf"], run_id(day, "drift")
        attach_triggered_run(paths, day, report.drift["champion_version"], run)
        report.training.append({"step": "drift retrain", **train_run(
            paths, cfg, run, reason=conf["reason"], evidence=conf["evidence"], data_version=None,
        )})
    return report


def replay(
    paths: StatePaths, cfg: Config, start: dt.date, end: dt.date, *, log: Callable[[str], None] = print
) -> list[DayReport]:
    """Replay `start`..`end` (inclusive) day by day; a refused day raises `DayRefused` after the earlier days' lines."""
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    reports = []
    day = start
    while day <= end:
        report = replay_day(paths, cfg, day)
        log(report.describe())
        reports.append(report)
        day += DAY
    return reports
