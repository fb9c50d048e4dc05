"""The demo's healing verdict on a synthetic monitoring history, without Airflow.

The windows go through the real monitoring ledger and the predictions into the state dir's DuckDB
warehouse; only the alias moves (registry audit + MLflow version tags) are given, so the test needs
no trained model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from devstack import loop_report
from training.config import Config
from training.monitoring import decision_log, retrain_trigger
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
    monkeypatch.setattr(loop_report, "promotions", lambda paths, cfg: [dict(m) for m in moves])
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
    monkeypatch.setattr(loop_report, "promotions", lambda paths, cfg: [
        {"action": "first_promote", "from_version": None, "to_version": OLD, "trigger_reason": None},
    ])
    verdict = loop_report.healing_verdict(state, base_config)
    assert (verdict.settled, verdict.recovered) == (False, False)
    assert verdict.why.startswith("the loop has not closed yet: the drift monitor never triggered a retrain")
