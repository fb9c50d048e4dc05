"""Batch scoring of one data interval with `@champion`, and `@challenger` in shadow.

Reads the interval's rows of the contract's published features table (`contract.marts.published`),
scores them, and replaces the (`batch_date`, `alias`) partitions of `published.predictions` in one
transaction, so re-running a day replaces its predictions and never duplicates them. Champion rows
are what production acts on; challenger rows are shadow scores for comparison only. After a
promotion the champion it replaced (the audit log's previous champion) is scored in shadow too,
under alias `previous_champion`, so the monitor can roll back a new champion that does worse on the
same live rows (training/monitoring/shadow.py).

A prediction row carries the scored event's id (`cfg.model.id_column`, the feature mart's key) in
the generic column `entity_id`, so the table's shape is the same for every model, and its decision
in the contract's words (`contract.decisions`: `positive` at or above the threshold, else `negative`).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pandas as pd

from training.config import Config
from training.contract import Marts
from training.data import datasets
from training.errors import ClosedloopError
from training.model import tracking
from training.paths import StatePaths
from training.storage import warehouse

log = logging.getLogger(__name__)

PREDICTIONS_TABLE = "published.predictions"
#: The alias column's value for the previous champion's shadow rows (not an MLflow alias: the
#: registry audit log's champion stack names it, so a rollback or the next promotion updates it).
PREVIOUS_CHAMPION = "previous_champion"
PREDICTION_COLUMNS = [
    "model_name",
    "model_version",
    "alias",
    "entity_id",
    "batch_date",
    "score",
    "decision",
    "threshold",
    "data_interval_start",
    "data_interval_end",
    "scored_at",
]
PREDICTIONS_DDL = f"""
create table if not exists {PREDICTIONS_TABLE} (
    model_name varchar not null,
    model_version varchar not null,
    alias varchar not null,
    entity_id varchar not null,
    batch_date date not null,
    score double precision not null,
    decision varchar not null,
    threshold double precision not null,
    data_interval_start timestamp,
    data_interval_end timestamp,
    scored_at timestamp not null
)
"""


class InferenceError(ClosedloopError, RuntimeError):
    """The interval cannot be scored; the message says what is missing."""


def read_interval(paths: StatePaths, cfg: Config, batch_date: dt.date) -> pd.DataFrame:
    """The interval's published feature rows (read-only connection, closed on return)."""
    table = cfg.contract.marts.published
    with warehouse.connect(paths, read_only=True) as con:
        if not con.table_exists(*Marts.split(table)):
            raise InferenceError(f"{table} does not exist: run data_pipeline (publish) for {batch_date} first")
        return con.frame(f"select * from {table} where batch_date = ?", [batch_date])


def predictions_frame(
    features: pd.DataFrame,
    cfg: Config,
    model: Any,
    signature: list[dict[str, str]],
    *,
    version: str,
    alias: str,
    batch_date: dt.date,
    interval: tuple[dt.datetime, dt.datetime],
    scored_at: dt.datetime,
    threshold: float | None = None,
) -> pd.DataFrame:
    """Score feature rows with one model into the contract's prediction rows.

    `threshold`: the version's own decision threshold (`version_threshold`); None = config fallback.
    """
    threshold = float(cfg.model.decision_threshold if threshold is None else threshold)
    if features.empty:
        scores = pd.Series([], dtype="float64")
    else:
        scores = pd.Series(tracking.score(model, datasets.prepare_for_signature(features, signature)))
    return pd.DataFrame(
        {
            "model_name": cfg.model.name,
            "model_version": str(version),
            "alias": alias,
            "entity_id": features[cfg.model.id_column].astype(str).to_numpy(),
            "batch_date": batch_date,
            "score": scores.to_numpy(),
            "decision": [cfg.contract.decisions.of(s, threshold) for s in scores],
            "threshold": threshold,
            "data_interval_start": interval[0],
            "data_interval_end": interval[1],
            "scored_at": scored_at,
        },
        columns=PREDICTION_COLUMNS,
    )


def version_threshold(mv: object, cfg: Config) -> float:
    """The decision threshold stored with a model version (tag `decision_threshold`, set by training
    at the configured operating point); versions trained before it existed use the config's."""
    tags = getattr(mv, "tags", None) or {}
    try:
        return float(tags["decision_threshold"])
    except (KeyError, TypeError, ValueError):
        return float(cfg.model.decision_threshold)


def write_predictions(paths: StatePaths, batch_date: dt.date, frames: dict[str, pd.DataFrame | None]) -> None:
    """Replace the (batch_date, alias) partition of each alias in one transaction.

    An alias mapped to None has its partition for the day emptied (e.g. no shadow model any more).
    """
    ddl = ("create schema if not exists published", PREDICTIONS_DDL)
    with warehouse.transaction(paths, ddl=ddl) as con:
        for alias, frame in frames.items():
            con.replace_partition(
                PREDICTIONS_TABLE, {"batch_date": batch_date, "alias": alias},
                None if frame is None else frame[PREDICTION_COLUMNS],
            )


def _previous_champion(paths: StatePaths, cfg: Config, mc: Any, champion: str) -> Any | None:
    """The previous champion's version to score in shadow (None: no rollback watch, or none to watch)."""
    from training.model import registry

    if not (cfg.shadow.enabled and cfg.shadow.rollback.enabled):
        return None
    version = registry.previous_champion(paths, cfg)
    if version is None or version == champion:
        return None
    try:
        return tracking.get_version(mc, cfg.model.name, version)
    except tracking.ModelNotFound:
        log.warning("previous champion v%s of %s is no longer registered: not scored in shadow", version, cfg.model.name)
        return None


def score_interval(
    paths: StatePaths,
    cfg: Config,
    batch_date: dt.date,
    interval_start: dt.datetime | None = None,
    interval_end: dt.datetime | None = None,
) -> dict[str, Any]:
    """Score one day with the champion (the challenger and the previous champion in shadow); small dict for XCom."""
    name = cfg.model.name
    start = interval_start or dt.datetime.combine(batch_date, dt.time())
    end = interval_end or start + dt.timedelta(days=1)
    mc = tracking.client(paths)
    champion = tracking.alias_version(mc, name, tracking.CHAMPION)
    if champion is None:
        log.warning("%s has no @champion yet: nothing scored for %s", name, batch_date)
        return {
            "batch_date": batch_date.isoformat(),
            "status": "skipped_no_champion",
            "rows": 0,
            "versions": {},
        }
    challenger = tracking.alias_version(mc, name, tracking.CHALLENGER)
    models = {tracking.CHAMPION: str(champion.version)}
    thresholds = {tracking.CHAMPION: version_threshold(champion, cfg)}
    if challenger is not None and str(challenger.version) != str(champion.version):
        models[tracking.CHALLENGER] = str(challenger.version)
        thresholds[tracking.CHALLENGER] = version_threshold(challenger, cfg)
    previous = _previous_champion(paths, cfg, mc, str(champion.version))
    if previous is not None:
        models[PREVIOUS_CHAMPION] = str(previous.version)
        thresholds[PREVIOUS_CHAMPION] = version_threshold(previous, cfg)

    features = read_interval(paths, cfg, batch_date)
    scored_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    frames: dict[str, pd.DataFrame | None] = {tracking.CHALLENGER: None, PREVIOUS_CHAMPION: None}
    for alias, version in models.items():
        uri = tracking.model_uri(name, version=version)
        frames[alias] = predictions_frame(
            features,
            cfg,
            tracking.load_model(uri),
            tracking.input_signature(uri),
            version=version,
            alias=alias,
            batch_date=batch_date,
            interval=(start, end),
            scored_at=scored_at,
            threshold=thresholds[alias],
        )
    write_predictions(paths, batch_date, frames)
    champ_frame = frames[tracking.CHAMPION]
    assert champ_frame is not None
    words = (cfg.contract.decisions.positive, cfg.contract.decisions.negative)
    result = {
        "batch_date": batch_date.isoformat(),
        "status": "scored",
        "rows": int(len(features)),
        "versions": models,
        # champion rows per decision word, e.g. {"block": 52, "allow": 4700}
        "decisions": {word: int((champ_frame["decision"] == word).sum()) for word in words},
    }
    log.info("scored %s: %s", batch_date, result)
    return result
