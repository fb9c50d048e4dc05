"""Healing policy rules of issue 19: budgets per signal, declared calendar events, learned label maturity."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from training.config import Config, ConfigError, with_overrides
from training.model.metrics import compute_metrics
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



# --------------------------------------------------------------------------------------------
# label maturity learned from the label feed
# --------------------------------------------------------------------------------------------

CHANGE_DAY = 50  # events from this day on are reported twice as late (the world itself is unchanged)
N_DAYS = 86


@pytest.fixture(scope="module")
def delayed_world() -> dict:
    """Scored days whose labels arrive 1-5 days late, then 2-10 days late from CHANGE_DAY on.

    The champion's ranking never changes; only the label feed slows down.
    """
    rng = np.random.default_rng(5)
    days = {}
    for i in range(N_DAYS):
        n = 3_000
        z = rng.normal(size=n)
        fraud = rng.random(n) < 1 / (1 + np.exp(-(-5.0 + 1.8 * z)))
        lo, hi = (1, 5) if i < CHANGE_DAY else (2, 10)
        days[D0 + dt.timedelta(days=i)] = pd.DataFrame({
            "transaction_id": [f"tx-{i}-{j}" for j in range(n)],
            "batch_date": D0 + dt.timedelta(days=i),
            "score": 1 / (1 + np.exp(-(-5.0 + 1.8 * (z + rng.normal(0, 0.6, n))))),
            "model_version": CHAMPION,
            "is_fraud": fraud.astype(int),
            "delay": rng.integers(lo, hi + 1, n),
        })
    frame = pd.concat(days.values(), ignore_index=True)
    frame["reported_day"] = (pd.to_datetime(frame["batch_date"]) + pd.to_timedelta(frame["delay"], unit="D")).dt.date
    holdout = frame[frame.batch_date < D0 + dt.timedelta(days=14)]
    return {"frame": frame, "holdout": holdout}


def _replay_delays(cfg: Config, world: dict, days: range) -> list:
    """measure_interval + decide over `days`, labels as they would be known on each day."""
    from training.monitoring import drift_job, label_delay

    frame = world["frame"]
    by_day = {d: g for d, g in frame.groupby("batch_date")}
    frauds = frame[frame.is_fraud == 1]
    reported_by_day = {d: g for d, g in frauds.groupby("reported_day")}

    def load_window(start: dt.date, end: dt.date) -> pd.DataFrame:
        return pd.concat([by_day[start + dt.timedelta(days=i)] for i in range((end - start).days + 1)])

    def load_labels(ids: pd.Series, as_of: dt.date) -> pd.DataFrame:
        rows = frame.loc[ids.index]  # the window's own rows (load_window keeps the frame's index)
        known = (rows.is_fraud == 1) & (rows.reported_day <= as_of)  # an unreported fraud reads as a negative
        return pd.DataFrame({"transaction_id": rows.transaction_id, "is_fraud": known.astype(int), "matured": True})

    def load_label_delays(first: dt.date, last: dt.date) -> pd.DataFrame:
        got = pd.concat([reported_by_day.get(first + dt.timedelta(days=i), frauds.iloc[:0])
                         for i in range((last - first).days + 1)])
        return label_delay.delays(pd.DataFrame({
            "reported_at": pd.to_datetime(got.reported_day) + pd.Timedelta(hours=9),
            "event_time": pd.to_datetime(got.batch_date) + pd.Timedelta(hours=20),
        }))

    out, history = [], []
    for i in days:
        day = D0 + dt.timedelta(days=i)
        w = drift_job.measure_interval(
            None, cfg, day, reference=frame.iloc[:0], reference_scores=None,  # type: ignore[arg-type]
            holdout_metrics=compute_metrics(world["holdout"].is_fraud, world["holdout"].score, cfg.model),
            version=CHAMPION, load_window=load_window,
            load_labels=load_labels, save_html=False, load_label_delays=load_label_delays,
        )
        history = retrain_trigger.assemble_history(history, w)
        out.append((w, decide(cfg, history, [])))
    return out


def test_a_slower_label_feed_is_its_own_alert_and_never_reads_as_concept_drift(
    base_config: Config, delayed_world: dict
) -> None:
    # drift is not what this test is about: skip Evidently; a smaller bootstrap keeps it quick
    only_performance = {"min_rows": 10**9, "performance_bootstrap": 50}
    learned = with_overrides(base_config, drift=only_performance)
    fixed = with_overrides(learned, windows={"label_maturity": {"learn": False}})
    days = range(CHANGE_DAY + 3, N_DAYS)
    # the fixed 5-day maturity counts unreported frauds as negatives: false performance breaches
    naive = _replay_delays(fixed, delayed_world, days)
    assert any(w.signal("performance").breach for w, _ in naive)
    assert any(d.trigger for _, d in naive)
    # learned from the label feed: no performance breach, no trigger; the change is its own alert
    smart = _replay_delays(learned, delayed_world, days)
    assert not any(w.signal("performance").breach for w, _ in smart)
    assert not any(d.trigger for _, d in smart)
    alerts = [d for _, d in smart if d.reason == "label_delay_change"]
    assert alerts and alerts[0].evidence["label_delay_change"]["alert"] is True
    assert "never a retrain" in alerts[0].why
    first_alert = min(dt.date.fromisoformat(d.evidence["window_end"]) for d in alerts)
    assert (first_alert - D0).days <= CHANGE_DAY + 10  # seen within ~a week of the first late labels
    maturity = [w.label_maturity["days"] for w, _ in smart]
    assert maturity[0] == 5 and maturity[-1] == 10  # floor before, the slower feed's q98 after
    rising = [w for w, _ in smart if w.label_maturity["rising"]]
    assert rising and all(w.signal("performance").status == "insufficient" for w in rising)
    # once the learned maturity holds, matured performance is judged again, on complete labels
    last = smart[-1][0]
    assert last.signal("performance").status == "ok" and "maturity 10 days" in last.signal("performance").reason
    assert last.label_maturity["daily"] and "q0.98_days" in last.label_maturity["daily"][-1]
    # the ledger keeps it: the window round-trips through JSON with its maturity and label_delay signal
    back = WindowEvidence.from_dict(json.loads(json.dumps(last.to_dict())))
    assert back.label_maturity == last.label_maturity and back.signal("label_delay") == last.signal("label_delay")


def test_label_maturity_learning_on_a_stable_feed_keeps_the_floor(base_config: Config) -> None:
    from training.monitoring import label_delay

    rng = np.random.default_rng(0)
    reported = [D0 + dt.timedelta(days=int(d)) for d in rng.integers(0, 60, 6_000)]
    delays = pd.DataFrame({"reported_day": reported, "delay_days": rng.integers(1, 6, 6_000).astype(float)})
    got = label_delay.learn(base_config, delays, D0 + dt.timedelta(days=59))
    assert got.days == 5 and got.change is False and not got.rising
    assert got.signal(base_config).status == "ok"
    # a feed with too few labels: the configured floor, said so
    few = label_delay.learn(base_config, delays.head(10), D0 + dt.timedelta(days=59))
    assert few.days == 5 and "min_labels" in few.source and few.signal(base_config).status == "insufficient"
    # labels only ever arriving after 7 days: a floor of 5 is not enough, the learned 7 is used
    late = label_delay.learn(base_config, delays.assign(delay_days=7.0), D0 + dt.timedelta(days=59))
    assert late.days == 7 and "above the floor" in late.source
    with pytest.raises(ConfigError, match="max_days"):
        with_overrides(base_config, windows={"label_maturity": {"max_days": 3}})


def test_label_delays_are_read_from_the_raw_feeds_by_contract_names(state, base_config: Config) -> None:
    from training.monitoring import label_delay
    from training.storage.warehouse import connect

    day = D0 + dt.timedelta(days=10)
    assert label_delay.load_delays(state, base_config, D0, day).empty  # no raw feeds yet: the floor applies
    ev, lb = base_config.contract.events, base_config.contract.labels
    events = pd.DataFrame({ev.id: ["a", "b", "c"], ev.time: pd.to_datetime(["2026-03-01 23:50", "2026-03-02 08:00",
                                                                             "2026-03-09 10:00"])})
    labels = pd.DataFrame({lb.event_id: ["a", "b", "c"], lb.reported_at: pd.to_datetime(
        ["2026-03-04 00:10", "2026-03-09 07:00", "2026-03-12 10:00"])})
    with connect(state) as con:
        con.execute("create schema if not exists raw")
        con.con.register("events_df", events)
        con.con.register("labels_df", labels)
        con.execute(f"create table {ev.raw_table} as select * from events_df")
        con.execute(f"create table {lb.raw_table} as select * from labels_df")
    got = label_delay.load_delays(state, base_config, D0, day)  # reported up to 03-11: c is not yet
    assert sorted(got.delay_days.tolist()) == [3.0, 7.0]  # batch days: 03-01 -> 03-04, 03-02 -> 03-09
    assert sorted(got.reported_day) == [dt.date(2026, 3, 4), dt.date(2026, 3, 9)]
