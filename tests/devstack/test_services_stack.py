"""The services profile natively (`make up PROFILE=services`): the commands compose runs, on this
machine's PostgreSQL and Redis.

One module-scoped stack on a temporary state dir and free ports: init on fresh PostgreSQL databases,
then api-server, scheduler, dag-processor, triggerer, two Celery workers, the MLflow server (on
PostgreSQL) and the dbt docs site. The tests check it is healthy, that the REST API lists every DAG
without import errors, and that a DAG run is executed by a Celery worker with the library pointed at
the services. The state dir's databases and Redis keys are dropped afterwards.

Skipped (saying why) only when PostgreSQL or Redis does not answer; `.ci/run` starts both.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from devstack.airflow_api import get_json, get_token, trigger_via_rest
from devstack.demo import BURST_AIRFLOW_ENV
from devstack.environment import Ports
from devstack.services import (
    AIRFLOW_COMPONENTS,
    CELERY_WORKERS,
    PROFILE_SERVICES,
    WAREHOUSE_POOL_SERVICES,
    DevStackError,
    ServicesBackends,
    check_servers,
    drop_services_state,
    resolve_argv,
)
from devstack.supervisor import start_stack
from training.paths import StatePaths

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
DAG_IDS = tuple(sorted(p.stem for p in (ROOT / "dags").glob("*.py")))  # one DAG per file, file name = dag_id


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    paths = StatePaths(tmp_path_factory.mktemp("services-stack") / "state")
    try:
        check_servers(ServicesBackends.for_state(paths))
    except DevStackError as exc:
        pytest.skip(str(exc))
    t0 = time.monotonic()
    # a light preload keeps the workers' start quick here; the hook is the same as with the full list
    stack = start_stack(paths, Ports.free(), profile="services",
                        extra_env={"CLOSEDLOOP_PRELOAD_MODULES": "training.model.registry", **BURST_AIRFLOW_ENV})
    try:
        stack.wait_healthy(timeout_s=300)
        healthy_after = time.monotonic() - t0
        stack.wait_for_dags(DAG_IDS, timeout_s=240)
        print(f"services stack healthy after {healthy_after:.0f}s, DAGs parsed after {time.monotonic() - t0:.0f}s")
        yield SimpleNamespace(stack=stack, paths=paths)
    finally:
        stack.stop()
        dropped = drop_services_state(paths)
        assert len(dropped) == len(ServicesBackends.DATABASES), dropped


def test_services_stack_is_healthy_on_postgresql_and_redis(services) -> None:
    stack = services.stack
    assert set(stack.services) == set(PROFILE_SERVICES["services"])
    assert set(stack.health().values()) == {"healthy"}, stack.health()
    # every component runs the compose command on the profile's settings
    for name in stack.services:
        env = stack.service_envs[name]
        if name in (*AIRFLOW_COMPONENTS, *CELERY_WORKERS):
            assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
            assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
    b = stack.backends
    con = stack.metadata_connection()
    try:
        cur = con.cursor()
        cur.execute("select datname from pg_database where datname like %s", (b.stack_id + "\\_%",))
        assert sorted(r[0] for r in cur.fetchall()) == sorted(b.dbname(r) for r in b.DATABASES)
        # on PostgreSQL the warehouse pool lets DAG runs of different intervals write at once
        cur.execute("select slots from slot_pool where pool = 'duckdb_writer'")
        assert cur.fetchone()[0] == WAREHOUSE_POOL_SERVICES[1] > 1
    finally:
        con.close()
    import redis

    keys = redis.Redis.from_url(b.redis_url).keys(b.redis_prefix + "*")
    assert keys, f"no broker keys under {b.redis_prefix}: the workers use another prefix?"
    # the MLflow server runs on its own PostgreSQL database
    assert stack.service_envs["mlflow"]["MLFLOW_BACKEND_STORE_URI"] == b.url("mlflow")
    for worker in CELERY_WORKERS:
        assert "warm celery worker preloaded 1 modules" in stack.log_of(worker).read_text(), worker


def test_compose_worker_healthcheck_pings_a_native_worker(services) -> None:
    """`dev_stack.py check-celery NODE` (the compose healthcheck) in the workers' environment."""
    stack = services.stack
    env = stack.service_envs["airflow-worker-1"]
    node = f"worker-1@{socket.gethostname()}"
    argv = resolve_argv(["python", "scripts/dev_stack.py", "check-celery", node])
    ok = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    missing = subprocess.run([*argv[:-1], f"worker-9@{socket.gethostname()}"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1, missing.stderr[-2000:]


def test_a_dag_run_executes_on_a_celery_worker_against_the_services(services) -> None:
    """`rollback_champion` on an empty registry: runs on a worker, reads the ops ledger on
    PostgreSQL, and fails with its clear message (no champion yet)."""
    stack = services.stack
    stack.airflow("dags", "unpause", "rollback_champion")
    run_id = trigger_via_rest(stack.url, stack.user, stack.password, "rollback_champion", {"reason": "services test"})
    token = get_token(stack.url, stack.user, stack.password)
    base = f"{stack.url}/api/v2/dags/rollback_champion/dagRuns/{run_id}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        run = get_json(base, token)
        if run["state"] in ("success", "failed"):
            break
        time.sleep(2)
    assert run["state"] == "failed", run
    (ti,) = get_json(f"{base}/taskInstances", token)["task_instances"]
    assert ti["state"] == "failed" and ti["queue"] == "default", ti
    # a Celery worker ran it (the scheduler only queued it)
    ran_on = [w for w in CELERY_WORKERS if run_id in stack.log_of(w).read_text()]
    assert len(ran_on) == 1, f"run {run_id} not in exactly one worker log: {ran_on}"
    assert "Executing workload in Celery" in stack.log_of(ran_on[0]).read_text()
    # its log, served by the api-server from the shared log folder, says why it failed
    logs = get_json(f"{base}/taskInstances/rollback/logs/{ti['try_number']}", token)
    text = json.dumps(logs)
    assert "has no champion: nothing to roll back" in text, text[-2000:]
    # the library used the ops ledger on PostgreSQL (the registry looked up its audit log there)
    import sqlalchemy as sa

    eng = sa.create_engine(stack.backends.url("ops"))
    try:
        tables = sa.inspect(eng).get_table_names()
    finally:
        eng.dispose()
    assert tables, "the ops ledger database is empty: the task did not use CLOSEDLOOP_OPS_DB_URL"
    assert os.environ.get("CLOSEDLOOP_OPS_DB_URL") != stack.backends.url("ops")  # the test process was not the one
