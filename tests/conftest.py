"""Shared fixtures: every test gets its own state directory and a small, fast configuration."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Airflow reads its configuration once, at first import: give the whole test session one throw-away
# AIRFLOW_HOME with a SQLite metadata DB before anything imports airflow.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="closedloop-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from training.config import Config, load_config, with_overrides  # noqa: E402
from training.paths import StatePaths  # noqa: E402
from training.settings import DEFAULT_WAREHOUSE_POOL  # noqa: E402

SMALL_SIMULATOR = {
    "transactions_per_day": 3000,
    "n_customers": 800,
    "n_merchants": 120,
    "fraud_rate": 0.015,
}


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StatePaths:
    """A fresh state directory, exported as $CLOSEDLOOP_HOME for code that reads the environment."""
    root = tmp_path / "state"
    monkeypatch.setenv("CLOSEDLOOP_HOME", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # MLflow in this state dir, not a server
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return StatePaths(root).ensure()


@pytest.fixture(scope="session")
def base_config() -> Config:
    return load_config()


@pytest.fixture
def small_config(base_config: Config) -> Config:
    """The project config with a small simulated source, so a day takes well under a second."""
    return with_overrides(base_config, simulator=SMALL_SIMULATOR)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata DB for this test session (real Airflow, SQLite)."""
    airflow_bin = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow_bin), "db", "migrate"], check=True, env=os.environ.copy(),
                   stdout=subprocess.DEVNULL)
    subprocess.run([str(airflow_bin), "pools", "set", DEFAULT_WAREHOUSE_POOL, "1",
                    "DuckDB allows one writer at a time"], check=True, env=os.environ.copy(),
                   stdout=subprocess.DEVNULL)
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def dbt_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dbt manifest parsed once per session; cosmos renders the dbt task group from it."""
    from training.data.dbt import parse_manifest

    root = tmp_path_factory.mktemp("dbt-manifest-state")
    manifest = parse_manifest(StatePaths(root).ensure(), load_config())
    os.environ["CLOSEDLOOP_DBT_MANIFEST"] = str(manifest)
    return manifest


# --------------------------------------------------------------------------------------------
# PostgreSQL (services profile): a real local server; one fresh database per use, dropped after
# --------------------------------------------------------------------------------------------

PG_SERVER = {
    "host": os.environ.get("CLOSEDLOOP_PG_HOST", "127.0.0.1"),
    "port": os.environ.get("CLOSEDLOOP_PG_PORT", "5432"),
    "user": os.environ.get("CLOSEDLOOP_PG_USER", "postgres"),
    "password": os.environ.get("CLOSEDLOOP_PG_PASSWORD", ""),
}


def pg_warehouse_env(dbname: str) -> dict[str, str]:
    """The environment that points every stage (and dbt) at database `dbname` of the local server."""
    env = {"CLOSEDLOOP_DBT_TARGET": "postgres", "CLOSEDLOOP_PG_DBNAME": dbname}
    for key in ("host", "port", "user", "password"):
        env[f"CLOSEDLOOP_PG_{key.upper()}"] = str(PG_SERVER[key])
    return env


@pytest.fixture(scope="module")
def pg_admin():
    """An autocommit connection to the local server's `postgres` database; skips when there is no server."""
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG_SERVER)
    except psycopg2.OperationalError as exc:  # .ci/run starts the server; a bare dev box may not have one
        pytest.skip(f"PostgreSQL not reachable at {PG_SERVER['host']}:{PG_SERVER['port']}: {exc}".strip())
    admin.autocommit = True
    yield admin
    admin.close()


@pytest.fixture(scope="module")
def pg_database_factory(pg_admin):
    """Create uniquely named databases on the local server; all are dropped (forced) at the module's end.

    Module-scoped so module-scoped fixtures (one database for a module's tests) can use it too.
    """
    import uuid

    created: list[str] = []

    def create(prefix: str = "closedloop_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with pg_admin.cursor() as cur:
            cur.execute(f'create database "{name}"')
        created.append(name)
        return name

    yield create
    with pg_admin.cursor() as cur:
        for name in created:
            cur.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def pg_warehouse(pg_database_factory, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point every stage (and dbt) at a fresh PostgreSQL warehouse, as the services profile does."""
    name = pg_database_factory("closedloop_wh")
    for key, value in pg_warehouse_env(name).items():
        monkeypatch.setenv(key, value)
    return name


# --------------------------------------------------------------------------------------------
# Test tiers (README "Tests"): `make test-fast` runs `-m "not slow and not e2e"`, `make test` all.
# Marked here by path (and test name), not in the test files, so the tiers live in one place.
# --------------------------------------------------------------------------------------------

#: tests/e2e: the whole system from outside (the loop under the scheduler, the browser).
E2E_DIR = "tests/e2e/"
#: Minutes-long tests outside tests/e2e: file -> test names (empty = the whole file), with why.
#: Measured with --durations: these files took a third of the non-e2e tests' time.
SLOW_TESTS: dict[str, tuple[str, ...]] = {
    "tests/devstack/test_services_stack.py": (),  # starts the whole services stack (~2-4 min)
    "tests/dags/test_data_pipeline_run.py": (),  # dag.test() of data_pipeline: dbt, GX, DVC (16 %)
    "tests/training/test_faults.py": (),  # fault drills with real concurrent processes (12 %)
    "tests/training/data/test_pipeline_backends.py": (),  # the data side on DuckDB and PostgreSQL (6 %)
    "tests/dbt/test_incremental.py": (),  # 8 dbt runs per warehouse: day by day, a backfill, a full refresh
    # three days, every stage a cold `python -m training` process (~10 CPU s of imports each)
    "tests/benchmarks/test_scale_benchmark.py": ("test_three_small_days_give_every_stage_in_the_table_and_the_json",),
    # The fast tier's slowest (make test-fast, 16.8 min with them): the other `dag.test()` runs of whole
    # DAGs, the multi-day replays and a real MLflow server - each 20-80 s
    "tests/dags/test_approval_dag.py": (),
    "tests/dags/test_deadline_alerts.py": (),
    "tests/dags/test_drift_monitor_dag.py": (),
    "tests/dags/test_ml_dags_run.py": (),
    "tests/dags/test_shadow_rollback_dag.py": (),
    "tests/training/test_replay.py": (),
    "tests/training/data/test_backfill.py": (),
    "tests/training/model/test_mlflow_server.py": (),
    "tests/training/model/test_distributed_fit.py": (),  # a real Dask LocalCluster, several fits (~45 s)
    "tests/training/data/test_front_door_contract.py": (
        "test_one_null_merchant_category_is_quarantined_at_the_door_and_no_day_is_blocked",),
    "tests/training/test_cli.py": ("test_train_with_the_mlflow_server_down_ends_in_one_line_within_the_default_bound",),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path.relative_to(ROOT).as_posix()
        if path.startswith(E2E_DIR):
            item.add_marker(pytest.mark.e2e)
        names = SLOW_TESTS.get(path)
        if names is not None and (not names or item.originalname in names):
            item.add_marker(pytest.mark.slow)
