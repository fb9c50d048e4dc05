"""When `train_model` actually trains: daily data must not mean daily model churn.

A run trains when there is no champion yet, when someone gave a reason (manual, drift, ...), or when
the configured cadence has passed since the champion's training data — all in the data's own time
(batch dates), so a backfill or a simulated month decides exactly as the real days would.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from training.config import Config
from training.model import registry
from training.monitoring import retrain_deferral
from training.paths import StatePaths
from training.storage import versioning

SCHEDULED = "schedule"


class NothingToTrain(versioning.DataVersionNotFound):
    """No data version has been published yet: a run has nothing to train on (a skip, not a failure)."""


@dataclass(frozen=True)
class TrainDecision:
    train: bool
    reason: str
    why: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_training(
    paths: StatePaths, cfg: Config, requested_reason: str | None, data_batch_date: dt.date
) -> TrainDecision:
    """Train now? `requested_reason` is the trigger's reason (None or 'schedule' for the Asset schedule)."""
    if requested_reason and requested_reason != SCHEDULED:
        return TrainDecision(True, requested_reason, f"explicit request: {requested_reason}")
    status = registry.model_status(paths, cfg)
    champion = status.get("champion")
    if champion is None:
        return TrainDecision(True, "no_champion", "no champion yet: train the first one")
    champion_version = champion["lineage"].get("data_version")
    trained_on = None
    if champion_version:
        try:
            trained_on = versioning.get_version(paths, champion_version).batch_date
        except versioning.DataVersionNotFound:
            trained_on = None
    if trained_on is None:
        return TrainDecision(True, SCHEDULED, "the champion's training data version is unknown: retrain")
    age = (data_batch_date - trained_on).days
    if age >= cfg.training.cadence_days:
        return TrainDecision(
            True, SCHEDULED, f"champion v{champion['version']} trained on data up to {trained_on}, "
            f"{age} days ago >= cadence {cfg.training.cadence_days} days"
        )
    return TrainDecision(
        False, "skip", f"champion v{champion['version']} trained on data up to {trained_on}, only {age} "
        f"days ago (< cadence {cfg.training.cadence_days} days) and no reason was given"
    )


def enough_history(paths: StatePaths, cfg: Config, data_version: str) -> tuple[bool, str]:
    """Does the data version hold enough matured days for train + validation + holdout?"""
    days = len(versioning.version_days(paths, data_version))
    w = cfg.windows
    need = w.validation_days + w.holdout_days + cfg.training.min_training_days
    if days < need:
        return False, (
            f"data version {data_version} holds {days} matured days; need at least {need} "
            f"(validation {w.validation_days} + holdout {w.holdout_days} + "
            f"training.min_training_days {cfg.training.min_training_days})"
        )
    return True, f"{days} matured days available"


def decide_run(
    paths: StatePaths,
    cfg: Config,
    *,
    reason: str | None,
    evidence: dict[str, Any] | None,
    data_version: str | None,
    airflow_run_id: str | None = None,
) -> tuple[dict[str, Any] | None, str]:
    """One `train_model` run's decision: (what to train, why), or (None, why) when it should not train.

    `data_version` pins the data (conf or the Asset event); else the newest version is used. A pinned
    version that was never published raises `DataVersionNotFound` (a mistake in the request); no
    version at all raises `NothingToTrain`. The data must hold enough history; then a drift retrain
    trains or is deferred (`retrain_deferral.plan`), and otherwise the cadence rule decides.
    """
    if data_version:
        record = versioning.get_version(paths, data_version)
    else:
        try:
            record = versioning.latest_data_version(paths)
        except versioning.DataVersionNotFound as exc:
            raise NothingToTrain(str(exc)) from None
    ok, why = enough_history(paths, cfg, record.data_version)
    if not ok:
        return None, why
    plan = retrain_deferral.plan(paths, cfg, reason, evidence, record, airflow_run_id=airflow_run_id)
    decision = plan or decide_training(paths, cfg, reason, record.batch_date)
    if not decision.train:
        return None, decision.why
    extra = plan.to_dict() if plan else {"evidence": evidence or {}, "deferral_id": None}
    return {**decision.to_dict(), **extra, "data_version": record.data_version,
            "batch_date": record.batch_date.isoformat()}, decision.why
