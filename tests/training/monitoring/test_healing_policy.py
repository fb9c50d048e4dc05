"""Healing policy rules of issue 19: budgets per signal, declared calendar events, learned label maturity."""

from __future__ import annotations

import datetime as dt

import pytest

from training.config import Config, ConfigError, with_overrides
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


# --------------------------------------------------------------------------------------------
# calendar: declared events are expected drift
# --------------------------------------------------------------------------------------------


def test_a_breach_inside_a_declared_holiday_is_reported_and_spends_no_trigger(base_config: Config) -> None:
    holiday = {
        "name": "spring_sale", "start": "2026-03-21", "end": "2026-03-23",
        "reason": "three days of triple volume and larger baskets every year",
    }
    cfg = with_overrides(base_config, drift={"calendar": [holiday]})
    d = "data_drift"
    hist = [ev(19), ev(20, d, "prediction_drift"), ev(21, d), ev(22, d)]
    decisions = [decide(cfg, hist[: i + 1], []) for i in range(len(hist))]
    assert not any(x.trigger for x in decisions)
    last = decisions[-1]
    assert last.reason == "calendar_event" and "spring_sale" in last.why and "triple volume" in last.why
    assert last.evidence["calendar"][0]["event"] == "spring_sale"
    assert {e["signal"] for e in decisions[1].evidence["calendar"]} == {d, "prediction_drift"}
    # the day after the event the drift is back to counting, and the event days do not add up to k
    after = decide(cfg, [*hist, ev(23, d)], [])
    assert not after.trigger and after.reason == "k_of_n_not_met"
    assert decide(cfg, [*hist, ev(23, d), ev(24, d)], []).trigger
    # the event excuses only the signals it names: a performance breach inside it still counts
    perf = decide(cfg, [ev(20, "performance"), ev(21, "performance")], [])
    assert perf.trigger and perf.reason == "performance"
    # without the declaration the same days trigger
    assert decide(base_config, hist[:3], []).trigger


def test_calendar_config_is_validated(base_config: Config) -> None:
    ok = {"name": "x", "start": "2026-03-21", "end": "2026-03-23", "reason": "r"}
    with pytest.raises(ConfigError, match="before start"):
        with_overrides(base_config, drift={"calendar": [{**ok, "end": "2026-03-20"}]})
    with pytest.raises(ConfigError, match="more than once"):
        with_overrides(base_config, drift={"calendar": [ok, ok]})
    with pytest.raises(ConfigError, match="reason"):
        with_overrides(base_config, drift={"calendar": [{k: v for k, v in ok.items() if k != "reason"}]})
    with pytest.raises(ConfigError, match="excuses"):
        with_overrides(base_config, drift={"calendar": [{**ok, "excuses": ["volume"]}]})

