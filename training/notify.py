"""What the loop tells people: one message per decision, built from the dicts the stages return.

The message (subject, body, severity, evidence, links, next action) is built here, with no Airflow
import; `plugins/closedloop/notifiers.py` delivers it (e-mail through the SMTP provider's notifier,
a JSON webhook) to the routes of the model's `notifications:` config. Each message carries a
dedupe key naming its decision (the audit key, the drift window, the deferral, the failed run):
the `notification_deliveries` ledger table records each receiver's delivery under it, so a retried
task or a second callback never sends the same decision twice, and a failed delivery is visible
(and retried by the next attempt to send it) without touching the decision itself.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from training.config import Config, MessageKind, Severity
from training.paths import StatePaths
from training.storage import ledger

notification_deliveries = sa.Table(
    "notification_deliveries",
    ledger.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dedupe_key", sa.String(500), nullable=False, index=True),
    sa.Column("receiver", sa.String(500), nullable=False),  # email:<addresses> | webhook:<url>
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # sent | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("dedupe_key", "receiver", name="uq_notification_delivery"),
)


@dataclass(frozen=True)
class Message:
    """One decision told to people; `dedupe_key` names the decision (one message per decision)."""

    kind: MessageKind
    model: str
    severity: Severity
    subject: str
    decision: str
    evidence: dict[str, Any]
    next_action: str
    dedupe_key: str
    links: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> str:
        """Plain text: the decision, the key evidence, the links, the next action."""
        lines = [f"Decision: {self.decision}", "", "Evidence:"]
        lines += [f"  {k}: {_short(v)}" for k, v in self.evidence.items() if v not in (None, "", [], {})]
        if self.links:
            lines += ["", "Links:"] + [f"  {k}: {v}" for k, v in self.links.items()]
        lines += ["", f"Next action: {self.next_action}"]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "body": self.body}


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dt.date):
        return value.isoformat()
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= 400 else text[:397] + "..."


def _prefix(cfg: Config) -> str:
    return f"[closedloop {cfg.model.name}]"


def _links(**given: str | None) -> dict[str, str]:
    return {k.replace("_", " "): v for k, v in given.items() if v}


def gate_decision(cfg: Config, result: dict[str, Any], *, run_url: str | None = None) -> Message | None:
    """A challenger promoted or rejected (`EvaluationResult.to_dict()`); None for a dry run."""
    action = result.get("action")
    if action not in ("promote", "first_promote", "reject"):
        return None
    name, ch, champ = result["model_name"], result["challenger_version"], result.get("champion_version")
    metric = cfg.model.primary_metric
    metrics = result.get("metrics") or {}
    evidence = {
        "trigger reason": result.get("trigger_reason"),
        "policy": result.get("policy"),
        "failed gates": ", ".join(result.get("failed_gates") or []) or "none",
        **{k: v for k, v in metrics.items() if metric in k and isinstance(v, int | float)},
    }
    links = _links(decision_report=result.get("report_uri"), airflow_run=run_url)
    key = f"gate:{result['idempotency_key']}"
    if action == "reject":
        return Message(
            kind="rejection", model=name, severity="warning",
            subject=f"{_prefix(cfg)} challenger v{ch} rejected; v{champ} stays champion",
            decision=f"rejected {name} v{ch}: failed {', '.join(result.get('failed_gates') or [])}",
            evidence=evidence, links=links, dedupe_key=key,
            next_action=(
                f"Nothing to do if the report agrees: v{champ} keeps serving and the drift monitor re-triggers if "
                f"the breach persists. To overrule the gates: `python -m training force-promote --version {ch} "
                "--reason '...'` (audited)."
            ),
        )
    first = action == "first_promote"
    return Message(
        kind="promotion", model=name, severity="info",
        subject=f"{_prefix(cfg)} v{ch} promoted to champion" + (" (first champion)" if first else f" (was v{champ})"),
        decision=f"promoted {name} v{ch} to @champion" + ("" if first else f", replacing v{champ}"),
        evidence=evidence, links=links, dedupe_key=key,
        next_action=(
            f"batch_inference scores with v{ch} from the next day. If it misbehaves: "
            "`airflow dags trigger rollback_champion --conf '{\"reason\": \"...\"}'`."
        ),
    )


def approval_requested(
    cfg: Config, held: dict[str, Any], *, answer_url: str | None = None, run_url: str | None = None
) -> Message:
    """A risky, gate-approved promotion waits for a person (`EvaluationResult.to_dict()`, action held)."""
    name, ch, champ = held["model_name"], held["challenger_version"], held.get("champion_version")
    kinds = ", ".join(r["kind"] for r in held.get("risks") or []) or "always ask"
    spec = cfg.approval
    return Message(
        kind="approval_requested", model=name, severity="warning",
        subject=f"{_prefix(cfg)} approve v{ch} as champion? ({kinds})",
        decision=f"the gates passed {name} v{ch}" + (f" against v{champ}" if champ else " (no champion yet)")
        + f"; the promotion is risky ({kinds}) and waits for a person",
        evidence={"risks": [r["why"] for r in held.get("risks") or []], "policy": held.get("policy"),
                  "trigger reason": held.get("trigger_reason"),
                  "default": f"{spec.on_timeout} after {spec.timeout_hours:g} h without an answer"},
        links=_links(answer_here=answer_url, decision_report=held.get("report_uri"), airflow_run=run_url),
        dedupe_key=f"approval:{held['idempotency_key']}",
        next_action=(
            "Read the decision report, then answer Approve or Reject with a comment in Airflow's Required Actions "
            "(link) or through the REST API (PATCH .../taskInstances/approve_promotion/-1/hitlDetails)."
        ),
    )


def drift_trigger(
    cfg: Config, result: dict[str, Any], *, triggered_run_id: str | None = None, run_url: str | None = None
) -> Message | None:
    """The drift monitor triggered a retrain (`monitor_days`'s result); None when it did not."""
    if not result.get("trigger"):
        return None
    evidence = {
        "reason": result.get("reason"),
        "why": result.get("why"),
        "window": f"{result.get('window_start')} .. {result.get('window_end')}",
        "champion": result.get("champion_version"),
        "rows": result.get("rows"),
        "drift share": result.get("drift_share"),
        "prediction drift": result.get("prediction_drift"),
        f"matured {cfg.model.primary_metric}": result.get("matured_pr_auc"),
        "retrain run": triggered_run_id,
    }
    return Message(
        kind="drift_trigger", model=cfg.model.name, severity="warning",
        subject=f"{_prefix(cfg)} drift: retrain of v{result.get('champion_version')} triggered ({result.get('reason')})",
        decision=f"triggered train_model ({result.get('reason')})",
        evidence=evidence,
        links=_links(evidently_report=result.get("report_path"), airflow_run=run_url),
        dedupe_key=f"drift:{cfg.model.name}:{result.get('champion_version')}:{result.get('window_end')}",
        next_action=(
            "Watch the triggered train_model run: its gates decide (a promotion or a rejection message follows). "
            "Open the Evidently report to see which features moved."
        ),
    )


def deferral_waiting(cfg: Config, deferral: dict[str, Any], *, run_url: str | None = None) -> Message:
    """A drift retrain deferred until enough post-onset labels mature (a `retrain_deferrals` row)."""
    evidence = {k: deferral.get(k) for k in ("reason", "why", "onset", "onset_source", "post_onset_days",
                                             "needed_days", "created_at")}
    return Message(
        kind="deferral_waiting", model=cfg.model.name, severity="info",
        subject=f"{_prefix(cfg)} retrain deferred: waiting for labels after the onset {deferral.get('onset')}",
        decision=f"deferred retrain #{deferral.get('id')} ({deferral.get('reason')})",
        evidence=evidence, links=_links(airflow_run=run_url),
        dedupe_key=f"deferral:{cfg.model.name}:{deferral.get('id')}",
        next_action=(
            "Nothing: the first train_model run whose data holds enough matured post-onset days trains it "
            "(a promotion or rejection message follows). The champion keeps serving meanwhile."
        ),
    )


def rollback(cfg: Config, record: dict[str, Any], *, run_url: str | None = None) -> Message:
    """`@champion` moved back (an `AuditRecord.to_dict()` of action rollback); an automatic rollback's
    shadow evidence (its `metrics`) is part of the message."""
    shadow = {k[len("shadow_"):].replace("_", " "): v for k, v in (record.get("metrics") or {}).items()
              if k.startswith("shadow_")}
    return Message(
        kind="rollback", model=cfg.model.name, severity="critical",
        subject=f"{_prefix(cfg)} rolled back: v{record.get('from_version')} -> v{record.get('to_version')}",
        decision=f"rolled {cfg.model.name}@champion back from v{record.get('from_version')} to v{record.get('to_version')}",
        evidence={"reason": record.get("reason"), "trigger reason": record.get("trigger_reason"),
                  "actor": record.get("actor"), "at": record.get("at"), **shadow},
        links=_links(airflow_run=run_url),
        dedupe_key=f"audit:{record.get('idempotency_key')}",
        next_action=(
            f"v{record.get('to_version')} serves from the next scored day. Find out why v{record.get('from_version')} "
            "misbehaved before promoting it again (force-promote, audited)."
        ),
    )


def deadline_missed(
    cfg: Config, *, what: str, dag_id: str, run_id: str, day: dt.date | None, deadline: str,
    state: str | None = None, run_url: str | None = None,
) -> Message:
    """A day's data not published (`what` published) or not scored (`what` scored) by its deadline
    (an Airflow Deadline Alert on data_pipeline / batch_inference). One message per run."""
    doing = "published" if what == "published" else "scored"
    return Message(
        kind="deadline_missed", model=cfg.model.name, severity="critical",
        subject=f"{_prefix(cfg)} day {day or '?'} not {doing} by {deadline[:16]} UTC ({dag_id})",
        decision=f"{dag_id} run {run_id} had not succeeded by its deadline {deadline}: the day is not {doing}",
        evidence={"day": str(day) if day else None, "dag": dag_id, "run": run_id, "run state": state,
                  "deadline": deadline},
        links=_links(airflow_run=run_url), dedupe_key=f"deadline:{dag_id}:{run_id}:{what}",
        next_action=(
            "Open the run: still waiting for the source (nothing landed yet), stuck in a queue or pool, or "
            "failed? Deliver or fix the day's data and re-run it; until then "
            + ("downstream days wait (strict day order) and nothing new is scored." if doing == "published"
               else "the day has no predictions from the champion.")
        ),
    )


def shadow_decision(cfg: Config, result: dict[str, Any], *, run_url: str | None = None) -> Message | None:
    """What drift_monitor's shadow task moved (`shadow.judge_days`'s result); None when nothing moved."""
    if result.get("rollback"):
        return rollback(cfg, result["rollback"], run_url=run_url)
    record = result.get("promotion")
    if not record:
        return None
    evidence = {"reason": record.get("reason"), "trigger reason": record.get("trigger_reason"),
                "actor": record.get("actor"),
                **{k[len("shadow_"):].replace("_", " "): v for k, v in (record.get("metrics") or {}).items()
                   if k.startswith("shadow_")}}
    return Message(
        kind="promotion", model=cfg.model.name, severity="info",
        subject=f"{_prefix(cfg)} v{record.get('to_version')} promoted on shadow evidence (was v{record.get('from_version')})",
        decision=f"promoted {cfg.model.name} v{record.get('to_version')} to @champion: significantly better on matured live rows",
        evidence=evidence, links=_links(airflow_run=run_url), dedupe_key=f"audit:{record.get('idempotency_key')}",
        next_action=(
            f"batch_inference scores with v{record.get('to_version')} from the next day; v{record.get('from_version')} "
            "keeps scoring in shadow and is restored automatically if the new champion does significantly worse."
        ),
    )


#: The data_pipeline tasks whose failure means the day was refused or quarantined (not a fault).
DAY_GATES = ("land", "raw_gate", "feature_gate", "verify_published")


def failure(
    cfg: Config, *, dag_id: str, run_id: str, task_id: str, error: str, day: dt.date | None = None,
    run_url: str | None = None, quarantine_dir: str | None = None,
) -> Message:
    """A DAG run failed: a refused or quarantined day (data_pipeline's gates), or any other failure.

    One message per failed run (dedupe on the run): the first failing task tells it.
    """
    refused = dag_id.endswith("data_pipeline") and task_id in DAY_GATES
    key = f"failure:{dag_id}:{run_id}"
    if refused:
        return Message(
            kind="day_refused", model=cfg.model.name, severity="critical",
            subject=f"{_prefix(cfg)} day {day} refused at {task_id}: nothing published",
            decision=(f"refused {day} at {task_id}: nothing published, nothing downstream changed"
                      + (" (the batch is quarantined)" if task_id.endswith("gate") else "")),
            evidence={"day": str(day), "gate": task_id, "error": error},
            links=_links(airflow_run=run_url, quarantine=quarantine_dir), dedupe_key=key,
            next_action=(
                f"Read why (the error above, the task log), fix the cause or the day's data, then re-run it: "
                f"`airflow dags trigger {dag_id} --conf '{{\"batch_date\": \"{day}\"}}'`."
            ),
        )
    return Message(
        kind="dag_failure", model=cfg.model.name, severity="critical",
        subject=f"{_prefix(cfg)} {dag_id} failed at {task_id}",
        decision=f"{dag_id} run {run_id} failed at {task_id}",
        evidence={"dag": dag_id, "run": run_id, "task": task_id, "error": error},
        links=_links(airflow_run=run_url), dedupe_key=key,
        next_action="Read the task log (link), fix the cause, then clear the task or re-trigger the run.",
    )


# -- the delivery ledger ---------------------------------------------------------------------------


def _engine(paths: StatePaths) -> sa.Engine:
    eng = ledger.engine(paths)
    ledger.ensure_tables(eng, notification_deliveries)
    return eng


def already_sent(paths: StatePaths, dedupe_key: str, receiver: str) -> bool:
    t = notification_deliveries
    with _engine(paths).connect() as con:
        status = con.execute(
            sa.select(t.c.status).where(t.c.dedupe_key == dedupe_key, t.c.receiver == receiver)
        ).scalar()
    return status == "sent"


def record_delivery(
    paths: StatePaths, message: Message, receiver: str, *, sent: bool, attempts: int, error: str | None = None
) -> None:
    """Record (or update, after a later retry) one receiver's delivery of one message."""
    t = notification_deliveries
    values = {
        "kind": message.kind, "severity": message.severity, "subject": message.subject,
        "status": "sent" if sent else "failed", "attempts": attempts, "error": error,
        "at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
    }
    with _engine(paths).begin() as con:
        row = con.execute(
            sa.select(t.c.id, t.c.attempts).where(t.c.dedupe_key == message.dedupe_key, t.c.receiver == receiver)
        ).first()
        if row is None:
            con.execute(sa.insert(t).values(dedupe_key=message.dedupe_key, receiver=receiver, **values))
        else:
            values["attempts"] = row.attempts + attempts
            con.execute(sa.update(t).where(t.c.id == row.id).values(**values))


def deliveries(paths: StatePaths, limit: int = 50) -> list[dict[str, Any]]:
    """Recent deliveries, newest first (what was told to whom, and what failed)."""
    t = notification_deliveries
    with _engine(paths).connect() as con:
        rows = con.execute(sa.select(t).order_by(t.c.at.desc(), t.c.id.desc()).limit(limit)).all()
    return [{**r._mapping, "at": r.at.isoformat()} for r in rows]
