"""The `python -m training` stages as a pod or script runs them: failures are loud, output is the result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training", "--home", str(home), *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "CLOSEDLOOP_DBT_TARGET"}, **env},
    )


def test_a_failing_model_exits_non_zero_and_names_the_node(tmp_path):
    # a fresh warehouse has no raw tables: the staging model over raw.transactions cannot build
    out = _cli(tmp_path / "state", "dbt", "--", "run", "--select", "stg_raw__transactions")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "model.closedloop.stg_raw__transactions" in out.stderr
    assert "failed" in out.stderr and "Full log:" in out.stderr


def test_an_unknown_target_is_refused_before_dbt_runs(tmp_path):
    out = _cli(tmp_path / "state", "dbt", "--", "debug", CLOSEDLOOP_DBT_TARGET="snowflake")
    assert out.returncode != 0
    assert "unknown dbt target 'snowflake'" in out.stderr and "duckdb" in out.stderr


def test_drift_decides_each_given_window_and_prints_the_last_decision(tmp_path):
    # no champion yet: each window is decided (and logged) as nothing to monitor, none triggers
    out = _cli(tmp_path / "state", "drift", "--dates", "2026-01-05,2026-01-06")
    assert out.returncode == 0, out.stderr
    assert "2026-01-05: no_champion" in out.stderr and "2026-01-06: no_champion" in out.stderr
    assert '"window_end": "2026-01-06"' in out.stdout and '"trigger": false' in out.stdout


def test_drift_needs_exactly_one_of_date_and_dates(tmp_path):
    out = _cli(tmp_path / "state", "drift")
    assert out.returncode == 1
    assert "give exactly one of --date" in out.stderr
