"""Champion vs challenger on the challenger's frozen holdout: gates, decision report, registry move.

Both models score exactly the rows of the holdout the challenger froze at training time (found by
its `holdout_hash` tag), so the comparison is paired. The gates (`training.model.gates`) decide; the
Markdown report is stored as an artifact of the challenger's run and linked from its model
version by a portable `runs:/<run_id>/decision/decision_report.md` URI (tag `decision_report`) and
a UI-relative link in the description - never by a path on one machine, so the links survive a
moved state directory or server; then the registry promotes or records the rejection. The
decision is keyed like the training it judges, so re-running evaluate for the same challenger
changes nothing.

A passing challenger's promotion risks are classified (`training.model.approval`). `hold=True`
(train_model's `evaluate` task) records a rejection as always but leaves a passing challenger
`held`: the DAG's `promote` task moves the alias, after a person answered when the promotion is
risky, through `settle`, which audits the answer (approver, comment, time) with the promotion or
rejection and appends it to the decision report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from training.config import Config
from training.data import datasets
from training.errors import ClosedloopError
from training.model import approval, gates, registry, reports, tracking
from training.paths import StatePaths

log = logging.getLogger(__name__)

REPORT_ARTIFACT = "decision/decision_report.md"
DECISION_ARTIFACT = "decision/decision.json"
MODEL_CARD_ARTIFACT = "model_card.md"


class EvaluationError(ClosedloopError, RuntimeError):
    """The challenger cannot be evaluated as asked; the message says what to do."""


@dataclass(frozen=True)
class EvaluationResult:
    model_name: str
    challenger_version: str
    champion_version: str | None
    promote: bool
    action: str  # promote | first_promote | reject | dry_run | held (passed, promotion left to `settle`)
    policy: str
    failed_gates: list[str]
    report_uri: str | None
    metrics: dict[str, Any]
    idempotency_key: str
    reused: bool = False
    trigger_reason: str | None = None  # why the challenger was trained (its version's `trigger_reason` tag)
    risks: list[dict[str, str]] = dataclasses.field(default_factory=list)  # `approval.Risk`s of the promotion
    needs_approval: bool = False  # a person must answer before the promotion (`approval:` config)
    promote_reason: str | None = None  # the audit reason of the promotion, when the gates passed
    approval: dict[str, Any] | None = None  # the `approval.Answer` that settled a held promotion

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Scored:
    version: str
    scores: np.ndarray
    signature: list[dict[str, str]]
    latency_ms_per_1k_rows: float
    model_size_mb: float


def score_version(name: str, version: str, holdout: pd.DataFrame, repeats: int = 3) -> Scored:
    """Load one registered version, score the holdout, and time it (best of `repeats`, per 1k rows)."""
    uri = tracking.model_uri(name, version=version)
    signature = tracking.input_signature(uri)
    model = tracking.load_model(uri)
    X = datasets.prepare_for_signature(holdout, signature)
    best = math.inf
    scores = np.empty(0)
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        scores = tracking.score(model, X)
        best = min(best, time.perf_counter() - t0)
    latency = best * 1000.0 / max(len(X) / 1000.0, 1e-9)
    return Scored(version, scores, signature, latency, tracking.model_size_mb(uri))


def baseline_scores(mc: Any, run_id: str, holdout: pd.DataFrame, id_column: str) -> np.ndarray | None:
    """The recovery baseline's scores on `holdout` (logged by `train`), aligned by id; None if absent."""
    import tempfile

    from training.model.train import BASELINE_ARTIFACT

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mc.download_artifacts(run_id, BASELINE_ARTIFACT, tmp)
        except Exception:  # an older challenger, or the setting was off when it trained
            return None
        frame = pd.read_parquet(path)
    by_id = frame.set_index(id_column)["score"]
    aligned = holdout[id_column].astype(str).map(by_id)
    if aligned.isna().any():
        log.warning("baseline scores of run %s do not cover the holdout; the recovery floors apply", run_id)
        return None
    return aligned.to_numpy(dtype="float64")


def decision_key(challenger_tags: dict[str, str], name: str, version: str) -> str:
    """One decision per training: keyed by the challenger's training idempotency key."""
    train_key = challenger_tags.get(tracking.IDEMPOTENCY_TAG) or f"{name}/v{version}"
    return f"{train_key}#decision"


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, int | float | np.floating) and math.isfinite(float(v)):
            out[k] = float(v)
    return out


def _from_audit(rec: registry.AuditRecord, key: str) -> EvaluationResult:
    m = rec.metrics
    return EvaluationResult(
        model_name=rec.model_name,
        challenger_version=str(rec.to_version),
        champion_version=rec.from_version,
        promote=rec.action in registry.PROMOTING,
        action=rec.action,
        policy=str(m.get("policy", "")),
        failed_gates=list(m.get("failed_gates", [])),
        report_uri=rec.report_uri,
        metrics=m,
        idempotency_key=key,
        reused=True,
        risks=list(m.get("approval", {}).get("risks", [])),
        approval=m.get("approval", {}).get("answer"),
    )


def evaluate_challenger(
    paths: StatePaths,
    cfg: Config,
    *,
    version: str | int | None = None,
    signature_override_reason: str | None = None,
    airflow_run_id: str | None = None,
    idempotency_key: str | None = None,
    act: bool = True,
    actor: str | None = None,
    hold: bool = False,
) -> EvaluationResult:
    """Gate the challenger (default: `@challenger`) against `@champion` and act on the decision.

    `act=False` is a dry run: the report and tags are written, the registry is not touched.
    `hold=True`: a rejection is recorded, a passing challenger is returned `held` for `settle`.
    """
    name = cfg.model.name
    mc = tracking.client(paths)
    if version is None:
        ch_mv = tracking.alias_version(mc, name, tracking.CHALLENGER)
        if ch_mv is None:
            raise EvaluationError(f"{name} has no @challenger: run `python -m training train` first")
    else:
        ch_mv = tracking.get_version(mc, name, version)
    ch_version = str(ch_mv.version)
    key = idempotency_key or decision_key(ch_mv.tags, name, ch_version)
    if act:
        done = registry.find_audit(paths, key)
        if done is not None:
            log.info("decision %s already recorded (%s); nothing to do", key, done.action)
            return _from_audit(done, key)

    cp_mv = tracking.alias_version(mc, name, tracking.CHAMPION)
    if cp_mv is not None and str(cp_mv.version) == ch_version:
        raise EvaluationError(f"{name} version {ch_version} is already the champion; train a new challenger")
    digest = ch_mv.tags.get("holdout_hash")
    if not digest or digest == tracking.UNKNOWN:
        raise EvaluationError(
            f"{name} version {ch_version} has no holdout_hash tag; it was not trained by closedloop"
        )
    holdout = datasets.load_holdout(paths, digest, cfg.model.id_column)

    challenger = score_version(name, ch_version, holdout)
    champion = None if cp_mv is None else score_version(name, str(cp_mv.version), holdout)
    baseline = (
        baseline_scores(mc, ch_mv.run_id, holdout, cfg.model.id_column)
        if champion is not None and cfg.gates.recovery.needs_baseline
        else None
    )
    decision = gates.evaluate_gates(
        cfg,
        gates.GateInputs(
            holdout=holdout,
            challenger_scores=challenger.scores,
            champion_scores=None if champion is None else champion.scores,
            challenger_signature=challenger.signature,
            champion_signature=None if champion is None else champion.signature,
            signature_override_reason=signature_override_reason,
            latency_ms_per_1k_rows=challenger.latency_ms_per_1k_rows,
            model_size_mb=challenger.model_size_mb,
            baseline_scores=baseline,
            baseline_name=cfg.gates.recovery.baseline_family,
        ),
    )
    failed = [g.name for g in decision.failed]
    risks: list[approval.Risk] = []
    shift = None
    if decision.promote:
        shift = None if champion is None else approval.score_shift(champion.scores, challenger.scores)
        risks = approval.classify(
            cfg.approval,
            first_champion=champion is None,
            recovery=decision.policy == gates.POLICY_RECOVERY,
            challenger_signature=challenger.signature,
            champion_signature=None if champion is None else champion.signature,
            shift=shift,
        )
    # only train_model (hold=True) asks: a person running `evaluate` by hand has decided already
    needs = hold and decision.promote and approval.needs_approval(cfg.approval, risks)
    context = {
        "model_name": name,
        "challenger_version": ch_version,
        "champion_version": None if champion is None else champion.version,
        "holdout_hash": digest,
        "data_version": ch_mv.tags.get("data_version"),
        "trigger_reason": ch_mv.tags.get("trigger_reason"),
        "evaluated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "run_id": ch_mv.run_id,
        "training_window_start": ch_mv.tags.get("training_window_start"),
        "training_window_end": ch_mv.tags.get("training_window_end"),
        "label_maturity_days": cfg.windows.label_maturity_days,
        "decision_threshold": ch_mv.tags.get("decision_threshold")
        or f"{cfg.model.decision_threshold} (config fallback: the version has no threshold tag)",
        "training_method": ch_mv.tags.get("training_method"),
        "training_method_detail": ch_mv.tags.get("training_method_detail"),
        "calibration": ch_mv.tags.get("calibration"),
        # the contract's words for the model card
        "positive_label": cfg.contract.decisions.positive_label,
        "positive_decision": cfg.contract.decisions.positive,
        "events": cfg.contract.events.feed,
        "labels": cfg.contract.labels.feed,
        "simulated_data": cfg.contract.source.kind == "simulator",
    }

    run = mc.get_run(ch_mv.run_id)
    report_text = reports.render_report(decision, context)
    if decision.promote:
        report_text += approval.report_section(cfg.approval, risks, needs, shift)
    mc.log_text(ch_mv.run_id, report_text, REPORT_ARTIFACT)
    mc.log_dict(ch_mv.run_id, {"context": context, "decision": decision.to_dict()}, DECISION_ARTIFACT)
    report_uri = tracking.run_artifact_uri(ch_mv.run_id, REPORT_ARTIFACT)
    report_link = tracking.ui_artifact_route(run.info.experiment_id, ch_mv.run_id, REPORT_ARTIFACT)
    for k, v in _finite(decision.metrics).items():
        mc.log_metric(ch_mv.run_id, f"gate_{k}", v)
    verdict = "promote" if decision.promote else "reject"
    mc.set_model_version_tag(name, ch_version, "decision_report", report_uri)
    mc.set_model_version_tag(name, ch_version, registry.GATE_DECISION_TAG, verdict)
    mc.set_model_version_tag(name, ch_version, "gate_policy", decision.policy)
    mc.set_model_version_tag(name, ch_version, "gate_failed", ",".join(failed) or "none")
    summary = (
        f"Gate decision: {verdict.upper()} ({decision.policy}); "
        + (f"failed: {', '.join(failed)}. " if failed else "all evaluated gates passed. ")
        + f"Report: [{REPORT_ARTIFACT}]({report_link}) (`{report_uri}`)"
    )
    base = (ch_mv.description or "").split("\n\nGate decision:")[0]
    mc.update_model_version(name, ch_version, description=f"{base}\n\n{summary}".strip())

    audit_metrics: dict[str, Any] = {
        **_finite(decision.metrics),
        "policy": decision.policy,
        "failed_gates": failed,
        "training_method": ch_mv.tags.get("training_method"),
    }
    if decision.promote:
        audit_metrics["approval"] = {"risks": [r.to_dict() for r in risks], "asked": needs,
                                     "score_shift": shift, "mode": cfg.approval.mode}
    if decision.recovery is not None and decision.recovery["champion_collapsed"]:
        # audited: the champion had collapsed, and whether the recovery floors were applied
        audit_metrics["recovery"] = gates.json_safe(decision.recovery)
        mc.set_model_version_tag(name, ch_version, "gate_recovery", str(decision.recovery["active"]).lower())
    result = EvaluationResult(
        model_name=name,
        challenger_version=ch_version,
        champion_version=None if champion is None else champion.version,
        promote=decision.promote,
        action="dry_run",
        policy=decision.policy,
        failed_gates=failed,
        report_uri=report_uri,
        metrics=audit_metrics,
        idempotency_key=key,
        trigger_reason=ch_mv.tags.get("trigger_reason"),
        risks=[r.to_dict() for r in risks],
        needs_approval=needs,
        promote_reason=(
            None if not decision.promote
            else f"recovery policy: {decision.recovery['why']}; all evaluated gates passed"
            if decision.policy == gates.POLICY_RECOVERY and decision.recovery
            else f"all evaluated gates passed ({decision.policy})"
        ),
    )
    if not act:
        return result
    if decision.promote:
        mc.log_text(
            ch_mv.run_id, reports.render_model_card(name, ch_version, decision, context), MODEL_CARD_ARTIFACT
        )
        mc.set_model_version_tag(
            name, ch_version, "model_card", tracking.run_artifact_uri(ch_mv.run_id, MODEL_CARD_ARTIFACT)
        )
        mc.set_model_version_tag(name, ch_version, "approval", "pending" if needs else "not_needed")
        if hold:
            return dataclasses.replace(result, action="held")
        return settle(paths, cfg, result, None, airflow_run_id=airflow_run_id, actor=actor)
    else:
        why = "; ".join(f"{g.name}: {g.why}" for g in decision.failed)
        rec = registry.reject(
            paths,
            cfg,
            ch_version,
            reason=f"failed gates - {why}",
            idempotency_key=key,
            metrics=audit_metrics,
            report_uri=report_uri,
            airflow_run_id=airflow_run_id,
            actor=actor,
        )
    return dataclasses.replace(result, action=rec.action, trigger_reason=rec.trigger_reason)


def settle(
    paths: StatePaths,
    cfg: Config,
    held: EvaluationResult,
    answer: approval.Answer | None,
    *,
    airflow_run_id: str | None = None,
    actor: str | None = None,
) -> EvaluationResult:
    """Promote a gate-approved challenger, or record a person's (or the timeout's) rejection of it.

    `answer` None: the promotion needs no approval (or a person ran the CLI). Otherwise the answer's
    actor (`user:<name>`, or `timeout:<default>`) is the audit row's actor, and the answer, comment
    and time go into the audit metrics, the reason, the version's `approval` tag and the report.
    """
    if not held.promote:
        raise EvaluationError(
            f"{held.model_name} v{held.challenger_version} did not pass the gates ({held.action}); nothing to settle"
        )
    done = registry.find_audit(paths, held.idempotency_key)
    if done is not None:
        return _from_audit(done, held.idempotency_key)
    if held.needs_approval and answer is None:
        raise EvaluationError(
            f"{held.model_name} v{held.challenger_version} is a risky promotion "
            f"({', '.join(r['kind'] for r in held.risks)}): it needs an approval answer (approve_promotion)"
        )
    metrics = dict(held.metrics)
    if answer is not None:
        metrics["approval"] = {**metrics.get("approval", {}), "answer": answer.to_dict()}
        _record_answer(paths, cfg, held, answer)
    who = actor if answer is None else answer.actor
    if answer is None or answer.approved:
        rec = registry.promote(
            paths, cfg, held.challenger_version,
            reason=(held.promote_reason or "all evaluated gates passed")
            + ("" if answer is None else f"; {answer.summary}"),
            idempotency_key=held.idempotency_key, metrics=metrics, report_uri=held.report_uri,
            airflow_run_id=airflow_run_id, gated_against=held.champion_version, actor=who,
        )
    else:
        rec = registry.reject(
            paths, cfg, held.challenger_version,
            reason=f"gates passed, promotion not approved - {answer.summary}",
            idempotency_key=held.idempotency_key, metrics=metrics, report_uri=held.report_uri,
            airflow_run_id=airflow_run_id, actor=who,
        )
    return dataclasses.replace(
        held, action=rec.action, promote=rec.action in registry.PROMOTING, trigger_reason=rec.trigger_reason,
        metrics=metrics, approval=None if answer is None else answer.to_dict(),
        failed_gates=held.failed_gates if rec.action != "reject" else [*held.failed_gates, "approval"],
    )


def _record_answer(paths: StatePaths, cfg: Config, held: EvaluationResult, answer: approval.Answer) -> None:
    """The answer on the version (tag `approval`) and at the end of its decision report."""
    import mlflow.artifacts

    mc = tracking.client(paths)
    name, version = held.model_name, held.challenger_version
    mc.set_model_version_tag(name, version, "approval", answer.summary[:500])
    if held.report_uri:
        run_id = tracking.get_version(mc, name, version).run_id
        text = mlflow.artifacts.load_text(held.report_uri)
        if "\n## Approval answer\n" not in text:
            mc.log_text(run_id, text + approval.answer_section(answer), REPORT_ARTIFACT)
