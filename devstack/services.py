"""The one table of service commands and settings, the profiles, and the services profile's backends.

Compose services run exactly `SERVICE_COMMANDS` (tests/devstack/test_compose.py), so what the native stack
runs is what the containers run.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, get_args

from training.outages import PG_START_HINT
from training.paths import StatePaths
from training.settings import DEFAULT_WAREHOUSE_POOL

#: The checkout the stack runs from: dags/, plugins/, config/ and examples/ live beside this package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class DevStackError(RuntimeError):
    """The stack cannot start or is unhealthy; the message says which service and where its log is."""


#: service name -> argv. The first word is resolved in the project's virtualenv natively and on
#: the image's PATH in compose. Everything variable (ports, stores, secrets) comes from the
#: environment, so the argv is the same on both profiles.
SERVICE_COMMANDS: dict[str, tuple[str, ...]] = {
    "airflow-init": ("python", "scripts/dev_stack.py", "init"),
    "airflow-api-server": ("airflow", "api-server"),
    "airflow-scheduler": ("airflow", "scheduler"),
    "airflow-dag-processor": ("airflow", "dag-processor"),
    "airflow-triggerer": ("airflow", "triggerer"),
    # services profile: two Celery workers (their own node names; task logs are read from the shared
    # log folder, so no log-serving port that two workers - or two stacks - would fight over)
    "airflow-worker-1": ("airflow", "celery", "worker", "--celery-hostname", "worker-1@%h", "--skip-serve-logs"),
    "airflow-worker-2": ("airflow", "celery", "worker", "--celery-hostname", "worker-2@%h", "--skip-serve-logs"),
    # --backend-store-uri / --artifacts-destination / --host / --port come from MLFLOW_* variables
    "mlflow": ("mlflow", "server", "--serve-artifacts", "--workers", "1"),
    "dbt-docs": ("python", "scripts/dev_stack.py", "dbt-docs"),
}
#: Runs to completion before the long-running services start.
INIT_SERVICE = "airflow-init"
AIRFLOW_COMPONENTS: tuple[str, ...] = (
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
CELERY_WORKERS: tuple[str, ...] = ("airflow-worker-1", "airflow-worker-2")
#: Every long-running service of either profile (`down` stops whichever of them run).
LONG_RUNNING: tuple[str, ...] = (*AIRFLOW_COMPONENTS, *CELERY_WORKERS, "mlflow", "dbt-docs")

Profile = Literal["embedded", "services"]
PROFILES: tuple[str, ...] = get_args(Profile)
#: What `make up` starts per profile.
PROFILE_SERVICES: dict[str, tuple[str, ...]] = {
    "embedded": (*AIRFLOW_COMPONENTS, "mlflow", "dbt-docs"),
    "services": LONG_RUNNING,
}
#: What the DAGs need to run (the demo, the e2e tests): on services the tasks run on the Celery
#: workers and log to the MLflow server.
RUNTIME_SERVICES: dict[str, tuple[str, ...]] = {
    "embedded": AIRFLOW_COMPONENTS,
    "services": (*AIRFLOW_COMPONENTS, *CELERY_WORKERS, "mlflow"),
}
#: The executor per profile. On embedded: a LocalExecutor whose workers are forked with
#: pandas/GX/MLflow/... already imported; on services the Celery workers preload the same list
#: (plugins/closedloop/warm_executor.py, warm_celery.py).
EXECUTORS: dict[str, str] = {
    "embedded": "closedloop.warm_executor.WarmLocalExecutor",
    "services": "CeleryExecutor",
}
#: Celery settings of the services profile (compose's airflow services carry exactly these).
CELERY_SETTINGS: dict[str, str] = {
    "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "closedloop.warm_celery.CELERY_CONFIG",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
}
#: Health keys of `/api/v2/monitor/health` per Airflow component.
HEALTH_KEYS = {
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag_processor",
    "airflow-triggerer": "triggerer",
}

#: Airflow settings shared by both profiles (compose's airflow services carry exactly these).
AIRFLOW_SETTINGS: dict[str, str] = {
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
    "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
    "AIRFLOW__API__WORKERS": "1",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GIT_PYTHON_REFRESH": "quiet",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    # the default, stated: one `dbt build` per day, then a task per model reading its result
    "CLOSEDLOOP_DBT_EXECUTION_MODE": "watcher",
    # production-style runs: dbt unit tests belong to development/CI (tests/dbt)
    "CLOSEDLOOP_DBT_UNIT_TESTS": "false",
    # OpenLineage (off until a transport is set: README "OpenLineage"): our tasks' datasets reach the listener
    "AIRFLOW__OPENLINEAGE__EXTRACTORS": "closedloop.lineage.ClosedloopTaskExtractor",
}
ADMIN_USER = "admin"
ADMIN_PASSWORD_ENV_VAR = "CLOSEDLOOP_AIRFLOW_ADMIN_PASSWORD"
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"
WAREHOUSE_POOL = (DEFAULT_WAREHOUSE_POOL, 1, "DuckDB allows one writer at a time")
#: On PostgreSQL the warehouse takes concurrent writers: the same pool, wide, so two DAG runs
#: writing different intervals run at once.
WAREHOUSE_POOL_SERVICES = (DEFAULT_WAREHOUSE_POOL, 16, "warehouse writers (PostgreSQL: concurrent writers are fine)")
#: dbt rebuilds whole marts: one build at a time on any warehouse (closedloop.runtime.DBT_POOL).
DBT_POOL_SERVICES = ("dbt_build", 1, "one dbt build of the marts at a time")
DBT_DOCS_HOST_ENV_VAR = "CLOSEDLOOP_DBT_DOCS_HOST"
DBT_DOCS_PORT_ENV_VAR = "CLOSEDLOOP_DBT_DOCS_PORT"


def check_profile(profile: str) -> Profile:
    if profile not in PROFILES:
        raise DevStackError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    return cast(Profile, profile)


def resolve_argv(argv: Iterable[str]) -> list[str]:
    """The table's argv with its program taken from this virtualenv (natively)."""
    words = list(argv)
    program = words[0]
    if program == "python":
        words[0] = sys.executable
    else:
        candidate = Path(sys.executable).parent / program
        words[0] = str(candidate) if candidate.exists() else program
    return words


# --------------------------------------------------------------------------------------------
# services profile: the servers, and a state dir's databases and keys on them
# --------------------------------------------------------------------------------------------


def stack_id(paths: StatePaths) -> str:
    """A short name for one state dir: prefixes its PostgreSQL databases and Redis keys, so stacks of
    different state dirs (parallel tests, a developer's `make up`) share the servers without colliding."""
    return "cl_" + hashlib.sha1(str(paths.root.resolve()).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class ServicesBackends:
    """Where the services profile keeps a state dir's state: PostgreSQL databases and Redis keys.

    The servers come from `CLOSEDLOOP_PG_HOST/PORT/USER/PASSWORD` and `CLOSEDLOOP_REDIS_URL`
    (defaults: this machine's 127.0.0.1:5432 as postgres, redis://127.0.0.1:6379/0).
    """

    stack_id: str
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "postgres"
    pg_password: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"

    #: role -> database name suffix
    DATABASES = {"airflow": "airflow", "mlflow": "mlflow", "ops": "ops", "warehouse": "warehouse"}

    @classmethod
    def for_state(cls, paths: StatePaths, environ: Mapping[str, str] | None = None) -> ServicesBackends:
        env = os.environ if environ is None else environ
        try:
            port = int(env.get("CLOSEDLOOP_PG_PORT") or 5432)
        except ValueError:
            raise DevStackError(f"CLOSEDLOOP_PG_PORT={env['CLOSEDLOOP_PG_PORT']!r} is not a port number") from None
        return cls(
            stack_id=stack_id(paths),
            pg_host=env.get("CLOSEDLOOP_PG_HOST") or "127.0.0.1",
            pg_port=port,
            pg_user=env.get("CLOSEDLOOP_PG_USER") or "postgres",
            pg_password=env.get("CLOSEDLOOP_PG_PASSWORD") or "",
            redis_url=env.get("CLOSEDLOOP_REDIS_URL") or "redis://127.0.0.1:6379/0",
        )

    def dbname(self, role: str) -> str:
        return f"{self.stack_id}_{self.DATABASES[role]}"

    def url(self, role: str) -> str:
        """SQLAlchemy URL (psycopg2) of one of the stack's databases, password included."""
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg2", username=self.pg_user, password=self.pg_password or None,
            host=self.pg_host, port=self.pg_port, database=self.dbname(role),
        ).render_as_string(hide_password=False)

    @property
    def redis_prefix(self) -> str:
        return f"{self.stack_id}:"

    def library_env(self, mlflow_url: str) -> dict[str, str]:
        """What makes the library (tasks, the demo's report) use the services."""
        env = {
            "MLFLOW_TRACKING_URI": mlflow_url,
            "CLOSEDLOOP_OPS_DB_URL": self.url("ops"),
            "CLOSEDLOOP_DBT_TARGET": "postgres",
            # writers of different intervals run at once; dbt builds stay one at a time
            "CLOSEDLOOP_DBT_POOL": DBT_POOL_SERVICES[0],
            "CLOSEDLOOP_MAX_ACTIVE_WRITER_RUNS": "4",
            "CLOSEDLOOP_PG_HOST": self.pg_host,
            "CLOSEDLOOP_PG_PORT": str(self.pg_port),
            "CLOSEDLOOP_PG_USER": self.pg_user,
            "CLOSEDLOOP_PG_DBNAME": self.dbname("warehouse"),
        }
        if self.pg_password:
            env["CLOSEDLOOP_PG_PASSWORD"] = self.pg_password
        return env


REDIS_START_HINT = ('redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
                    "--dir /var/lib/redis --logfile /var/log/redis/ci.log")


def check_servers(backends: ServicesBackends) -> None:
    """PostgreSQL and Redis answer, or a `DevStackError` saying which and how to start it."""
    import psycopg2
    import redis

    try:
        psycopg2.connect(host=backends.pg_host, port=backends.pg_port, user=backends.pg_user,
                         password=backends.pg_password or None, dbname="postgres", connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        raise DevStackError(
            f"PostgreSQL at {backends.pg_user}@{backends.pg_host}:{backends.pg_port} does not answer ({str(exc).strip()}); "
            f"start it (here: `{PG_START_HINT}`) or point CLOSEDLOOP_PG_HOST/PORT/USER/PASSWORD at one"
        ) from None
    try:
        redis.Redis.from_url(backends.redis_url, socket_connect_timeout=5).ping()
    except redis.RedisError as exc:
        raise DevStackError(
            f"Redis at {backends.redis_url} does not answer ({exc}); start it (here: `{REDIS_START_HINT}`) "
            "or point CLOSEDLOOP_REDIS_URL at one"
        ) from None


def drop_services_state(paths: StatePaths, environ: Mapping[str, str] | None = None) -> list[str]:
    """Drop a state dir's PostgreSQL databases and delete its Redis keys (a clean reset, like
    `rm -rf` of the state dir on embedded); returns the databases dropped. Stop the stack first."""
    import psycopg2
    import redis

    b = ServicesBackends.for_state(paths, environ)
    con = psycopg2.connect(host=b.pg_host, port=b.pg_port, user=b.pg_user, password=b.pg_password or None,
                           dbname="postgres", connect_timeout=5)
    con.autocommit = True
    dropped = []
    try:
        with con.cursor() as cur:
            for role in ServicesBackends.DATABASES:
                name = b.dbname(role)
                cur.execute("select 1 from pg_database where datname = %s", (name,))
                if cur.fetchone():
                    cur.execute(f'drop database "{name}" with (force)')
                    dropped.append(name)
    finally:
        con.close()
    client = redis.Redis.from_url(b.redis_url, socket_connect_timeout=5)
    keys = list(client.scan_iter(match=b.redis_prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    return dropped
