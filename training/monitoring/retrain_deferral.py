"""Evidence sufficiency for a drift-triggered retrain: wait for the new world's labels, then train.

A retrain triggered by a drift or performance breach learns from after the onset its evidence names
(`datasets.split_anchored`). Right after the trigger only a day or two after the onset have matured
labels, and the newest is the holdout: measured on the card example's mechanism shift
(benchmarks/healing_retrain.py) such a model reaches 68 % of a model trained on ample post-shift data,
one with 5 matured post-onset days 99 %. Training the weak one anyway costs a promotion (or a recovery
gate fight) and a second retrain a few days later.

So a triggered run whose data version holds fewer than `training.drift_aware.min_post_onset_days`
matured days from the onset on does not train: it records a *pending deferral* (table
`retrain_deferrals` in the ops ledger: reason, evidence, onset, days seen/needed, why) and is skipped.
Every later `train_model` run - the daily `features` Asset event included - checks the pending
deferral against its own data version and trains it, with the original reason and evidence (plus a
`deferral` note), as soon as enough post-onset days have matured; the row is then marked `trained`
with the version it produced. Repeated triggers while one is pending are merged into that row
(`triggers` counts them), so the wait never produces a storm of retrains; `pending()` tells the drift
monitor that a retrain is, in effect, in flight.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from training.config import Config
from training.data import datasets
from training.paths import StatePaths
from training.storage import versioning
from training.storage.ledger import engine, ensure_tables, metadata

PENDING = "pending"
TRAINED = "trained"

#: One row per deferred drift retrain; `status` moves pending -> trained.
retrain_deferrals = sa.Table(
    "retrain_deferrals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),
    sa.Column("onset", sa.Date, nullable=False),
    sa.Column("onset_source", sa.String(100), nullable=False),
    sa.Column("deferred_data_version", sa.String(64), nullable=False),
    sa.Column("deferred_batch_date", sa.Date, nullable=False),
    sa.Column("post_onset_days", sa.Integer, nullable=False),
    sa.Column("needed_days", sa.Integer, nullable=False),
    sa.Column("triggers", sa.Integer, nullable=False),
    sa.Column("why", sa.Text, nullable=False),
    sa.Column("airflow_run_id", sa.String(250)),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("trained_data_version", sa.String(64)),
    sa.Column("trained_version", sa.String(32)),
)


@dataclass(frozen=True)
class Sufficiency:
    """How many matured days after the onset a data version holds, against what a retrain needs."""

    onset: dt.date
    onset_source: str
    post_onset_days: int
    needed_days: int

    @property
    def enough(self) -> bool:
        return self.post_onset_days >= self.needed_days


@dataclass(frozen=True)
class RetrainPlan:
    """What `train_model`'s first task should do about a drift retrain (trigger or pending deferral)."""

    train: bool
    reason: str
    why: str
    evidence: dict[str, Any] = field(default_factory=dict)
    deferral_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _engine(paths: StatePaths) -> sa.Engine:
    eng = engine(paths)
    ensure_tables(eng, retrain_deferrals)
    return eng


def needed_days(cfg: Config) -> int:
    """Matured post-onset days a drift retrain waits for (at least one beyond the holdout)."""
    return max(cfg.training.drift_aware.min_post_onset_days, cfg.windows.holdout_days + 1)


def sufficiency(paths: StatePaths, cfg: Config, evidence: dict | None, data_version: str) -> Sufficiency | None:
    """The post-onset evidence in `data_version`; None when the rule does not apply.

    It applies when drift-aware retraining is enabled and the evidence names an onset
    (`datasets.onset_from_evidence`); otherwise the retrain uses the standard windows anyway.
    """
    if not cfg.training.drift_aware.enabled or not evidence:
        return None
    onset, source = datasets.onset_from_evidence(evidence, cfg.windows.label_maturity_days)
    if onset is None:
        return None
    days = sum(1 for d in versioning.version_days(paths, data_version) if d >= onset)
    return Sufficiency(onset, source, days, needed_days(cfg))


def _row(r: Any) -> dict[str, Any]:
    d = dict(r._mapping)
    d["evidence"] = json.loads(d["evidence"])
    return d


def pending(paths: StatePaths) -> dict[str, Any] | None:
    """The oldest pending deferral (a drift retrain waiting for labels), or None."""
    t = retrain_deferrals
    with _engine(paths).connect() as con:
        r = con.execute(sa.select(t).where(t.c.status == PENDING).order_by(t.c.id).limit(1)).first()
    return _row(r) if r is not None else None


def deferrals(paths: StatePaths, limit: int = 50) -> list[dict[str, Any]]:
    """Recent deferrals, newest first (for reports and audits)."""
    t = retrain_deferrals
    with _engine(paths).connect() as con:
        rows = con.execute(sa.select(t).order_by(t.c.id.desc()).limit(limit)).all()
    return [_row(r) for r in rows]


def _defer(
    paths: StatePaths,
    reason: str,
    evidence: dict[str, Any],
    s: Sufficiency,
    record: versioning.DataVersionRecord,
    airflow_run_id: str | None,
) -> tuple[int, str]:
    """Record (or merge into the pending row) a deferred retrain; returns its id and the why."""
    why = (
        f"drift retrain deferred: data version {record.data_version} (up to {record.batch_date}) holds "
        f"{s.post_onset_days} matured day(s) from the onset {s.onset} ({s.onset_source}); "
        f"training.drift_aware.min_post_onset_days needs {s.needed_days} - a model fitted on fewer learns "
        "too little of the new pattern. It trains on the first data version that has them."
    )
    t = retrain_deferrals
    now = _now()
    with _engine(paths).begin() as con:
        r = con.execute(sa.select(t).where(t.c.status == PENDING).order_by(t.c.id).limit(1)).first()
        if r is not None:  # one pending retrain at a time: a repeated trigger is merged, not queued
            con.execute(
                t.update()
                .where(t.c.id == r.id)
                .values(
                    triggers=r.triggers + 1,
                    post_onset_days=s.post_onset_days,
                    deferred_data_version=record.data_version,
                    deferred_batch_date=record.batch_date,
                    why=why,
                    updated_at=now,
                )
            )
            return int(r.id), f"{why} (merged into pending deferral #{r.id}, onset {r.onset})"
        res = con.execute(
            t.insert().values(
                status=PENDING,
                reason=reason,
                evidence=json.dumps(evidence, default=str, sort_keys=True),
                onset=s.onset,
                onset_source=s.onset_source,
                deferred_data_version=record.data_version,
                deferred_batch_date=record.batch_date,
                post_onset_days=s.post_onset_days,
                needed_days=s.needed_days,
                triggers=1,
                why=why,
                airflow_run_id=airflow_run_id,
                created_at=now,
                updated_at=now,
            )
        )
        key = res.inserted_primary_key
        assert key is not None  # an insert into a table with an integer primary key
        return int(key[0]), why


def plan(
    paths: StatePaths,
    cfg: Config,
    requested_reason: str | None,
    evidence: dict[str, Any] | None,
    record: versioning.DataVersionRecord,
    *,
    airflow_run_id: str | None = None,
    scheduled_reason: str = "schedule",
) -> RetrainPlan | None:
    """Train, defer, or leave it to the cadence rule (None)?

    * a trigger (a reason other than `scheduled_reason`) whose evidence names an onset: train when
      `record`'s data version holds enough matured post-onset days, else defer (recorded);
    * no reason, and a deferral is pending: train it now if the data version has the days, else skip;
    * anything else: None (`retrain_policy.decide_training` decides).
    """
    evidence = dict(evidence or {})
    pend = pending(paths)
    if requested_reason and requested_reason != scheduled_reason:
        s = sufficiency(paths, cfg, evidence, record.data_version)
        if s is None:
            return None
        if not s.enough:
            deferral_id, why = _defer(paths, requested_reason, evidence, s, record, airflow_run_id)
            return RetrainPlan(False, "deferred", why, evidence, deferral_id)
        return RetrainPlan(
            True,
            requested_reason,
            f"explicit request: {requested_reason}; {s.post_onset_days} matured day(s) from the onset {s.onset} "
            f"(>= {s.needed_days})",
            evidence,
            None if pend is None else int(pend["id"]),
        )
    if pend is None:
        return None
    s = sufficiency(paths, cfg, pend["evidence"], record.data_version)
    if s is None:  # drift-aware switched off since: the pending retrain trains on the standard windows
        s = Sufficiency(pend["onset"], pend["onset_source"], 0, 0)
    if not s.enough:
        return RetrainPlan(
            False,
            "deferred",
            f"pending drift retrain #{pend['id']} ({pend['reason']}) still waits: data version "
            f"{record.data_version} (up to {record.batch_date}) holds {s.post_onset_days} of "
            f"{s.needed_days} matured day(s) from the onset {s.onset}",
            pend["evidence"],
            int(pend["id"]),
        )
    note = {
        "id": int(pend["id"]),
        "deferred_on": str(pend["deferred_batch_date"]),
        "created_at": str(pend["created_at"]),
        "triggers": int(pend["triggers"]),
        "post_onset_days_now": s.post_onset_days,
        "needed_days": s.needed_days,
    }
    return RetrainPlan(
        True,
        str(pend["reason"]),
        f"deferred drift retrain #{pend['id']} ({pend['reason']}, deferred at data up to "
        f"{pend['deferred_batch_date']}) now has {s.post_onset_days} matured day(s) from the onset "
        f"{s.onset} (>= {s.needed_days}): train",
        {**pend["evidence"], "deferral": note},
        int(pend["id"]),
    )


def resolve(paths: StatePaths, deferral_id: int, version: str, data_version: str) -> None:
    """Mark a pending deferral trained by model `version` (after `train_model` succeeded)."""
    t = retrain_deferrals
    with _engine(paths).begin() as con:
        con.execute(
            t.update()
            .where(t.c.id == int(deferral_id), t.c.status == PENDING)
            .values(status=TRAINED, trained_version=str(version), trained_data_version=data_version, updated_at=_now())
        )
