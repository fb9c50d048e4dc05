"""The whole loop under the real Airflow scheduler (not `dags test`): `scripts/demo.py`, shortened.

Real api-server, scheduler, dag-processor and triggerer in a temporary state dir; the test only
delivers simulated days (as the demo does). It asserts that the drift monitor - not the test -
triggered a retrain and that the retrained challenger was promoted to champion.

On the services profile (PostgreSQL warehouse / metadata / ledger, Redis + two Celery workers,
MLflow server; its databases and broker keys are dropped afterwards), through `scripts/demo.py` as
`make demo PROFILE=services` runs it. The same loop on the embedded profile closes in
`tests/e2e/test_two_models_under_scheduler.py`, beside a second model, so `make test` starts one
stack for it, not two. Without PostgreSQL or Redis this test skips and names the command that
starts the missing server (`.ci/run` starts them before CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.environment import free_port
from devstack.services import (
    CELERY_WORKERS,
    DevStackError,
    ServicesBackends,
    check_servers,
    drop_services_state,
)
from tests.synthetic import LOOP_SOURCE_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]


@pytest.mark.parametrize("profile", ["services"])  # embedded: test_two_models_under_scheduler
def test_drift_triggered_retrain_promotes_a_new_champion(tmp_path, profile):
    from training.paths import StatePaths

    state = tmp_path / "state"
    try:
        check_servers(ServicesBackends.for_state(StatePaths(state)))
    except DevStackError as exc:
        pytest.skip(str(exc))
    try:
        _run_and_check(tmp_path, state, profile)
    finally:
        drop_services_state(StatePaths(state))


def _run_and_check(tmp_path, state, profile):
    overrides = tmp_path / "e2e.yaml"
    overrides.write_text(LOOP_SOURCE_OVERRIDES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CLOSEDLOOP_"))}
    env["CLOSEDLOOP_HOME"] = str(state)
    env["CLOSEDLOOP_MLFLOW_PORT"] = str(free_port())  # the MLflow server beside a developer's
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--days", "20", "--port", str(free_port()),
         "--overrides", str(overrides), "--timeout-min", "40", "--profile", profile,
         "--until", "closed"],  # healing on live data is the demo's (make demo) longer story
        env=env, capture_output=True, text=True, timeout=2600,
    )
    print(out.stdout[-6000:])
    assert out.returncode == 0, f"loop did not close:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    summary = json.loads((state / "reports" / "demo_loop.json").read_text())
    assert summary["closed"] is True
    moves = summary["alias_moves"]
    assert moves[0]["action"] == "first_promote"
    drift_promotions = [m for m in moves if m["action"] == "promote"
                        and str(m.get("trigger_reason", "")).startswith("drift_monitor")]
    assert drift_promotions, moves
    assert (state / "reports" / "demo_loop.png").stat().st_size > 10_000
    days = summary["days"]
    assert any(str(d["decision"]).startswith("trigger") for d in days)
    _check_services_did_the_work(state)


def _check_services_did_the_work(state):
    """The tasks ran on both Celery workers and the published data is in the PostgreSQL warehouse."""
    import psycopg2

    from training.paths import StatePaths

    logs = state / "devstack" / "logs"
    per_worker = {w: (logs / f"{w}.log").read_text().count("Executing workload in Celery") for w in CELERY_WORKERS}
    assert all(n > 0 for n in per_worker.values()), per_worker
    b = ServicesBackends.for_state(StatePaths(state))
    con = psycopg2.connect(host=b.pg_host, port=b.pg_port, user=b.pg_user, password=b.pg_password or None,
                           dbname=b.dbname("warehouse"))
    try:
        with con.cursor() as cur:
            cur.execute("select count(distinct batch_date) from published.transaction_features")
            assert cur.fetchone()[0] >= 10
    finally:
        con.close()
