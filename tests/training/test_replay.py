"""`python -m training replay`: days run through the whole loop in-process, deciding as the DAGs do.

Real parts only: the simulator source, DVC, GX, dbt on DuckDB, MLflow, Evidently. Small enough to
stay around two minutes: a few hundred rows a day, one-day windows, one candidate, one trial.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import yaml

from training.config import load_config, with_overrides

ROOT = Path(__file__).resolve().parents[2]
REPLAY_OVERRIDES = {
    "simulator": {"transactions_per_day": 1500, "n_customers": 300, "n_merchants": 60, "fraud_rate": 0.03,
                  "label_delay_days": {"min": 1, "max": 1}},
    "windows": {"training_days": 2, "validation_days": 1, "holdout_days": 1, "label_maturity_days": 1},
    "training": {"search_budget": 1, "candidates": ["logistic_regression"], "min_training_days": 1},
    "gates": {
        "floors": {"pr_auc": 0.01, "roc_auc": 0.5},
        "non_regression": {"n_bootstrap": 100},
        "slices": {"min_rows": 100000, "min_positives": 10},
        "calibration": {"max_ece": 0.5},
    },
}


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cfg = with_overrides(load_config(), **REPLAY_OVERRIDES)
    cfg_file = tmp_path / "replay.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items()
           if k not in ("CLOSEDLOOP_DBT_TARGET", "CLOSEDLOOP_OPS_DB_URL", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env |= {"PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", "MLFLOW_DISABLE_TELEMETRY": "true",
            "CLOSEDLOOP_DBT_UNIT_TESTS": "false"}
    return subprocess.run(
        [sys.executable, "-m", "training", "--home", str(tmp_path / "state"), "--config", str(cfg_file), *args],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    )


def test_replayed_days_are_published_trained_scored_and_monitored_in_day_order(tmp_path):
    start = load_config().start_date
    days = [start + dt.timedelta(days=i) for i in range(5)]
    out = _cli(tmp_path, "replay", "--from", days[0].isoformat(), "--to", days[-1].isoformat())
    assert out.returncode == 0, out.stdout + out.stderr
    print(out.stdout)  # the per-day lines, for whoever reads the test log
    lines = [line for line in out.stdout.splitlines() if line[:10] in {d.isoformat() for d in days}]
    assert [line[:10] for line in lines] == [d.isoformat() for d in days], out.stdout
    # day 1: nothing matured yet, so the train step says why it skipped and nothing is scored
    assert "train: skipped" in lines[0] and "infer: skipped_no_champion" in lines[0], lines[0]
    # the first day with enough matured days trains the first champion; the days after it are scored
    first = next(i for i, line in enumerate(lines) if "promoted" in line)
    assert "no champion yet" in lines[first], lines[first]
    assert all("infer: scored" in line for line in lines[first:]), lines[first:]
    assert all("drift: " in line for line in lines)

    with duckdb.connect(str(tmp_path / "state" / "warehouse.duckdb"), read_only=True) as con:
        published = [r[0] for r in con.execute(
            "select distinct batch_date from published.transaction_features order by 1").fetchall()]
        predicted = [r[0] for r in con.execute(
            "select distinct batch_date from published.predictions order by 1").fetchall()]
    assert published == days
    assert predicted == days[first:]

    # day order is strict: skipping a day stops the replay with the refusal, nothing after it runs
    gap = _cli(tmp_path, "replay", "--from", (days[-1] + dt.timedelta(days=2)).isoformat(),
               "--to", (days[-1] + dt.timedelta(days=3)).isoformat())
    assert gap.returncode == 1, gap.stdout + gap.stderr
    assert "DayRefused" in gap.stderr and (days[-1] + dt.timedelta(days=1)).isoformat() in gap.stderr, gap.stderr
    assert gap.stdout.strip() == ""
