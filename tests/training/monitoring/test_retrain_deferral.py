"""The evidence-sufficiency rule: a drift retrain with too few matured post-onset days is deferred,
recorded, merged with repeated triggers, and trained by the first later run whose data has enough -
against real DVC data versions and the real SQLite ops ledger (no MLflow, no training: seconds)."""

from __future__ import annotations

import datetime as dt

import pytest

from training.config import with_overrides
from training.monitoring import retrain_deferral
from training.storage import versioning

REASON = "drift_monitor:performance"


@pytest.fixture
def rule_cfg(train_cfg):
    # holdout 4 days in the test windows; wait for 6 matured days from the onset
    return with_overrides(train_cfg, training={"drift_aware": {"min_post_onset_days": 6}})


@pytest.fixture
def versions(state, training_frame, synth):
    """Data versions as of each of the last 4 days (the newest holds every day)."""
    last = max(training_frame["batch_date"])
    out = {}
    for back in range(3, -1, -1):
        upto = last - dt.timedelta(days=back)
        frame = training_frame[training_frame["batch_date"] <= upto]
        out[upto] = versioning.get_version(state, synth.publish(state, frame, f"upto-{upto}"))
    return out


def test_needed_days_is_at_least_the_holdout_and_one_more(rule_cfg, train_cfg):
    assert retrain_deferral.needed_days(rule_cfg) == 6
    low = with_overrides(train_cfg, training={"drift_aware": {"min_post_onset_days": 2}})
    assert retrain_deferral.needed_days(low) == train_cfg.windows.holdout_days + 1


def test_drift_retrain_waits_for_evidence_then_trains_on_a_features_event(state, rule_cfg, versions):
    days = sorted(versions)
    onset = days[0] - dt.timedelta(days=3)  # 4 matured post-onset days in the oldest version, 7 in the newest
    evidence = {"onset_window_start": onset.isoformat(), "signal": "performance"}

    first = retrain_deferral.plan(state, rule_cfg, REASON, evidence, versions[days[0]], airflow_run_id="r1")
    assert first is not None and not first.train and first.reason == "deferred"
    assert "4 matured day(s)" in first.why and "min_post_onset_days needs 6" in first.why
    pend = retrain_deferral.pending(state)
    assert pend is not None and pend["id"] == first.deferral_id and pend["onset"] == onset
    assert pend["reason"] == REASON and pend["evidence"] == evidence and pend["airflow_run_id"] == "r1"

    # a repeated trigger while waiting is merged into the pending row, not queued as a second retrain
    again = retrain_deferral.plan(state, rule_cfg, REASON, evidence, versions[days[1]])
    assert again is not None and not again.train and again.deferral_id == first.deferral_id
    assert retrain_deferral.pending(state)["triggers"] == 2
    assert len(retrain_deferral.deferrals(state)) == 1

    # the daily features event (no reason) at 6 post-onset days: the deferred retrain trains now,
    # with the trigger's reason and evidence and a note of the deferral
    due = retrain_deferral.plan(state, rule_cfg, None, None, versions[days[2]])
    assert due is not None and due.train and due.reason == REASON and due.deferral_id == first.deferral_id
    assert due.evidence["onset_window_start"] == onset.isoformat()
    assert due.evidence["deferral"]["triggers"] == 2 and due.evidence["deferral"]["post_onset_days_now"] == 6

    retrain_deferral.resolve(state, first.deferral_id, "7", versions[days[2]].data_version)
    assert retrain_deferral.pending(state) is None
    row = retrain_deferral.deferrals(state)[0]
    assert row["status"] == "trained" and row["trained_version"] == "7"
    # nothing pending any more: a later features event goes back to the cadence rule
    assert retrain_deferral.plan(state, rule_cfg, None, None, versions[days[3]]) is None


def test_a_features_event_before_the_evidence_has_matured_keeps_waiting(state, rule_cfg, versions):
    days = sorted(versions)
    onset = days[0] - dt.timedelta(days=1)  # 2 post-onset days now, 5 in the newest version: still < 6
    evidence = {"onset_window_start": onset.isoformat()}
    assert not retrain_deferral.plan(state, rule_cfg, REASON, evidence, versions[days[0]]).train
    later = retrain_deferral.plan(state, rule_cfg, None, None, versions[days[3]])
    assert later is not None and not later.train and "5 of 6" in later.why
    assert retrain_deferral.pending(state)["post_onset_days"] == 2  # as recorded at the trigger


def test_enough_evidence_at_the_trigger_trains_at_once_and_no_onset_is_not_this_rules_business(
    state, rule_cfg, versions
):
    newest = versions[max(versions)]
    onset = max(versions) - dt.timedelta(days=6)  # 7 matured post-onset days
    now = retrain_deferral.plan(state, rule_cfg, REASON, {"onset_window_start": onset.isoformat()}, newest)
    assert now is not None and now.train and now.deferral_id is None and "7 matured day(s)" in now.why
    assert retrain_deferral.plan(state, rule_cfg, REASON, {"drift_share": 0.4}, newest) is None
    assert retrain_deferral.plan(state, rule_cfg, None, None, newest) is None
    off = with_overrides(rule_cfg, training={"drift_aware": {"enabled": False}})
    assert retrain_deferral.plan(state, off, REASON, {"onset_window_start": max(versions).isoformat()}, newest) is None
    assert retrain_deferral.deferrals(state) == []
