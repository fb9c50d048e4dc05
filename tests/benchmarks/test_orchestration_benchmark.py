"""benchmarks/orchestration.py: the pure parts - arguments, ratios, the tables, the scheduling-gap arithmetic.

The runs themselves (a replay and the real stack) take minutes; the benchmark's docstring holds a measured run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.orchestration import (  # noqa: E402
    PathCost,
    TaskRun,
    busy_seconds,
    cost_table,
    day_gaps,
    gaps_table,
    outcome_table,
    parse_args,
    ratios,
    top_tasks,
)


def test_defaults_and_refused_arguments(tmp_path):
    args = parse_args([])
    assert (args.days, args.rows, args.json) == (10, None, None)
    assert parse_args(["--days", "8", "--rows", "3000", "--json", str(tmp_path / "o.json")]).rows == 3000
    for bad in (["--days", "0"], ["--rows", "0"], ["--stall-min", "0"], ["--json", str(tmp_path / "no" / "o.json")]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_ratios_and_the_cost_table_judge_against_the_limit():
    cli, sched = PathCost("cli", 8, 100.0, 80.0), PathCost("scheduler", 8, 150.0, 96.0)
    assert ratios(cli, sched) == pytest.approx({"wall": 1.5, "cpu": 1.2})
    lines = cost_table(cli, sched).splitlines()
    assert lines[1].split() == ["cli", "8", "100.0", "80.0", "12.5", "10.0"]
    assert lines[2].split() == ["scheduler", "8", "150.0", "96.0", "18.8", "12.0"]
    assert "1.50x" in lines[3] and "1.20x" in lines[3]
    assert lines[3].endswith("(limit 1.3x: wall FAIL cpu PASS)")


def test_busy_seconds_counts_overlapping_tasks_once():
    assert busy_seconds([]) == 0.0
    assert busy_seconds([(0, 10), (5, 12), (20, 25)]) == pytest.approx(17.0)
    assert busy_seconds([(20, 25), (0, 10), (2, 3)]) == pytest.approx(15.0)


def test_day_gaps_attribute_tasks_by_start_and_clip_them_to_the_span():
    tasks = [TaskRun("data_pipeline", "land", "day__1", 1, 4), TaskRun("data_pipeline", "publish", "day__1", 5, 9),
             TaskRun("drift_monitor", "drift", "a", 12, 14), TaskRun("data_pipeline", "land", "day__2", 10, 13)]
    days = day_gaps([0, 10], 20, tasks)
    assert [d["tasks"] for d in days] == [2, 2]
    assert days[0]["task_sum_s"] == pytest.approx(7.0) and days[0]["busy_s"] == pytest.approx(7.0)
    assert days[0]["gap_s"] == pytest.approx(3.0)
    assert days[1]["task_sum_s"] == pytest.approx(5.0) and days[1]["busy_s"] == pytest.approx(4.0)
    assert days[1]["gap_s"] == pytest.approx(6.0)
    table = gaps_table(days, [{"wall_s": 9.5, "task_sum_s": 7.0}]).splitlines()
    assert table[1].split()[-2:] == ["9.5", "7.0"] and table[2].split()[-2:] == ["-", "-"]
    assert table[-1].split()[:6] == ["all", "20.0", "4", "12.0", "11.0", "9.0"]
    assert "(45% of the span no task ran)" in table[-1]


def test_top_tasks_rank_by_total_duration():
    tasks = [TaskRun("d", "a", "1", 0, 2), TaskRun("d", "a", "2", 0, 2), TaskRun("d", "b", "1", 0, 3)]
    assert top_tasks(tasks, 1) == [{"task": "d.a", "runs": 2, "total_s": 4.0, "mean_s": 2.0}]
    assert [t["task"] for t in top_tasks(tasks)] == ["d.a", "d.b"]


def test_the_outcome_table_marks_what_differs():
    lines = outcome_table({"days published": 8, "alias moves": "first_promote v1"},
                          {"days published": 8, "alias moves": "none"}).splitlines()
    assert lines[1].startswith("days published") and lines[1].endswith("same")
    assert lines[2].startswith("alias moves") and lines[2].endswith("DIFFERENT")
