"""Which gate-approved promotions wait for a person, and what the person (or the timeout) answered.

The gates decide whether a challenger *may* be promoted; this module decides whether a person must
say yes first (`approval:` in the config). Pure functions, no Airflow import: `evaluate` classifies
the risks it saw, train_model's `approve_promotion` (an Airflow Human-in-the-loop task) asks, and
`evaluate.settle` turns the answer into the audited promotion or rejection.

Risk kinds: `first_champion` (nothing to compare with), `recovery` (the floors were waived for a
collapsed champion), `signature_change` (the input schema differs from the champion's, accepted by
an override), `score_shift` (the challenger's holdout scores are distributed unlike the champion's,
by the Kolmogorov-Smirnov statistic) and `always_ask` (the model is configured so).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from training.config import ApprovalSpec

RiskKind = Literal["first_champion", "recovery", "signature_change", "score_shift", "always_ask"]
APPROVE = "Approve"
REJECT = "Reject"


@dataclass(frozen=True)
class Risk:
    kind: RiskKind
    why: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def score_shift(champion_scores: np.ndarray, challenger_scores: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic of two score samples (0: same distribution, 1: disjoint)."""
    from scipy.stats import ks_2samp

    a = np.asarray(champion_scores, dtype="float64")
    b = np.asarray(challenger_scores, dtype="float64")
    if a.size == 0 or b.size == 0:
        raise ValueError("score_shift needs scores of both models on the holdout (got an empty array)")
    return float(ks_2samp(a, b).statistic)


def _signature_key(sig: Sequence[Mapping[str, Any]]) -> set[tuple[str, str]]:
    return {(str(c["name"]), str(c.get("type"))) for c in sig}


def classify(
    spec: ApprovalSpec,
    *,
    first_champion: bool,
    recovery: bool,
    challenger_signature: Sequence[Mapping[str, Any]],
    champion_signature: Sequence[Mapping[str, Any]] | None,
    shift: float | None,
) -> list[Risk]:
    """The risks of promoting this challenger (empty: an ordinary promotion).

    `shift` is `score_shift(champion, challenger)` on the holdout (None without a champion).
    """
    risks: list[Risk] = []
    if first_champion:
        risks.append(Risk("first_champion", "no champion yet: nothing serves that this model could be compared with"))
    if recovery:
        risks.append(Risk("recovery", "recovery policy: the champion collapsed and the floors were waived"))
    if champion_signature is not None:
        new, old = _signature_key(challenger_signature), _signature_key(champion_signature)
        if new != old:
            added = sorted(n for n, _ in new - old)
            removed = sorted(n for n, _ in old - new)
            risks.append(Risk("signature_change",
                              f"input schema differs from the champion's (added/retyped {added}, removed/retyped {removed})"))
    if shift is not None and shift > spec.score_shift_threshold:
        risks.append(Risk("score_shift", f"holdout score distribution moved: KS {shift:.3f} > "
                                         f"approval.score_shift_threshold {spec.score_shift_threshold}"))
    if spec.mode == "always":
        risks.append(Risk("always_ask", "approval.mode is always: every promotion of this model is asked"))
    return risks


def needs_approval(spec: ApprovalSpec, risks: Sequence[Risk]) -> bool:
    """Whether a gate-approved promotion with these risks waits for a person."""
    if spec.mode == "never":
        return False
    return spec.mode == "always" or bool(risks)


@dataclass(frozen=True)
class Answer:
    """What decided a held promotion: a person's choice, or the configured default at the timeout."""

    approved: bool
    actor: str  # user:<name> | timeout:<approve|reject>
    at: str  # ISO time of the answer
    comment: str
    timed_out: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        verb = "approved" if self.approved else "rejected"
        if self.timed_out:
            return f"{verb} by default: no answer by {self.at} ({self.actor})"
        return f"{verb} by {self.actor} at {self.at}" + (f": {self.comment}" if self.comment else "")


def answer_from_response(response: Mapping[str, Any], spec: ApprovalSpec) -> Answer:
    """An `Answer` from a Human-in-the-loop task's result (`chosen_options`, `params_input`,
    `responded_by_user`, `responded_at`): no responding user means the timeout applied the default."""
    chosen = list(response.get("chosen_options") or [])
    if len(chosen) != 1 or chosen[0] not in (APPROVE, REJECT):
        raise ValueError(f"an approval answer must choose exactly one of {APPROVE!r}, {REJECT!r}; got {chosen!r}")
    user = response.get("responded_by_user") or None
    at = response.get("responded_at")
    at_text = at.isoformat() if isinstance(at, dt.datetime) else str(at or dt.datetime.now(dt.UTC).isoformat())
    comment = str((response.get("params_input") or {}).get("comment") or "").strip()
    if user is None:
        return Answer(approved=chosen[0] == APPROVE, actor=f"timeout:{spec.on_timeout}", at=at_text,
                      comment=comment, timed_out=True)
    name = user.get("name") or user.get("id") or "unknown"
    return Answer(approved=chosen[0] == APPROVE, actor=f"user:{name}", at=at_text, comment=comment, timed_out=False)


def report_section(spec: ApprovalSpec, risks: Sequence[Risk], asked: bool, shift: float | None) -> str:
    """The decision report's approval section: the risks seen, and whether a person is asked."""
    lines = ["", "## Approval", ""]
    if asked:
        default = f"{spec.on_timeout} after {spec.timeout_hours:g} h without an answer"
        lines.append(f"**A person must approve this promotion** (approval.mode `{spec.mode}`; default: {default}).")
    elif risks:
        lines.append(f"Risky, but nobody is asked: approval.mode is `{spec.mode}`, or `evaluate` was run by hand "
                     "(outside train_model).")
    else:
        lines.append("No promotion risk: promoted automatically.")
    lines.append("")
    lines += [f"- `{r.kind}`: {r.why}" for r in risks] or ["- none"]
    if shift is not None:
        lines += ["", f"Score distribution shift (KS, champion vs challenger on the holdout): {shift:.4f} "
                      f"(threshold {spec.score_shift_threshold})"]
    return "\n".join(lines) + "\n"


def answer_section(answer: Answer) -> str:
    """Appended to the decision report once the held promotion is settled."""
    return "\n".join([
        "", "## Approval answer", "",
        f"- decision: **{'approved' if answer.approved else 'rejected'}**",
        f"- by: {answer.actor}" + (" (no answer: the configured default)" if answer.timed_out else ""),
        f"- at: {answer.at}",
        f"- comment: {answer.comment or '—'}",
    ]) + "\n"
