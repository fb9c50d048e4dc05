"""training.monitoring windows/retrain_trigger/decision_log: false alarms, real shifts, concept drift, storm guards, the monitoring table."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from training.config import Config, with_overrides
from training.model.metrics import compute_metrics
from training.monitoring import decision_log, retrain_trigger
from training.monitoring.retrain_trigger import (
    SIGNALS,
    Decision,
    MonitoringError,
    PastTrigger,
    Signal,
    WindowEvidence,
)
from training.monitoring.windows import (
    MonitoringDataError,
    evaluate_window,
    load_current_window,
    select_reference,
)
from training.paths import StatePaths
from training.storage.warehouse import connect

CATEGORIES = np.array(
    [
        "grocery",
        "electronics",
        "travel",
        "gaming",
        "jewelry",
        "fuel",
        "restaurants",
        "digital_goods",
        "fashion",
        "pharmacy",
    ],
    dtype=object,
)
CATEGORY_P = np.array([0.22, 0.08, 0.06, 0.06, 0.03, 0.15, 0.17, 0.07, 0.10, 0.06])
CATEGORY_RATE = np.array([0.005, 0.03, 0.02, 0.03, 0.04, 0.004, 0.006, 0.035, 0.01, 0.005])
HOUR_P = np.array([1, 1, 1, 1, 1, 2, 3, 5, 6, 7, 7, 8, 9, 8, 7, 7, 7, 8, 8, 7, 5, 4, 3, 2], float)
HOUR_P /= HOUR_P.sum()
D0 = dt.date(2026, 3, 1)
CHAMPION = "3"


def window(
    n: int,
    seed: int,
    *,
    amount_factor: float = 1.0,
    new_category_share: float = 0.0,
    concept: bool = False,
    version: str = CHAMPION,
) -> pd.DataFrame:
    """A day of scored transactions: model features, the champion's `score`, the true `is_fraud`.

    Fraud follows a fixed pattern (new device/country, online, unusual amount for the customer,
    bursts, risky categories) and the champion's score is that pattern plus noise. With `concept`
    the features and scores stay the same but fraud follows another pattern (in-store, quiet
    customers, small baskets) - visible only through the labels.
    """
    rng = np.random.default_rng(seed)
    cat = rng.choice(len(CATEGORIES), n, p=CATEGORY_P)
    online = rng.random(n) < 0.6
    amount = rng.lognormal(3.2, 1.0, n) * amount_factor
    ratio = rng.lognormal(0.0, 0.5, n)
    t1 = rng.poisson(0.3, n)
    new_device = rng.random(n) < np.where(online, 0.10, 0.01)
    new_country = rng.random(n) < 0.05
    categories = CATEGORIES[cat]
    if new_category_share:
        categories = np.where(rng.random(n) < new_category_share, "crypto_exchange", categories)
    logit = -8.0 + 4.0 * new_device + 3.0 * new_country + 1.0 * online + 2.0 * np.log(ratio) + 1.2 * t1
    logit += 40 * CATEGORY_RATE[cat]
    score = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.5, n))))
    if concept:
        logit = -5.2 + 1.5 * ~online + 1.0 * (t1 == 0) - 0.8 * np.log(ratio)
    return pd.DataFrame(
        {
            "transaction_id": [f"tx-{seed}-{i:07d}" for i in range(n)],
            "amount": amount,
            "log_amount": np.log1p(amount),
            "hour_of_day": rng.choice(24, n, p=HOUR_P),
            "is_weekend": (rng.random(n) < 2 / 7).astype(int),
            "tx_count_1h": t1,
            "tx_count_24h": t1 + rng.poisson(3.0, n),
            "amount_to_customer_avg": ratio * amount_factor,
            "is_new_country": new_country.astype(int),
            "is_new_device": new_device.astype(int),
            "category_fraud_rate": CATEGORY_RATE[cat] * (1 + rng.normal(0, 0.05, n)),
            "channel": np.where(online, "online", "in_store"),
            "merchant_category": categories,
            "score": score,
            "model_version": version,
            "is_fraud": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
        }
    )


def labels_of(frame: pd.DataFrame, matured: bool | np.ndarray = True) -> pd.DataFrame:
    return pd.DataFrame(
        {"transaction_id": frame.transaction_id, "is_fraud": frame.is_fraud, "matured": matured}
    )


@pytest.fixture(scope="module")
def champion(base_config: Config) -> dict:
    """The champion's reference: training features, holdout scores (not row-aligned), holdout metrics."""
    training = window(20_000, seed=1)
    holdout = window(60_000, seed=2)
    metrics = compute_metrics(holdout.is_fraud, holdout.score, base_config.model)
    return {"features": training, "scores": holdout.score.to_numpy(), "holdout_metrics": metrics}


def evaluate(
    paths: StatePaths, cfg: Config, champion: dict, frame: pd.DataFrame, day: int, **kw
) -> WindowEvidence:
    end = D0 + dt.timedelta(days=day)
    return evaluate_window(
        paths,
        cfg,
        end,
        end,
        champion["features"],
        champion["scores"],
        champion["holdout_metrics"],
        frame,
        kw.pop("labels", labels_of(frame)),
        champion_version=kw.pop("champion_version", CHAMPION),
        save_html=kw.pop("save_html", False),
    )


def run_policy(cfg: Config, windows: list[WindowEvidence], **guards) -> list[Decision]:
    """Decide after each window as the DAG would: history so far, the latest last."""
    decisions = []
    for i, w in enumerate(windows):
        decisions.append(
            retrain_trigger.decide(
                cfg,
                windows[: i + 1],
                now_window_end=w.window_end,
                last_promotion_or_retrain_at=guards.get("last"),
                retrain_in_flight=guards.get("in_flight", False),
                current_champion_version=CHAMPION,
            )
        )
    return decisions


# --------------------------------------------------------------------------------------------
# real Evidently + real metrics on simulated windows
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stable_windows(tmp_path_factory, base_config: Config, champion: dict) -> list[WindowEvidence]:
    """30 days from an unchanged world: fresh samples of 2-5k rows, all labels matured."""
    paths = StatePaths(tmp_path_factory.mktemp("stable"))
    sizes = [2_000, 3_000, 5_000]
    return [
        evaluate(paths, base_config, champion, window(sizes[i % 3], seed=100 + i), day=i) for i in range(30)
    ]


def test_false_alarms_30_stable_windows_never_trigger(base_config: Config, stable_windows) -> None:
    decisions = run_policy(base_config, stable_windows)
    assert [d.reason for d in decisions if d.trigger] == []
    breaches = {s: sum(w.signal(s).breach for w in stable_windows) for s in SIGNALS}
    # not only no trigger: prediction drift never fires; data drift at most once (the critical
    # log_amount threshold is tight on purpose, 0.06), performance at most once
    assert breaches["data_drift"] <= 1 and breaches["prediction_drift"] == 0, breaches
    assert breaches["performance"] <= 1, breaches
    assert all(w.signal("performance").status in ("ok", "breach") for w in stable_windows)
    assert all(w.drift_share is not None and w.drift_share <= 1 / 9 for w in stable_windows)
    assert all(w.signal("data_drift").reason.count("critical") <= 1 for w in stable_windows)


def test_covariate_shift_breaches_data_drift_and_triggers_on_the_second_window(
    state: StatePaths, base_config: Config, champion: dict, stable_windows
) -> None:
    shifted = [
        evaluate(
            state,
            base_config,
            champion,
            window(3_000, seed=500 + i, amount_factor=1.6, new_category_share=0.1),
            day=30 + i,
            save_html=(i == 0),
        )
        for i in range(2)
    ]
    first = shifted[0]
    assert first.signal("data_drift").status == "breach"
    assert {"amount", "log_amount", "merchant_category"} <= {f.feature for f in first.features if f.drifted}
    assert "amount" in first.signal("data_drift").reason
    # the Evidently report of the window is on disk under the state dir
    assert first.report_path is not None
    report = state.reports / "drift" / f"v{CHAMPION}" / f"{first.window_start}_{first.window_end}.html"
    assert first.report_path == str(report) and "merchant_category" in report.read_text(encoding="utf-8")

    decisions = run_policy(base_config, [*stable_windows[-5:], *shifted])
    assert [d.trigger for d in decisions] == [False] * 5 + [False, True]
    assert decisions[-2].reason == "k_of_n_not_met"
    assert decisions[-1].reason == "data_drift"
    ev = decisions[-1].evidence["signals"]["data_drift"]
    assert (ev["breaches"], ev["considered"], ev["fired"]) == (2, 3, True)
    assert [w["status"] for w in ev["windows"]] == ["ok", "breach", "breach"]
    assert ev["windows"][-1]["threshold"] == base_config.drift.drift_share_threshold
    conf = decisions[-1].conf()
    assert conf["reason"] == "drift_monitor:data_drift" and json.dumps(conf["evidence"])


def test_concept_drift_shows_only_in_matured_performance(
    state: StatePaths, base_config: Config, champion: dict, stable_windows
) -> None:
    drifted = [
        evaluate(state, base_config, champion, window(3_000, seed=700 + i, concept=True), day=40 + i)
        for i in range(2)
    ]
    for w in drifted:
        assert w.signal("performance").status == "breach", w.signal("performance")
        assert w.signal("data_drift").status == "ok" and w.signal("prediction_drift").status == "ok"
        assert w.performance["pr_auc_upper"] < w.signal("performance").threshold
    decisions = run_policy(base_config, [*stable_windows[-3:], *drifted])
    assert decisions[-1].trigger and decisions[-1].reason == "performance"
    assert "pr_auc" in decisions[-1].why


def test_min_sample_rules_make_signals_insufficient_never_a_breach(
    state: StatePaths, base_config: Config, champion: dict
) -> None:
    # 600 rows of a heavily shifted world: would breach, but is below min_rows
    small = window(600, seed=900, amount_factor=3.0, new_category_share=0.3)
    w = evaluate(state, base_config, champion, small, day=50)
    assert (
        w.signal("data_drift").status == "insufficient"
        and w.signal("prediction_drift").status == "insufficient"
    )
    assert "600 rows" in w.signal("data_drift").reason and w.report_path is None
    assert w.drift_share is None and w.features == ()
    # enough rows, but the labels of a concept-drifted window have not matured yet
    concept = window(3_000, seed=901, concept=True)
    unmatured = evaluate(
        state, base_config, champion, concept, day=51, labels=labels_of(concept, matured=False)
    )
    assert unmatured.signal("performance").status == "insufficient"
    assert (unmatured.matured_rows, unmatured.positives) == (0, 0)
    # only a few matured frauds
    few = concept.assign(is_fraud=0)
    few.loc[few.index[:5], "is_fraud"] = 1
    w_few = evaluate(state, base_config, champion, few, day=52)
    assert w_few.signal("performance").status == "insufficient" and w_few.positives == 5
    assert "min_positives 10" in w_few.signal("performance").reason
    no_labels = evaluate(state, base_config, champion, concept, day=53, labels=None)
    assert no_labels.signal("performance").status == "unavailable"
    decisions = run_policy(base_config, [w, unmatured, w_few, no_labels])
    assert not any(d.trigger for d in decisions)
    assert decisions[-1].reason == "no_breach"


# --------------------------------------------------------------------------------------------
# the policy alone (synthetic evidence)
# --------------------------------------------------------------------------------------------


def ev(day: int, *breach: str, champion: str = CHAMPION, scored_by: str | None = None) -> WindowEvidence:
    end = D0 + dt.timedelta(days=day)
    signals = {
        s: Signal(s, "breach" if s in breach else "ok", 0.5 if s in breach else 0.0, 0.15, f"{s} test")
        for s in SIGNALS
    }
    return WindowEvidence(end, end, champion, (scored_by or champion,), 3_000, 3_000, 40, signals)


def decide(cfg: Config, hist: list[WindowEvidence], *, last=None, in_flight=False, champion=CHAMPION):
    return retrain_trigger.decide(
        cfg,
        hist,
        now_window_end=hist[-1].window_end,
        last_promotion_or_retrain_at=last,
        retrain_in_flight=in_flight,
        current_champion_version=champion,
    )


def test_k_of_n_counts_the_same_signal_including_the_latest(base_config: Config) -> None:
    d = "data_drift"
    assert decide(base_config, [ev(1, d), ev(2), ev(3, d)]).trigger  # 2 of 3
    assert not decide(base_config, [ev(1, d), ev(2), ev(3), ev(4, d)]).trigger  # 1 of the last 3
    latest_ok = decide(base_config, [ev(1, d), ev(2, d), ev(3)])
    assert not latest_ok.trigger and latest_ok.reason == "no_breach"  # the latest must breach
    mixed = decide(base_config, [ev(1, d), ev(2, "performance"), ev(3, "prediction_drift")])
    assert not mixed.trigger and mixed.reason == "k_of_n_not_met"  # unrelated one-offs do not add up
    both = decide(base_config, [ev(1, d, "performance"), ev(2, d, "performance")])
    assert both.trigger and both.reason == "data_drift+performance"
    strict = with_overrides(base_config, drift={"k_of_n": {"k": 3, "n": 5}})
    assert not decide(strict, [ev(1, d), ev(2, d)]).trigger
    assert decide(strict, [ev(1, d), ev(2), ev(3, d), ev(4), ev(5, d)]).trigger


def test_windows_of_an_older_champion_are_ignored(base_config: Config) -> None:
    d = "data_drift"
    old = [ev(1, d, champion="2"), ev(2, d, champion="2")]
    # evaluated against champion 3 but scored by 2 (promotion happened after the batch was scored)
    scored_by_old = ev(3, d, scored_by="2")
    got = decide(base_config, [*old, scored_by_old, ev(4, d)])
    assert not got.trigger and got.reason == "k_of_n_not_met"
    assert got.evidence["signals"][d]["considered"] == 1
    assert {i["window_end"] for i in got.evidence["ignored_windows"]} == {
        "2026-03-02",
        "2026-03-03",
        "2026-03-04",
    }
    latest_old = decide(base_config, [ev(4, d), scored_by_old])
    assert (
        not latest_old.trigger
        and latest_old.reason == "window_not_eligible"
        and "scored by v2" in latest_old.why
    )
    mixed = WindowEvidence(D0, D0, CHAMPION, ("2", "3"), 3_000, 0, 0, ev(0, d).signals)
    assert mixed.scored_by_version is None
    assert decide(base_config, [mixed]).reason == "window_not_eligible"


def test_cooldown_and_in_flight_block_and_are_explained(base_config: Config) -> None:
    d = "data_drift"
    hist = [ev(5, d), ev(6, d)]  # windows end 2026-03-06 and -07
    blocked = decide(base_config, hist, in_flight=True)
    assert not blocked.trigger and blocked.reason == "retrain_in_flight" and "already running" in blocked.why
    assert blocked.evidence["signals"][d]["fired"]  # the evidence still says what would have fired
    # last promotion 2026-03-04, latest window ends 2026-03-07: 3 days >= cooldown_days 3, allowed
    assert decide(base_config, hist, last=dt.datetime(2026, 3, 4, 12, 0)).trigger
    # last promotion 2026-03-05: 2 days before the latest window -> cooldown
    cooling = decide(base_config, hist, last=dt.date(2026, 3, 5))
    assert not cooling.trigger and cooling.reason == "cooldown" and "2 day(s) ago" in cooling.why
    assert cooling.evidence["guards"]["cooldown_active"] is True
    # evidence from before the last retrain is not reused
    stale = decide(base_config, hist, last="2026-03-06")
    assert not stale.trigger and stale.evidence["signals"][d]["considered"] == 1


def simulate(cfg: Config, days: int, *, retrain_days: int, promotes: bool) -> list[int]:
    """Persistent drift for `days` daily windows; each trigger starts a retrain of `retrain_days`.

    If the retrain promotes, the new champion (trained on the drifted data) serves from the next
    day and no longer sees drift; otherwise the gates reject it, the old champion stays and drift
    keeps breaching. Past triggers and their outcomes are passed as the DAG passes them.
    Returns the days on which the policy triggered.
    """
    champion, version = CHAMPION, int(CHAMPION)
    history: list[WindowEvidence] = []
    triggers: list[int] = []
    past: list[PastTrigger] = []
    last: dt.date | None = None
    running_until: int | None = None
    promote_on: int | None = None
    for day in range(1, days + 1):
        if running_until is not None and day > running_until:
            past[-1] = PastTrigger(past[-1].window_end, "promoted" if promotes else "rejected")
            running_until = None
        if promote_on == day:
            version += 1
            champion, promote_on = str(version), None
            last = D0 + dt.timedelta(days=day - 1)
        in_flight = running_until is not None and day <= running_until
        breach = ("data_drift",) if champion == CHAMPION else ()
        history.append(ev(day, *breach, champion=champion))
        decision = retrain_trigger.decide(
            cfg,
            history,
            now_window_end=history[-1].window_end,
            last_promotion_or_retrain_at=last,
            retrain_in_flight=in_flight,
            current_champion_version=champion,
            past_triggers=list(past),
        )
        if decision.trigger:
            triggers.append(day)
            past.append(PastTrigger(D0 + dt.timedelta(days=day), "pending"))
            last = D0 + dt.timedelta(days=day)
            running_until = day + retrain_days - 1
            if promotes:
                promote_on = day + retrain_days
    return triggers


def test_persistent_drift_for_20_windows_does_not_cause_a_storm(base_config: Config) -> None:
    # the retrain is rejected: backoff 7 days, then 14 (and the cap of 2 per 28 days)
    assert simulate(base_config, 20, retrain_days=1, promotes=False) == [2, 9]
    assert simulate(base_config, 20, retrain_days=4, promotes=False) == [2, 9]
    # the retrain promotes a champion trained on the new data: exactly one trigger
    assert simulate(base_config, 20, retrain_days=1, promotes=True) == [2]
    assert simulate(base_config, 20, retrain_days=3, promotes=True) == [2]
    # without backoff, the cap alone holds it to 2 in 28 days
    no_backoff = with_overrides(base_config, drift={"storm": {"backoff_days": 0}})
    assert simulate(no_backoff, 20, retrain_days=1, promotes=False) == [2, 5]
    # the old policy (k-of-n + cooldown, no cap, no backoff): 7 triggers in 20 windows
    old = with_overrides(base_config, drift={"storm": {"max_triggers": 100, "backoff_days": 0}})
    assert simulate(old, 20, retrain_days=1, promotes=False) == [2, 5, 8, 11, 14, 17, 20]
    # without any guard the same drift triggers every single day
    loose = with_overrides(
        old, drift={"cooldown_days": 0, "k_of_n": {"k": 1, "n": 1}}
    )
    assert len(simulate(loose, 20, retrain_days=1, promotes=False)) == 20


def test_storm_cap_and_backoff_are_decisions_with_reasons(base_config: Config) -> None:
    d = "data_drift"
    hist = [ev(i, d) for i in range(20, 23)]  # windows end 2026-03-21..23
    rejected = [PastTrigger(dt.date(2026, 3, 18), "rejected")]
    got = decide_with(base_config, hist, rejected, last=dt.date(2026, 3, 18))
    assert not got.trigger and got.reason == "backoff" and "backing off 7 days, 5 passed" in got.why
    assert got.evidence["guards"]["storm"]["backoff_until"] == "2026-03-25"
    twice = [PastTrigger(dt.date(2026, 3, 4), "rejected"), *rejected]
    got = decide_with(base_config, [ev(i, d) for i in range(27, 30)], twice, last=dt.date(2026, 3, 18))
    assert got.reason == "backoff" and "backing off 14 days" in got.why  # doubled after the second
    capped = [PastTrigger(dt.date(2026, 3, 4), "promoted"), PastTrigger(dt.date(2026, 3, 18), "promoted")]
    got = decide_with(base_config, hist, capped, last=dt.date(2026, 3, 18))
    assert not got.trigger and got.reason == "storm_cap" and "max 2" in got.why
    # the evidence still names the onset and the signal that would have fired
    assert got.evidence["onset_window_start"] == "2026-03-21" and got.evidence["breaching_signal"] == d
    # outside the period the cap is lifted; a trigger on or after the decided window is ignored (backfills)
    old = [PastTrigger(dt.date(2026, 2, 1), "promoted"), PastTrigger(dt.date(2026, 2, 20), "promoted")]
    assert decide_with(base_config, hist, [*old, PastTrigger(dt.date(2026, 3, 23))], last=None).trigger


def decide_with(cfg: Config, hist: list[WindowEvidence], past: list[PastTrigger], *, last) -> Decision:
    return retrain_trigger.decide(
        cfg,
        hist,
        now_window_end=hist[-1].window_end,
        last_promotion_or_retrain_at=last,
        retrain_in_flight=False,
        current_champion_version=CHAMPION,
        past_triggers=past,
    )


def test_overlapping_performance_windows_count_once_and_onset_is_their_first_day(base_config: Config) -> None:
    def perf(day: int, breach: bool) -> WindowEvidence:
        w = ev(day)
        end = D0 + dt.timedelta(days=day - 5)
        sig = Signal("performance", "breach" if breach else "ok", 0.1, 0.3, "p", end - dt.timedelta(days=2), end)
        return dataclasses.replace(w, signals={**w.signals, "performance": sig})

    # one bad labelled day is inside 3 consecutive 3-day performance windows
    blip = [perf(10, False), perf(11, True), perf(12, True), perf(13, True), perf(14, False)]
    got = [decide(base_config, blip[: i + 1]) for i in range(len(blip))]
    assert not any(g.trigger for g in got) and got[3].reason == "k_of_n_not_met"
    assert got[3].evidence["signals"]["performance"]["breaches"] == 1
    # a persistent drop: windows ending 3 days apart both breach -> trigger; onset = first breaching period
    lasting = [perf(10, False), *[perf(d, True) for d in range(11, 15)]]
    fired = decide(base_config, lasting)
    assert fired.trigger and fired.reason == "performance"
    assert fired.evidence["onset_window_start"] == (D0 + dt.timedelta(days=11 - 5 - 2)).isoformat()
    assert fired.evidence["signals"]["performance"]["considered"] == 2


def test_decide_is_deterministic_for_backfills(base_config: Config) -> None:
    d = "data_drift"
    hist = [ev(1, d), ev(2, d), ev(3), ev(4)]
    # re-deciding window 2 later, with windows 3 and 4 already recorded, gives the original answer
    again = retrain_trigger.decide(
        base_config,
        hist,
        now_window_end=hist[1].window_end,
        last_promotion_or_retrain_at=None,
        retrain_in_flight=False,
        current_champion_version=CHAMPION,
    )
    assert again.trigger and again.reason == "data_drift"
    with pytest.raises(MonitoringError, match="no window ending 2026-03-20"):
        retrain_trigger.decide(
            base_config,
            hist,
            now_window_end=dt.date(2026, 3, 20),
            last_promotion_or_retrain_at=None,
            retrain_in_flight=False,
            current_champion_version=CHAMPION,
        )
    assert decide(base_config, hist, champion=None).reason == "no_champion"


# --------------------------------------------------------------------------------------------
# the monitoring table and the warehouse read
# --------------------------------------------------------------------------------------------


def test_decisions_are_recorded_idempotently_and_read_back(
    state: StatePaths, base_config: Config, stable_windows
) -> None:
    windows = stable_windows[:3]
    for w, dec in zip(windows, run_policy(base_config, windows), strict=True):
        decision_log.record_decision(state, w, dec, report_path=None)
    w = windows[-1]
    trigger = Decision(True, "data_drift", {"k": 2}, "test trigger")
    decision_log.record_decision(state, w, trigger, report_path="/tmp/r.html")
    decision_log.record_decision(state, w, trigger, report_path="/tmp/r.html")  # same window again: replaced
    decision_log.attach_triggered_run(state, w.window_end, w.champion_version, "manual__drift_1")
    rows = decision_log.latest_decisions(state, limit=10)
    assert len(rows) == 3
    top = rows[0]
    assert (top["window_end"], top["decision"], top["reason"]) == (w.window_end, "trigger", "data_drift")
    assert top["triggered_run_id"] == "manual__drift_1" and top["report_path"] == "/tmp/r.html"
    assert top["evidence"] == {"k": 2} and top["row_count"] == w.rows
    assert top["feature_scores"][0]["feature"] == "amount" and top["drift_share"] == pytest.approx(
        w.drift_share
    )
    assert top["performance"]["champion_holdout"]["pr_auc"] == pytest.approx(w.champion_metrics["pr_auc"])
    assert rows[1]["decision"] == "no_trigger" and rows[1]["breach_data_drift"] is False

    back = decision_log.history(state, champion_version=CHAMPION, limit=10)
    assert [b.window_end for b in back] == [x.window_end for x in windows]  # oldest first
    assert back[-1].to_dict() == w.to_dict()  # full round trip of the evidence
    assert decision_log.history(state, limit=2)[0].window_end == windows[1].window_end
    assert decision_log.history(state, champion_version="99") == []
    merged = retrain_trigger.assemble_history(back, w)
    assert len(merged) == 3 and merged[-1] is w
    with pytest.raises(MonitoringError, match="no monitoring row"):
        decision_log.attach_triggered_run(state, dt.date(2020, 1, 1), CHAMPION, "x")


def _predictions(frame: pd.DataFrame, batch_date: dt.date, alias: str, version: int) -> pd.DataFrame:
    start = dt.datetime.combine(batch_date, dt.time())
    return pd.DataFrame(
        {
            "model_name": "card_fraud",
            "model_version": version,
            "alias": alias,
            "entity_id": frame.transaction_id,
            "batch_date": batch_date,
            "score": frame.score,
            "decision": np.where(frame.score >= 0.5, "block", "allow"),
            "threshold": 0.5,
            "data_interval_start": start,
            "data_interval_end": start + dt.timedelta(days=1),
            "scored_at": start + dt.timedelta(days=1, hours=1),
        }
    )


def test_load_current_window_reads_champion_predictions_with_features(
    state: StatePaths, base_config: Config
) -> None:
    with pytest.raises(FileNotFoundError):
        load_current_window(state, base_config, D0, D0)
    day2 = D0 + dt.timedelta(days=1)
    first, second = window(50, seed=1), window(40, seed=2)
    features = pd.concat(
        [
            f.drop(columns=["score", "model_version", "is_fraud"]).assign(batch_date=d)
            for f, d in ((first, D0), (second, day2))
        ]
    )
    predictions = pd.concat(
        [
            _predictions(first, D0, "champion", 3),
            _predictions(first.assign(score=0.99), D0, "challenger", 4),  # shadow rows: not read
            _predictions(second, day2, "champion", 3),
        ]
    )
    with connect(state) as con:
        con.execute("create schema published")
        con.con.register("features_df", features)  # DuckDB session: fixture tables from frames
        con.con.register("predictions_df", predictions)
        con.execute("create table published.transaction_features as select * from features_df")
        con.execute("create table published.predictions as select * from predictions_df")
    got = load_current_window(state, base_config, D0, D0)
    assert len(got) == 50 and set(got.model_version) == {"3"}
    assert set(base_config.model.features) <= set(got.columns)
    assert got.score.tolist() == pytest.approx(first.score.tolist())
    assert got.amount.tolist() == pytest.approx(first.amount.tolist())
    assert len(load_current_window(state, base_config, D0, day2)) == 90
    assert load_current_window(state, base_config, dt.date(2025, 1, 1), dt.date(2025, 1, 2)).empty
    # the features table is the contract's published mart, wherever it lives
    elsewhere = with_overrides(base_config, contract={"marts": {"published": "serving.scored_features"}})
    with pytest.raises(MonitoringDataError, match="serving.scored_features"):
        load_current_window(state, elsewhere, D0, D0)
    with connect(state) as con:
        con.execute("create schema serving")
        con.execute("create table serving.scored_features as select * from published.transaction_features")
        con.execute("drop table published.transaction_features")
    assert load_current_window(state, elsewhere, D0, D0).score.tolist() == pytest.approx(first.score.tolist())


def test_load_current_window_names_missing_tables(state: StatePaths, base_config: Config) -> None:
    with connect(state) as con:
        con.execute("create schema if not exists published")
    with pytest.raises(MonitoringDataError, match="published.predictions"):
        load_current_window(state, base_config, D0, D0)


# --------------------------------------------------------------------------------------------
# healing without crying wolf: the simulator, point-in-time features, real Evidently and the
# policy replayed day by day through the DAG's own functions (examples.card_fraud.replay)
# --------------------------------------------------------------------------------------------

# The champion trains on days 0..27 (like production: 21 training + 3 validation + 3 holdout days);
# its drift reference is its last two whole weeks, days 14..27. (A reference starting a week after an
# empty warehouse opened holds the steepest warm-up of is_new_device - a strong model feature - and
# the scores of those days moved with it.)
SIM_DAY0 = 28


def _sim_config(base_config: Config, *scenarios: dict) -> Config:
    return with_overrides(
        base_config,
        simulator={
            "transactions_per_day": 2_000,
            "n_customers": 1_500,
            "n_merchants": 150,
            "scenarios": [{"kind": "weekly_seasonality", "from_day": 0}, *scenarios],
        },
        drift={"performance_bootstrap": 50},
    )


_CHAMPIONS: dict[str, object] = {}


def _simulated(cfg: Config, days: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Scored days, the champion's reference (its last 14 training days) and its holdout metrics.

    The holdout is the champion's last whole week: a 3-day holdout covers 3 weekdays and its PR-AUC
    sets a floor that weekends (different amounts, different fraud mix) fall below by chance.
    """
    from examples.card_fraud import replay as mr

    feats = mr.simulated_features(cfg.simulator, days, label_maturity_days=cfg.windows.label_maturity_days)
    day = {i: cfg.simulator.start_date + dt.timedelta(days=i) for i in range(days)}
    # every world is the same until day 42: one champion (trained on days 0..27) serves them all
    if "champion" not in _CHAMPIONS:
        _CHAMPIONS["champion"] = mr.fit_champion(feats[feats.batch_date < day[SIM_DAY0]], cfg)
    data = mr.with_scores(feats, _CHAMPIONS["champion"])  # type: ignore[arg-type]
    reference = data[(data.batch_date >= day[SIM_DAY0 - 14]) & (data.batch_date < day[SIM_DAY0])]
    holdout = data[(data.batch_date >= day[SIM_DAY0 - 7]) & (data.batch_date < day[SIM_DAY0])]  # a whole week
    return data, reference, compute_metrics(holdout.is_fraud, holdout.score, cfg.model)


def _replay(tmp_path_factory, cfg: Config, sim: tuple, first: int, last: int, **kw):
    from examples.card_fraud import replay as mr

    data, reference, metrics = sim
    days = [cfg.simulator.start_date + dt.timedelta(days=i) for i in range(first, last + 1)]
    return mr.replay(StatePaths(tmp_path_factory.mktemp("replay")), cfg, data, reference, metrics, days, **kw)


@pytest.fixture(scope="module")
def seasonal(base_config: Config, tmp_path_factory) -> tuple:
    """8 weeks of windows of a world with busy, pricier weekends and nothing else changing."""
    cfg = _sim_config(base_config)
    sim = _simulated(cfg, SIM_DAY0 + 56)
    return cfg, sim, _replay(tmp_path_factory, cfg, sim, SIM_DAY0, SIM_DAY0 + 55)


def test_eight_weeks_of_weekly_seasonality_and_warm_up_never_trigger(seasonal) -> None:
    cfg, (data, _, _), result = seasonal
    assert len(result.steps) == 56
    # the world really is seasonal: weekends carry about twice the rows at about +20 % amounts
    per_day = data.groupby("batch_date").agg(rows=("amount", "size"), amount=("amount", "median"))
    weekend = np.array([d.weekday() >= 5 for d in per_day.index])
    assert per_day.rows[weekend].mean() > 1.8 * per_day.rows[~weekend].mean()
    assert per_day.amount[weekend].mean() > 1.12 * per_day.amount[~weekend].mean()
    assert result.trigger_days == [], result.reasons()
    # the day-of-week matched reference is what makes weekends quiet: +20 % weekend amounts never
    # drift; on weekdays sampling noise of 2k rows crosses the critical log_amount threshold on a few
    # isolated days, which k-of-n absorbs
    def amount_drifts(steps):
        return sorted({s.day for s in steps for f in s.window.features if f.feature in ("amount", "log_amount") and f.drifted})

    assert amount_drifts([s for s in result.steps if s.day.weekday() >= 5]) == []
    noise = amount_drifts(result.steps)
    assert len(noise) <= 3 and all((b - a).days >= 3 for a, b in zip(noise, noise[1:], strict=False)), noise
    assert "day-of-week matched" in result.steps[0].window.reference_note
    # is_new_device warms up as history grows: it does drift, is reported with its reason, not counted
    warm = [s for s in result.steps if any(f.feature == "is_new_device" and f.drifted for f in s.window.features)]
    assert warm, "the warm-up trend should be visible (else this test proves nothing about it)"
    shown = warm[0].decision.evidence["expected_drift"]
    assert any(f["feature"] == "is_new_device" and f["expected"].startswith("warmup: ") for f in shown)
    assert all(not f.counted for s in warm for f in s.window.features if f.feature == "is_new_device")


def test_the_old_policy_cries_wolf_on_the_same_weeks(seasonal, tmp_path_factory) -> None:
    """Control: without the day-of-week reference and the warm-up policy the same data triggers."""
    cfg, sim, _ = seasonal
    from examples.card_fraud.replay import old_policy

    old = old_policy(cfg)
    assert old.drift.feature_overrides == {} and old.drift.reference == "as_given"
    data, reference, metrics = sim
    weekdays = reference[[d.weekday() < 5 for d in reference.batch_date]].tail(3 * 2_000)  # a weekday holdout
    result = _replay(tmp_path_factory, old, (data, weekdays, metrics), SIM_DAY0, SIM_DAY0 + 20)
    assert len(result.trigger_days) >= 2, result.reasons()


@pytest.fixture(scope="module")
def abrupt(base_config: Config, tmp_path_factory) -> tuple:
    """Amounts jump by 30 % on day 42 and stay there; every triggered retrain is rejected."""
    cfg = _sim_config(base_config, {"kind": "amount_inflation", "from_day": 42, "params": {"factor": 1.3}})
    sim = _simulated(cfg, 62)
    return cfg, _replay(tmp_path_factory, cfg, sim, 35, 61, retrain_outcome="rejected")


def test_abrupt_30_percent_amount_shift_is_detected_within_two_windows(abrupt) -> None:
    cfg, result = abrupt
    onset = cfg.simulator.start_date + dt.timedelta(days=42)
    assert [d for d in result.trigger_days if d < onset] == []
    first = result.trigger_days[0]
    assert (first - onset).days + 1 <= 2, result.trigger_days
    decision = next(s.decision for s in result.steps if s.day == first)
    assert decision.reason == "data_drift"
    # the drift-aware retrain anchors at the onset: the first breaching window of the episode
    assert decision.evidence["onset_window_start"] == onset.isoformat()
    assert decision.evidence["breaching_signal"] == "data_drift"
    assert decision.conf()["evidence"]["onset_window_start"] == onset.isoformat()


def test_persistent_drift_over_20_windows_triggers_at_most_twice(abrupt) -> None:
    cfg, result = abrupt
    onset = cfg.simulator.start_date + dt.timedelta(days=42)
    steps = [s for s in result.steps if s.day >= onset]
    assert len(steps) == 20
    assert 1 <= len(result.trigger_days) <= 2, result.trigger_days
    # still drifting, blocked - and every blocked day is a decision saying why
    blocked = {s.decision.reason for s in steps if not s.decision.trigger and s.window.signal("data_drift").breach}
    assert "backoff" in blocked or "storm_cap" in blocked, blocked
    capped = next(s.decision for s in steps if s.decision.reason in ("backoff", "storm_cap"))
    assert capped.evidence["guards"]["storm"]["consecutive_rejected_retrains"] >= 1
    # a later trigger of the same persisting drift still names where it began
    last = next(s.decision for s in reversed(steps) if s.decision.trigger)
    assert last.evidence["onset_window_start"] == onset.isoformat()


def test_gradual_amount_drift_of_3_percent_a_day_is_detected_before_plus_15_percent(
    base_config: Config, tmp_path_factory
) -> None:
    cfg = _sim_config(base_config, {"kind": "gradual_amount_drift", "from_day": 42, "params": {"daily_rate": 0.03}})
    result = _replay(tmp_path_factory, cfg, _simulated(cfg, 50), 35, 49)
    onset = cfg.simulator.start_date + dt.timedelta(days=42)
    assert [d for d in result.trigger_days if d < onset] == []
    assert result.trigger_days, result.reasons()
    k = (result.trigger_days[0] - onset).days + 1  # the k-th drifted day carries +3k %
    assert 3 * k < 15, f"detected on drift day {k} (+{3 * k} %)"


def test_a_one_day_blip_seen_by_three_overlapping_windows_does_not_trigger(
    base_config: Config, tmp_path_factory
) -> None:
    # 3-day drift windows, evaluated daily: one anomalous day (amounts x2) is in three of them
    cfg = with_overrides(
        _sim_config(base_config, {"kind": "amount_inflation", "from_day": 42, "until_day": 43, "params": {"factor": 2.0}}),
        drift={"window_days": 3},
    )
    result = _replay(tmp_path_factory, cfg, _simulated(cfg, 47), 39, 46)
    blip = cfg.simulator.start_date + dt.timedelta(days=42)
    breached = [s.day for s in result.steps if s.window.signal("data_drift").breach]
    assert breached == [blip + dt.timedelta(days=i) for i in range(3)], breached
    assert result.trigger_days == [], result.reasons()
    assert result.steps[5].decision.reason == "k_of_n_not_met"
    assert result.steps[5].decision.evidence["signals"]["data_drift"]["breaches"] == 1


def test_select_reference_matches_weekdays_of_whole_weeks(base_config: Config) -> None:
    days = [dt.date(2026, 3, 2) + dt.timedelta(days=i) for i in range(21)]  # Mon 2 .. Sun 22 March
    ref = pd.DataFrame({"batch_date": [d for d in days for _ in range(10)], "x": range(210)})
    sat, sun = dt.date(2026, 4, 4), dt.date(2026, 4, 5)
    got, note = select_reference(ref, sat, sun, base_config)
    assert sorted(set(got.batch_date)) == [dt.date(2026, 3, 14), dt.date(2026, 3, 15), dt.date(2026, 3, 21), dt.date(2026, 3, 22)]
    assert "Sat,Sun of 2026-03-09..2026-03-22 (day-of-week matched), 40 rows" in note
    weeks, note = select_reference(ref, sat, sat, with_overrides(base_config, drift={"reference": "whole_weeks"}))
    assert len(weeks) == 140 and "whole weeks 2026-03-09..2026-03-22" in note
    as_given, _ = select_reference(ref, sat, sat, with_overrides(base_config, drift={"reference": "as_given"}))
    assert len(as_given) == 210
    # a holdout of three weekdays cannot match a Saturday: all of it, and the note says so
    short = ref[ref.batch_date.isin(days[7:10])]
    got, note = select_reference(short, sat, sat, base_config)
    assert len(got) == 30 and "covers less than a week" in note
    missing = ref[ref.batch_date.map(lambda d: d.weekday() != 5)]
    got, note = select_reference(missing, sat, sat, base_config)
    assert "lacks weekday(s) [5]" in note and len(got) == 120


def test_past_triggers_read_their_outcome_from_the_registry_audit(state: StatePaths, base_config: Config) -> None:
    from training.model import registry
    from training.monitoring import drift_job

    windows = [ev(i, "data_drift") for i in (1, 2, 3)]
    for w, run in zip(windows, ("manual__a", "manual__b", "manual__c"), strict=True):
        decision_log.record_decision(state, w, Decision(True, "data_drift", {}, "t"), triggered_run_id=run)
    decision_log.record_decision(state, ev(4), Decision(False, "no_breach", {}, "n"))
    name = base_config.model.name
    with registry._locked(state, name) as conn:  # audit rows as the registry writes them
        registry._insert(conn, model_name=name, action="reject", to_version="4", airflow_run_id="manual__a",
                         idempotency_key="k1")
        registry._insert(conn, model_name=name, action="promote", to_version="5", airflow_run_id="manual__b",
                         idempotency_key="k2")
    got = drift_job.past_triggers(state, base_config)
    assert [(t.window_end.day, t.outcome) for t in got] == [(2, "rejected"), (3, "promoted"), (4, "pending")]


def test_champion_reference_is_its_last_whole_weeks_scored_by_it(
    module_state: StatePaths, train_cfg: Config, training_frame: pd.DataFrame, synth, train_eval
) -> None:
    from training.model import registry
    from training.monitoring import drift_job

    data_version = synth.publish(module_state, training_frame, "full")
    _, decision = train_eval(module_state, train_cfg, data_version, "first")
    assert decision.action == "first_promote"
    champion = registry.model_status(module_state, train_cfg)["champion"]
    ref = drift_job.champion_reference(module_state, train_cfg, champion)
    last = max(training_frame.batch_date)
    assert sorted(set(ref.batch_date)) == [last - dt.timedelta(days=i) for i in range(13, -1, -1)]
    assert ref["score"].between(0, 1).all() and ref["score"].std() > 0
    # the landed behaviour on request (reference: as_given): the frozen holdout, scored
    holdout = drift_job.champion_reference(
        module_state, with_overrides(train_cfg, drift={"reference": "as_given"}), champion
    )
    assert len(set(holdout.batch_date)) == train_cfg.windows.holdout_days and "score" in holdout
    # re-anchored after a drift-aware retrain: the champion's post-onset days only (the old world's
    # days would report the shift it was retrained for again); an onset before the period changes nothing
    assert champion["onset"] is None  # this one trained on the standard windows
    onset = last - dt.timedelta(days=8)
    anchored = drift_job.champion_reference(module_state, train_cfg, {**champion, "onset": onset.isoformat()})
    assert sorted(set(anchored.batch_date)) == [onset + dt.timedelta(days=i) for i in range(9)]
    old = drift_job.champion_reference(
        module_state, train_cfg, {**champion, "onset": (last - dt.timedelta(days=40)).isoformat()}
    )
    assert sorted(set(old.batch_date)) == sorted(set(ref.batch_date))
