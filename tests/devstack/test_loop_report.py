"""The demo's healing verdict and its chart on a synthetic monitoring history, without Airflow.

The windows go through the real monitoring ledger, the deferral through the real deferral table and
the predictions into the state dir's DuckDB warehouse; only the alias moves (registry audit + MLflow
version tags) are given, so the test needs no trained model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from devstack import loop_report
from training.config import Config
from training.monitoring import decision_log, loop_history, retrain_trigger
from training.paths import StatePaths
from training.storage import warehouse

D0 = dt.date(2026, 3, 1)
OLD, NEW = "1", "2"


def day(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


def window(end: int, champion: str, metric: str, value: float | None, perf_days: tuple[int, int]) -> retrain_trigger.WindowEvidence:
    """A window whose performance signal measured `metric` = `value` on the matured days `perf_days`."""
    ok = {s: retrain_trigger.Signal(s, "ok", 0.0, 0.15, f"{s} test") for s in retrain_trigger.SIGNALS}
    perf = retrain_trigger.Signal("performance", "ok", value, 0.25, "matured", day(perf_days[0]), day(perf_days[1]))
    return retrain_trigger.WindowEvidence(
        day(end - 2), day(end), champion, (champion,), 3_000, 3_000, 40, {**ok, "performance": perf},
        performance={} if value is None else {metric: value},
    )


def publish_champion_scores(paths: StatePaths, versions_by_day: dict[int, str]) -> None:
    with warehouse.transaction(paths, ddl=[
        "create schema if not exists published",
        "create table if not exists published.predictions (batch_date date, alias varchar, model_version integer)",
    ]) as con:
        for n, version in versions_by_day.items():
            con.execute("insert into published.predictions values (?, 'champion', ?)", (day(n), int(version)))


@pytest.fixture
def closed_loop(state: StatePaths, monkeypatch: pytest.MonkeyPatch) -> StatePaths:
    """v1 drifted on day 3, the monitor triggered, the retrain promoted v2; v2 scores from day 5."""
    moves: list[dict[str, Any]] = [
        {"action": "first_promote", "from_version": None, "to_version": OLD, "trigger_reason": None},
        {"action": "promote", "from_version": OLD, "to_version": NEW, "trigger_reason": "drift_monitor:data_drift"},
    ]
    monkeypatch.setattr(loop_history, "promotions", lambda paths, cfg: [dict(m) for m in moves])
    drifted = window(3, OLD, "pr_auc", None, (0, 0))
    drifted = dataclasses.replace(drifted, signals={**drifted.signals, "data_drift": retrain_trigger.Signal("data_drift", "breach", 0.5, 0.3, "drift")})
    decision_log.record_decision(state, drifted, retrain_trigger.Decision(True, "data_drift", {}, "drift on v1"))
    publish_champion_scores(state, {n: OLD for n in range(1, 5)} | {n: NEW for n in range(5, 10)})
    return state


def test_healing_waits_for_a_matured_window_scored_only_by_the_new_champion(closed_loop: StatePaths, base_config: Config) -> None:
    metric = base_config.model.primary_metric
    floor = base_config.gates.floors[metric]
    no = retrain_trigger.Decision(False, "no_breach", {}, "quiet")
    # judged on day 6, its labelled days 1..3 were scored by v1: says nothing about v2 (below the floor on purpose)
    decision_log.record_decision(closed_loop, window(6, NEW, metric, floor - 0.1, (1, 3)), no)
    # judged on day 7, labels of v2's days not matured yet
    decision_log.record_decision(closed_loop, window(7, NEW, metric, None, (5, 5)), no)

    waiting = loop_report.healing_verdict(closed_loop, base_config)
    assert (waiting.settled, waiting.recovered) == (False, False)
    assert waiting.why == f"no window scored only by v{NEW} has matured labels yet"

    decision_log.record_decision(closed_loop, window(9, NEW, metric, floor + 0.05, (5, 7)), no)
    healed = loop_report.healing_verdict(closed_loop, base_config)
    assert (healed.settled, healed.recovered) == (True, True), healed.why
    assert (healed.window_end, healed.judged_on) == (day(7).isoformat(), day(9).isoformat())
    assert healed.matured_metric == pytest.approx(floor + 0.05) and healed.floor == pytest.approx(floor)
    assert f"{metric} {floor + 0.05:.3f} >= the champion floor {floor:.3f}" in healed.why

    # the same window re-evaluated below the floor: settled, not recovered
    decision_log.record_decision(closed_loop, window(9, NEW, metric, floor - 0.05, (5, 7)), no)
    fell = loop_report.healing_verdict(closed_loop, base_config)
    assert (fell.settled, fell.recovered) == (True, False)
    assert f"{metric} {floor - 0.05:.3f} < the champion floor" in fell.why


def test_healing_is_not_judged_before_the_loop_closed(state: StatePaths, base_config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_history, "promotions", lambda paths, cfg: [
        {"action": "first_promote", "from_version": None, "to_version": OLD, "trigger_reason": None},
    ])
    verdict = loop_report.healing_verdict(state, base_config)
    assert (verdict.settled, verdict.recovered) == (False, False)
    assert verdict.why.startswith("the loop has not closed yet: the drift monitor never triggered a retrain")


# --- the chart: a whole demo-like story on the real ledger tables ------------------------------

SHIFT_DAY, TRIGGER_DAY, V2_FROM, LAST = 8, 10, 14, 19
DRIFT = {3: 0.0, 4: 0.0, 5: 0.09, 6: 0.0, 7: 0.0, 8: 0.09, 9: 0.18, 10: 0.09, 11: 0.0, 12: 0.0, 13: 0.0,
         14: 0.0, 15: 0.09, 16: 0.0, 17: 0.0, 18: 0.0, 19: 0.0}


def story_window(end: int, metric: str, value: float | None, share: float) -> retrain_trigger.WindowEvidence:
    """A one-day window judged on day `end`: drift share `share`, `metric` on the matured day end-2."""
    champion = OLD if end < V2_FROM else NEW
    base = window(end, champion, metric, value, (end - 2, end - 2))
    floor = 0.47 if champion == OLD else 0.50
    perf_status = "insufficient" if value is None else ("breach" if value < floor else "ok")
    signals = {
        **base.signals,
        "data_drift": retrain_trigger.Signal("data_drift", "breach" if share >= 0.15 else "ok", share, 0.15, "share"),
        "performance": dataclasses.replace(base.signals["performance"], status=perf_status, threshold=floor),
    }
    return dataclasses.replace(base, window_start=day(end), signals=signals, drift_share=share)


@pytest.fixture
def story(state: StatePaths, base_config: Config, monkeypatch: pytest.MonkeyPatch) -> tuple[StatePaths, Config]:
    """20 days from the config's start: nothing scored on days 0-1, v1 serves from day 2, fraud shifts on
    day 8, the monitor triggers on day 10 and the retrain is deferred for labels, v2 serves from day 14
    and its first matured live window (judged day 16) is above the floor."""
    from training.config import with_overrides
    from training.monitoring import retrain_deferral
    from training.storage.ledger import engine, ensure_tables

    cfg = with_overrides(base_config, contract={"start_date": D0.isoformat()}, simulator={
        "start_date": D0.isoformat(), "scenarios": [{"kind": "fraud_mechanism_shift", "from_day": SHIFT_DAY}]})
    metric = cfg.model.primary_metric
    monkeypatch.setattr(loop_history, "promotions", lambda paths, cfg: [
        {"action": "first_promote", "from_version": None, "to_version": OLD, "trigger_reason": None},
        {"action": "promote", "from_version": OLD, "to_version": NEW, "trigger_reason": "drift_monitor:performance"},
    ])
    publish_champion_scores(state, {n: OLD for n in range(2, V2_FROM)} | {n: NEW for n in range(V2_FROM, LAST + 1)})
    no = retrain_trigger.Decision(False, "no_breach", {}, "quiet")
    for end, share in DRIFT.items():
        value = None if end in (3, 4, V2_FROM, V2_FROM + 1) else (0.62 if end < SHIFT_DAY + 2 else 0.21)
        if end >= V2_FROM + 2:
            value = 0.64
        w = story_window(end, metric, value, share)
        if end == TRIGGER_DAY:
            decision_log.record_decision(state, w, retrain_trigger.Decision(True, "performance", {}, "matured PR-AUC fell"))
        else:
            decision_log.record_decision(state, w, no)
    eng = engine(state)
    ensure_tables(eng, retrain_deferral.retrain_deferrals)
    now = dt.datetime(2026, 3, 11, 12, 0)
    with eng.begin() as con:
        con.execute(retrain_deferral.retrain_deferrals.insert().values(
            status=retrain_deferral.TRAINED, reason="performance", evidence="{}", onset=day(SHIFT_DAY),
            onset_source="performance signal", deferred_data_version="abc", deferred_batch_date=day(TRIGGER_DAY),
            post_onset_days=1, needed_days=5, triggers=1, why="wait for labels", created_at=now, updated_at=now,
            trained_data_version="def", trained_version=NEW))
    return state, cfg


def test_the_day_table_shows_every_day_and_the_recorded_drift_share(story: tuple[StatePaths, Config]) -> None:
    paths, cfg = story
    table = loop_report.day_table(paths, cfg)
    assert list(table["day"]) == [day(n).isoformat() for n in range(LAST + 1)]  # days 0-1 included, empty
    assert list(table["champion"][:3]) == ["-", "-", "v1"] and table["drift_share"][:3].isna().all()
    recorded = table.set_index("day")["drift_share"]
    assert {n: recorded[day(n).isoformat()] for n in DRIFT} == pytest.approx(DRIFT)
    assert table.set_index("day").loc[day(TRIGGER_DAY).isoformat(), "deferred"] == "1 of 5 post-onset days matured"
    assert table.set_index("day").loc[day(9).isoformat(), "signals"] == "data_drift"
    # a later `through` (a day delivered but not yet processed) is a row too
    assert loop_report.day_table(paths, cfg, through=day(LAST + 2))["day"].iloc[-1] == day(LAST + 2).isoformat()


def _texts(fig: Any) -> list[Any]:
    return [t for ax in fig.axes for t in ax.texts] + [fig._suptitle]


def test_the_chart_marks_what_a_newcomer_needs(story: tuple[StatePaths, Config], tmp_path: Any) -> None:
    from matplotlib.dates import date2num

    from training.monitoring import health_chart

    paths, cfg = story
    table = loop_report.day_table(paths, cfg)
    moves = loop_history.promotions(paths, cfg)  # the given alias moves (monkeypatched there)
    healing = loop_report.healing_verdict(paths, cfg)
    assert (healing.settled, healing.recovered, healing.judged_on) == (True, True, day(V2_FROM + 2).isoformat())
    fig = health_chart.draw(table, moves, cfg, verdict=loop_report.loop_verdict(paths, cfg), healing=healing)
    out = loop_report.plot(table, moves, cfg, tmp_path / "demo_loop.png", healing,
                           verdict=loop_report.loop_verdict(paths, cfg))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig.canvas.draw()
    perf_ax, _, drift_ax = fig.axes
    words = " ".join(t.get_text() for t in _texts(fig))
    for expected in ("Loop closed and healed", "v1 serves (first champion)", "v2 serves (drift retrain)",
                     "retrain triggered (performance),\ndeferred until labels matured (1 of 5 post-onset days "
                     "matured)", "healed: 0.64 >= floor", "no champion yet",
                     "fraud mechanism shift (scenario) from 03-09"):
        assert expected in words, expected
    # every day is on the axis, the first ones included
    lo, hi = perf_ax.get_xlim()
    assert lo < date2num(D0) and hi > date2num(day(LAST))
    # the real floor on the performance panel, the drift threshold on the drift panel only
    floor = cfg.gates.floors[cfg.model.primary_metric]
    horizontal = {ax: {round(ln.get_ydata()[0], 3) for ln in ax.lines if len(set(ln.get_ydata())) == 1
                       and ln.get_linestyle() == "--"} for ax in (perf_ax, drift_ax)}
    assert floor in horizontal[perf_ax] and cfg.drift.drift_share_threshold not in horizontal[perf_ax]
    assert cfg.drift.drift_share_threshold in horizontal[drift_ax] and floor not in horizontal[drift_ax]
    # the drift bars carry the recorded shares (not zeros)
    heights = sorted({round(p.get_height(), 2) for p in drift_ax.containers[0]})
    assert heights == [0.0, 0.09, 0.18]
    # no label is hidden behind a legend: legends sit right of the axes
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend().get_window_extent(renderer) for ax in fig.axes]
    for t in _texts(fig):
        if t.get_text():
            assert not any(t.get_window_extent(renderer).overlaps(box) for box in legends), t.get_text()


def test_a_stopped_run_says_so_on_the_chart(story: tuple[StatePaths, Config]) -> None:
    from training.monitoring import health_chart

    paths, cfg = story
    table = loop_report.day_table(paths, cfg)[: TRIGGER_DAY + 1]
    fig = health_chart.draw(table, [], cfg, verdict=loop_report.LoopVerdict(False, "no retrain promoted"),
                            stopped="stalled: no Airflow task finished for 15 min (--stall-min)")
    assert fig._suptitle.get_text().startswith("Run stopped early (loop NOT closed): stalled")
    assert "run stopped " in [t.get_text() for t in fig.axes[0].texts]


def test_a_share_of_zero_on_every_day_is_shown_and_explained(story: tuple[StatePaths, Config]) -> None:
    from training.monitoring import health_chart

    paths, cfg = story
    table = loop_report.day_table(paths, cfg)
    measured = table["drift_share"].notna()
    table.loc[measured, "drift_share"] = 0.0
    table.loc[measured, ["nearest_drift", "nearest_drift_ratio"]] = ["tx_count_24h", 0.72]
    table.loc[9, "nearest_drift_ratio"] = 0.76
    drift_ax = health_chart.draw(table, [], cfg).axes[2]
    notes = [t.get_text() for t in drift_ax.texts]
    assert "No monitored feature drifted on any day shown\n(closest: tx_count_24h at 76% of its threshold on 03-10)" \
        in " ".join(notes)
    assert drift_ax.get_ylim()[0] < 0  # the measured zeros stay visible above the axis line


def test_nearest_to_drift_says_how_close_a_zero_share_came() -> None:
    """The drifted share counts features past their threshold only; the table also names the nearest one."""
    scores = [
        {"feature": "amount", "method": "wasserstein", "score": 0.05, "threshold": 0.1, "drifted": False},
        {"feature": "tx_count_24h", "method": "wasserstein", "score": 0.25, "threshold": 0.35, "drifted": False},
        {"feature": "channel", "method": "chisquare", "score": 0.5, "threshold": 0.05, "drifted": False},
        {"feature": "is_new_device", "method": "wasserstein", "score": 0.9, "threshold": 0.3, "drifted": True,
         "counted": False, "expected": "warmup"},  # expected drift, not counted: not the nearest
    ]
    name, ratio = loop_history.nearest_to_drift(scores)
    assert name == "tx_count_24h" and ratio == pytest.approx(0.25 / 0.35)
    p_value = [{"feature": "channel", "method": "chisquare", "score": 0.01, "threshold": 0.05, "drifted": True}]
    assert loop_history.nearest_to_drift(p_value) == ("channel", pytest.approx(5.0))  # a p-value below its threshold
    assert loop_history.nearest_to_drift(None) == (None, None)
