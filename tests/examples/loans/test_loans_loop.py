"""The loans example's own parts: the generated file drops and the shipped contract.

Nothing here is card fraud: a file-drop source (`contract.source.url` = `${CLOSEDLOOP_HOME}/drops/loans`),
`application_id` / `applied_at`, an outcome feed that delivers both classes, its own dbt project and
suites (`project:`). Its days through every stage, to a champion that declines and approves, run under
the real scheduler beside card fraud (tests/e2e/test_two_models_under_scheduler.py), not replayed
here a second time.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from examples.loans import generate

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "config" / "models" / "loans.yaml"
def _cli(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (
        "CLOSEDLOOP_DBT_TARGET", "CLOSEDLOOP_OPS_DB_URL", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI",
        "CLOSEDLOOP_MODELS_DIR", "CLOSEDLOOP_MODEL", "CLOSEDLOOP_DBT_MANIFEST",
    )}
    env |= {"PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", "MLFLOW_DISABLE_TELEMETRY": "true",
            "CLOSEDLOOP_DBT_UNIT_TESTS": "false", "CLOSEDLOOP_HOME": str(home), "CLOSEDLOOP_CONFIG": str(CONFIG)}
    return subprocess.run([sys.executable, "-m", "training", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def test_the_generated_drops_deliver_both_classes_with_a_delay_and_a_learnable_rate(tmp_path):
    summary = generate.generate(tmp_path, dt.date(2026, 1, 1), 8, rows_per_day=500, seed=3)
    again = generate.generate(tmp_path / "again", dt.date(2026, 1, 1), 5, rows_per_day=500, seed=3)
    first = pd.read_parquet(tmp_path / "applications" / "batch_date=2026-01-05.parquet")
    pd.testing.assert_frame_equal(first, pd.read_parquet(tmp_path / "again" / "applications" / "batch_date=2026-01-05.parquet"))
    assert summary["applications"] > again["applications"] > 0
    apps = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "applications").glob("*.parquet")))
    outcomes = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "outcomes").glob("*.parquet")))
    assert pd.read_parquet(tmp_path / "outcomes" / "batch_date=2026-01-01.parquet").empty  # nothing to report yet
    assert set(outcomes["outcome"]) == {"repaid", "defaulted"}
    joined = outcomes.merge(apps, on="application_id", validate="one_to_one")
    delay = (joined["reported_at"].dt.normalize() - joined["applied_at"].dt.normalize()).dt.days
    assert delay.between(1, generate.MAX_DELAY_DAYS).all()
    assert 0.04 < summary["default_rate_of_delivered_outcomes"] < 0.11
    shifted = generate.generate(tmp_path / "shifted", dt.date(2026, 1, 1), 8, rows_per_day=500, seed=3, shift_from_day=4)
    later = pd.read_parquet(tmp_path / "shifted" / "applications" / "batch_date=2026-01-07.parquet")
    before = pd.read_parquet(tmp_path / "applications" / "batch_date=2026-01-07.parquet")
    assert later["loan_amount"].median() > 1.2 * before["loan_amount"].median()
    assert shifted["applications"] == summary["applications"]


def test_the_contract_agrees_with_the_loans_dbt_project_and_suites(tmp_path):
    out = _cli(tmp_path / "state", "check-contract")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "contract ok"
