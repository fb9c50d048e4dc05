"""benchmarks/scale.py: the flat-cost benchmark runs every stage as its own process and judges the ratios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.scale import STAGES, StageCost, main, ratios, table  # noqa: E402


def _costs(stage: str, day5: tuple[float, float, float], day30: tuple[float, float, float]) -> list[StageCost]:
    return [StageCost(1000, 5, stage, *day5), StageCost(1000, 30, stage, *day30)]


def test_a_stage_within_the_limit_passes_and_one_over_fails_naming_the_measure():
    costs = _costs("ingest", (10.0, 8.0, 400.0), (11.0, 9.0, 410.0)) + _costs(
        "dbt build", (10.0, 8.0, 200.0), (30.0, 24.0, 210.0))
    by_stage = {r["stage"]: r for r in ratios(costs, [5, 30], 1.2)}
    assert by_stage["ingest"]["pass"] == {"wall": True, "cpu": True, "rss": True}
    assert by_stage["dbt build"]["pass"] == {"wall": False, "cpu": False, "rss": True}
    assert by_stage["dbt build"]["cpu"] == pytest.approx(3.0)
    lines = table(costs, [5, 30], 1.2).splitlines()
    assert lines[1].rstrip().endswith("PASS") and "ingest" in lines[1]
    assert lines[2].rstrip().endswith("FAIL (wall, cpu)") and "dbt build" in lines[2]


def test_measured_days_before_the_first_training_are_refused_with_the_range():
    with pytest.raises(SystemExit):
        main(["--rows", "500", "--days", "3", "--windows", "1,1,1,0", "--measure", "2,3"])


def test_three_small_days_give_every_stage_in_the_table_and_the_json(tmp_path):
    """Every stage as its own `python -m training` process (a few minutes: ~10 CPU s of imports each)."""
    out = tmp_path / "scale.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/scale.py", "--rows", "500", "--days", "3", "--windows", "1,1,1,0",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.strip().startswith("500 ")]
    assert [line.split()[1] for line in rows] == ["ingest", "dbt", "publish", "train", "evaluate", "infer", "drift"]
    assert all(line.rstrip().endswith(("PASS", ")")) for line in rows)
    data = json.loads(out.read_text())
    assert data["measure"] == [3] and data["first_train_day"] == 3
    assert {c["stage"] for c in data["costs"] if c["day"] == 3} == set(STAGES)
    assert {c["day"] for c in data["costs"]} == {1, 2, 3}  # every day, not only the measured ones
    assert all(c["wall_s"] > 0 and c["cpu_s"] > 0 and c["peak_rss_mb"] > 50 for c in data["costs"])
    assert {r["stage"] for r in data["ratios"]} == set(STAGES)
