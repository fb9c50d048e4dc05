"""Healing policy rules of issue 19: budgets per signal, declared calendar events, learned label maturity."""

from __future__ import annotations

import datetime as dt

from training.config import Config
from training.monitoring import retrain_trigger
from training.monitoring.retrain_trigger import SIGNALS, Decision, PastTrigger, Signal, WindowEvidence

D0 = dt.date(2026, 3, 1)
CHAMPION = "3"


def ev(day: int, *breach: str) -> WindowEvidence:
    end = D0 + dt.timedelta(days=day)
    signals = {
        s: Signal(s, "breach" if s in breach else "ok", 0.5 if s in breach else 0.0, 0.15, f"{s} test")
        for s in SIGNALS
    }
    return WindowEvidence(end, end, CHAMPION, (CHAMPION,), 3_000, 3_000, 40, signals)


def decide(cfg: Config, hist: list[WindowEvidence], past: list[PastTrigger], last=None) -> Decision:
    return retrain_trigger.decide(
        cfg,
        hist,
        now_window_end=hist[-1].window_end,
        last_promotion_or_retrain_at=last,
        retrain_in_flight=False,
        current_champion_version=CHAMPION,
        past_triggers=past,
    )


# --------------------------------------------------------------------------------------------
# budgets per signal
# --------------------------------------------------------------------------------------------


def test_drift_rejections_never_block_a_matured_performance_breach(base_config: Config) -> None:
    # two drift-triggered retrains were rejected: data drift is in backoff and at its storm cap
    past = [
        PastTrigger(D0 + dt.timedelta(days=10), "rejected", ("data_drift",)),
        PastTrigger(D0 + dt.timedelta(days=18), "rejected", ("prediction_drift",)),
    ]
    perf = decide(base_config, [ev(20, "performance"), ev(21, "performance")], past)
    assert perf.trigger and perf.reason == "performance"
    budget = perf.evidence["guards"]["storm"]
    assert budget["budgets"] == "per signal" and budget["signal"] == "performance"
    assert budget["by_signal"]["prediction_drift"]["blocked"] == "backoff"
    assert budget["by_signal"]["performance"]["blocked"] is None
    # the same prediction drift stays blocked by its own backoff
    pred = decide(base_config, [ev(20, "prediction_drift"), ev(21, "prediction_drift")], past)
    assert not pred.trigger and pred.reason == "backoff" and "budget of prediction_drift" in pred.why
    # performance and prediction drift together: fires on performance alone, saying why
    both = decide(
        base_config, [ev(20, "performance", "prediction_drift"), ev(21, "performance", "prediction_drift")], past
    )
    assert both.trigger and both.reason == "performance"
    assert "prediction_drift is out of budget" in both.why
    assert "prediction_drift" in both.evidence["guards"]["storm"]["blocked_signals"]


def test_performance_has_its_own_backoff_and_cap(base_config: Config) -> None:
    rejected = [PastTrigger(D0 + dt.timedelta(days=18), "rejected", ("performance",))]
    got = decide(base_config, [ev(20, "performance"), ev(21, "performance")], rejected)
    assert not got.trigger and got.reason == "backoff"
    # ... which data drift does not share
    assert decide(base_config, [ev(20, "data_drift"), ev(21, "data_drift")], rejected).trigger
    capped = [
        PastTrigger(D0 + dt.timedelta(days=5), "promoted", ("performance", "data_drift")),
        PastTrigger(D0 + dt.timedelta(days=12), "promoted", ("performance",)),
    ]
    got = decide(base_config, [ev(20, "performance"), ev(21, "performance")], capped)
    assert not got.trigger and got.reason == "storm_cap"
    # a trigger row that does not name its signals (older ledgers) counts against every signal
    legacy = [PastTrigger(D0 + dt.timedelta(days=18), "rejected")]
    assert decide(base_config, [ev(20, "performance"), ev(21, "performance")], legacy).reason == "backoff"
    assert PastTrigger.signals_of("data_drift+performance") == ("data_drift", "performance")
    assert PastTrigger.signals_of("cooldown") == ()
