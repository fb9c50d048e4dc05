"""The loans example end to end: generated file drops through every stage, with the shipped config.

Nothing here is card fraud: a file-drop source (`contract.source.url` = `${CLOSEDLOOP_HOME}/drops/loans`),
`application_id` / `applied_at`, an outcome feed that delivers both classes, its own dbt project and
suites (`project:`), and the decision words decline / approve. The days run through
`python -m training replay`, which decides as the DAGs do; real DuckDB, dbt, GX, DVC, MLflow and
Evidently. Twelve days: with 4 maturity days and 2 + 2 + 3 matured days needed, day 11 trains the
first champion and days 11-12 are scored. Slow (a dbt build a day): in SLOW_TESTS.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from examples.loans import generate
from training.config import load_config

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "config" / "models" / "loans.yaml"
DAYS = 12


def _cli(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (
        "CLOSEDLOOP_DBT_TARGET", "CLOSEDLOOP_OPS_DB_URL", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI",
        "CLOSEDLOOP_MODELS_DIR", "CLOSEDLOOP_MODEL", "CLOSEDLOOP_DBT_MANIFEST",
    )}
    env |= {"PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", "MLFLOW_DISABLE_TELEMETRY": "true",
            "CLOSEDLOOP_DBT_UNIT_TESTS": "false", "CLOSEDLOOP_HOME": str(home), "CLOSEDLOOP_CONFIG": str(CONFIG)}
    return subprocess.run([sys.executable, "-m", "training", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def _json(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout[out.stdout.index("{"):])


@pytest.fixture(scope="module")
def loans_loop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dt.date], subprocess.CompletedProcess]:
    """Twelve generated days replayed once for the module's tests."""
    home = tmp_path_factory.mktemp("loans") / "state"
    start = load_config(CONFIG).start_date
    generate.generate(home / "drops" / "loans", start, DAYS, rows_per_day=3000, seed=1)
    days = [start + dt.timedelta(days=i) for i in range(DAYS)]
    replay = _cli(home, "replay", "--from", days[0].isoformat(), "--to", days[-1].isoformat())
    print(replay.stdout)  # the per-day lines, for whoever reads the test log
    return home, days, replay


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


def test_the_contract_agrees_with_the_loans_dbt_project_and_suites(loans_loop):
    home, _, _ = loans_loop
    out = _cli(home, "check-contract")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "contract ok"


def test_generated_days_train_and_promote_a_loans_champion_that_declines_and_approves(loans_loop):
    home, days, replay = loans_loop
    assert replay.returncode == 0, replay.stdout[-3000:] + replay.stderr[-3000:]
    lines = [line for line in replay.stdout.splitlines() if line[:10] in {d.isoformat() for d in days}]
    assert [line[:10] for line in lines] == [d.isoformat() for d in days], replay.stdout
    first = next(i for i, line in enumerate(lines) if "promoted" in line)
    assert "no champion yet" in lines[first], lines[first]
    assert all("infer: scored" in line for line in lines[first:]), lines[first:]

    status = _json(_cli(home, "status"))
    champion = status["champion"]
    assert status["model_name"] == "loans" and champion is not None, status
    # the signal is learnable: clearly above chance (the default rate, ~0.07, and 0.5)
    assert champion["holdout_metrics"]["pr_auc"] > 0.2 and champion["holdout_metrics"]["roc_auc"] > 0.7, champion

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        predictions = con.execute(
            "select p.entity_id, p.decision, p.score, p.threshold, p.batch_date, f.application_id "
            "from published.predictions p left join published.application_features f "
            "on f.application_id = p.entity_id and f.batch_date = p.batch_date "
            "where p.alias = 'champion' and p.model_name = 'loans'").df()
        training = con.execute("select is_default, outcome, count(*) n from ml.ml_loan_training_set group by 1, 2").df()
        published = [r[0] for r in con.execute(
            "select distinct batch_date from published.application_features order by 1").fetchall()]
    assert published == days
    assert sorted(set(pd.to_datetime(predictions["batch_date"]).dt.date)) == days[first:]
    assert predictions["application_id"].notna().all(), "every prediction names a published application"
    assert set(predictions["decision"]) == {"decline", "approve"}
    declined = predictions["decision"] == "decline"
    assert (declined == (predictions["score"] >= predictions["threshold"])).all()
    # the target is the delivered outcome, both classes, and nothing else
    pairs = {(int(r.is_default), r.outcome) for r in training.itertuples()}
    assert pairs == {(1, "defaulted"), (0, "repaid")}, training
