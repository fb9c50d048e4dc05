"""Which promotions wait for a person: one test per risk kind, the modes, the config's validation,
and reading a Human-in-the-loop answer (a person's, or the timeout's default)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from training.config import ApprovalSpec, ConfigError, with_overrides
from training.model import approval

SIG = [{"name": "amount", "type": "double"}, {"name": "channel", "type": "string"}]


def _classify(spec: ApprovalSpec | None = None, **given):
    args = {"first_champion": False, "recovery": False, "challenger_signature": SIG,
            "champion_signature": SIG, "shift": 0.05, **given}
    return approval.classify(spec or ApprovalSpec(), **args)


def _kinds(risks) -> list[str]:
    return [r.kind for r in risks]


def test_an_ordinary_promotion_has_no_risk_and_is_not_asked():
    risks = _classify()
    assert risks == [] and not approval.needs_approval(ApprovalSpec(), risks)


def test_first_champion_is_risky():
    risks = _classify(first_champion=True, champion_signature=None, shift=None)
    assert _kinds(risks) == ["first_champion"] and approval.needs_approval(ApprovalSpec(), risks)


def test_recovery_policy_is_risky():
    assert _kinds(_classify(recovery=True)) == ["recovery"]


def test_signature_change_is_risky_and_names_the_columns():
    changed = [{"name": "amount", "type": "long"}, {"name": "channel", "type": "string"}, {"name": "mcc", "type": "string"}]
    (risk,) = _classify(challenger_signature=changed)
    assert risk.kind == "signature_change" and "mcc" in risk.why and "amount" in risk.why
    # the same columns in another order are the same schema
    assert _classify(challenger_signature=list(reversed(SIG))) == []


def test_score_shift_above_the_threshold_is_risky():
    spec = ApprovalSpec(score_shift_threshold=0.3)
    assert _classify(spec, shift=0.3) == []  # at the threshold: not above it
    (risk,) = _classify(spec, shift=0.31)
    assert risk.kind == "score_shift" and "0.310" in risk.why


def test_always_ask_and_never_ask():
    always = ApprovalSpec(mode="always")
    risks = _classify(always)
    assert _kinds(risks) == ["always_ask"] and approval.needs_approval(always, risks)
    never = ApprovalSpec(mode="never")
    risky = _classify(never, first_champion=True, recovery=True)
    assert _kinds(risky) == ["first_champion", "recovery"]  # still reported (report, audit)...
    assert not approval.needs_approval(never, risky)  # ...but nobody is asked


def test_score_shift_is_the_ks_statistic():
    rng = np.random.default_rng(0)
    same = approval.score_shift(rng.beta(1, 20, 5000), rng.beta(1, 20, 5000))
    moved = approval.score_shift(rng.beta(1, 20, 5000), rng.beta(5, 5, 5000))
    assert same < 0.05 and moved > 0.8
    assert approval.score_shift(np.zeros(10), np.ones(10)) == 1.0
    with pytest.raises(ValueError, match="empty"):
        approval.score_shift(np.array([]), np.ones(3))


def test_config_section_is_validated(base_config):
    cfg = with_overrides(base_config, approval={"mode": "always", "timeout_hours": 0.5, "on_timeout": "approve"})
    assert cfg.approval.mode == "always" and cfg.approval.on_timeout == "approve"
    for bad, where in (({"mode": "sometimes"}, "approval.mode"), ({"score_shift_threshold": 1.5}, "score_shift_threshold"),
                       ({"timeout_hours": 0}, "timeout_hours"), ({"on_timeout": "ask_again"}, "on_timeout"),
                       ({"assignee": "x"}, "approval.assignee")):
        with pytest.raises(ConfigError, match=where):
            with_overrides(base_config, approval=bad)


def test_a_persons_answer_and_the_timeout_default():
    at = dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC)
    person = approval.answer_from_response(
        {"chosen_options": ["Approve"], "params_input": {"comment": " looks right "},
         "responded_by_user": {"id": "7", "name": "alice"}, "responded_at": at}, ApprovalSpec())
    assert (person.approved, person.actor, person.comment, person.timed_out) == (True, "user:alice", "looks right", False)
    assert person.summary == "approved by user:alice at 2026-12-07T09:30:00+00:00: looks right"
    timeout = approval.answer_from_response(
        {"chosen_options": ["Reject"], "params_input": {"comment": ""}, "responded_by_user": None, "responded_at": at},
        ApprovalSpec(on_timeout="reject"))
    assert (timeout.approved, timeout.actor, timeout.timed_out) == (False, "timeout:reject", True)
    assert "by default" in timeout.summary
    with pytest.raises(ValueError, match="exactly one"):
        approval.answer_from_response({"chosen_options": ["Approve", "Reject"]}, ApprovalSpec())


def test_the_question_is_told_with_the_risks_the_default_and_where_to_answer(base_config):
    from training import notify

    cfg = with_overrides(base_config, approval={"timeout_hours": 6, "on_timeout": "reject"})
    held = {"model_name": "card_fraud", "challenger_version": "4", "champion_version": "3", "policy": "recovery",
            "trigger_reason": "drift_monitor:performance", "idempotency_key": "k#decision",
            "report_uri": "runs:/abc/decision/decision_report.md",
            "risks": [{"kind": "recovery", "why": "recovery policy: the champion collapsed"}]}
    msg = notify.approval_requested(cfg, held, answer_url="http://airflow.test/dags/train_model/runs/r/tasks/"
                                    "approve_promotion/required_actions", run_url="http://airflow.test/dags/train_model/runs/r")
    assert msg.kind == "approval_requested" and msg.dedupe_key == "approval:k#decision"
    assert msg.subject == "[closedloop card_fraud] approve v4 as champion? (recovery)"
    assert "reject after 6 h without an answer" in msg.body and "recovery policy" in msg.body
    assert msg.links["answer here"].endswith("/required_actions") and "hitlDetails" in msg.next_action
