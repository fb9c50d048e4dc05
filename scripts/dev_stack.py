"""The local development stack: Airflow UI and components, MLflow UI and the dbt docs site.

Two runtime profiles, both native here:

- `embedded` (`make up`): SQLite metadata DB, WarmLocalExecutor, MLflow on the state dir's SQLite
  store, DuckDB warehouse - everything under the state directory.
- `services` (`make up PROFILE=services`): Airflow metadata, the MLflow backend store, the ops ledger
  and the warehouse on PostgreSQL (one set of databases per state dir), CeleryExecutor with Redis as
  broker and two `airflow celery worker`s, the MLflow server with proxied artifacts - and the
  library told to use them (`MLFLOW_TRACKING_URI`, `CLOSEDLOOP_OPS_DB_URL`, `CLOSEDLOOP_DBT_TARGET`).

`docker-compose.yaml` runs the very same commands on the services profile. The commands live in one
table, `SERVICE_COMMANDS`, and `tests/test_compose.py` checks that every compose service runs
exactly its entry - so what the native tests exercise is what the containers run.

    python scripts/dev_stack.py up [--profile services]   # start in the background, wait until healthy
    python scripts/dev_stack.py down      # stop what `up` started (pid files under <state>/devstack)
    python scripts/dev_stack.py status
    python scripts/dev_stack.py init      # service command: metadata DB, admin password, pool,
                                          # connections, dbt manifest + docs
    python scripts/dev_stack.py dbt-docs  # service command: serve the dbt docs site
    python scripts/dev_stack.py check-http URL   # healthcheck helper (compose)
    python scripts/dev_stack.py check-celery NODE  # healthcheck helper: the Celery worker answers a ping

From Python (the demo driver and the browser tests)::

    stack = start_stack(paths, Ports.from_env())          # profile="services" for the services profile
    stack.wait_healthy()
    ... stack.url, stack.user, stack.password, stack.env, stack.airflow("dags", "list") ...
    stack.stop()

Nothing here knows about the demo: it starts, checks and stops services.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:  # `python scripts/dev_stack.py` from anywhere
    sys.path.insert(0, str(PROJECT_ROOT))

from training.paths import StatePaths  # noqa: E402

# --------------------------------------------------------------------------------------------
# the one table of commands (compose services run exactly these; see tests/test_compose.py)
# --------------------------------------------------------------------------------------------

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
    # one `dbt build` per day watched by every model/test task (a real scheduler + triggerer run here)
    "CLOSEDLOOP_DBT_EXECUTION_MODE": "watcher",
    # production-style runs: dbt unit tests belong to development/CI (tests/dbt)
    "CLOSEDLOOP_DBT_UNIT_TESTS": "false",
}
ADMIN_USER = "admin"
ADMIN_PASSWORD_ENV_VAR = "CLOSEDLOOP_AIRFLOW_ADMIN_PASSWORD"
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"
WAREHOUSE_POOL = ("duckdb_writer", 1, "DuckDB allows one writer at a time")
#: On PostgreSQL the warehouse takes concurrent writers: the same pool, wide, so two DAG runs
#: writing different intervals run at once.
WAREHOUSE_POOL_SERVICES = ("duckdb_writer", 16, "warehouse writers (PostgreSQL: concurrent writers are fine)")
#: dbt rebuilds whole marts: one build at a time on any warehouse (closedloop.runtime.DBT_POOL).
DBT_POOL_SERVICES = ("dbt_build", 1, "one dbt build of the marts at a time")
DBT_DOCS_HOST_ENV_VAR = "CLOSEDLOOP_DBT_DOCS_HOST"
DBT_DOCS_PORT_ENV_VAR = "CLOSEDLOOP_DBT_DOCS_PORT"
MLFLOW_UI_ENV_VAR = "CLOSEDLOOP_MLFLOW_UI_URL"  # links from the model-health page
#: Inherited variables that describe another state dir / Airflow install and must not leak in.
_NOT_INHERITED_PREFIXES = ("AIRFLOW__", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION")
_NOT_INHERITED = {
    "AIRFLOW_HOME", "AIRFLOW_CONFIG", "CLOSEDLOOP_HOME", "CLOSEDLOOP_DBT_MANIFEST", "MLFLOW_HOST", "MLFLOW_PORT",
    # chosen by the profile, never by whoever started the stack
    "MLFLOW_TRACKING_URI", "CLOSEDLOOP_OPS_DB_URL", "CLOSEDLOOP_DBT_TARGET", "CLOSEDLOOP_PG_DBNAME",
}


class DevStackError(RuntimeError):
    """The stack cannot start or is unhealthy; the message says which service and where its log is."""


class RestApiError(RuntimeError):
    """The Airflow REST API refused a request; carries the HTTP status and the response body."""

    def __init__(self, message: str, status: int | None = None, body: str = ""):
        super().__init__(message)
        self.status = status
        self.body = body


# --------------------------------------------------------------------------------------------
# ports and environments
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ports:
    """Where the stack listens (localhost only on the embedded profile)."""

    airflow: int = 8080
    mlflow: int = 5000
    dbt_docs: int = 8081
    host: str = "127.0.0.1"

    ENV_VARS = {"airflow": "CLOSEDLOOP_AIRFLOW_PORT", "mlflow": "CLOSEDLOOP_MLFLOW_PORT", "dbt_docs": "CLOSEDLOOP_DBT_DOCS_PORT"}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ports:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for key, var in cls.ENV_VARS.items():
            if env.get(var):
                try:
                    values[key] = int(env[var])
                except ValueError:
                    raise DevStackError(f"{var}={env[var]!r} is not a port number") from None
        return cls(**values)

    @classmethod
    def free(cls) -> Ports:
        """Three currently free ports (tests run beside a developer's `make up`)."""
        return cls(airflow=_free_port(), mlflow=_free_port(), dbt_docs=_free_port())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _secrets(paths: StatePaths) -> dict[str, str]:
    """Per-state-dir Airflow secrets, created once: every component must share the JWT secret."""
    file = paths.airflow_home / "devstack-secrets.json"
    if file.is_file():
        return json.loads(file.read_text())
    from cryptography.fernet import Fernet

    values = {
        "jwt_secret": secrets.token_urlsafe(64),
        "api_secret_key": secrets.token_urlsafe(32),
        # a state dir set up by other tooling may hold encrypted connections: keep its key
        "fernet_key": _configured_fernet_key(paths) or Fernet.generate_key().decode(),
    }
    file.parent.mkdir(parents=True, exist_ok=True)
    file.touch(mode=0o600)
    file.write_text(json.dumps(values))
    return values


def _configured_fernet_key(paths: StatePaths) -> str | None:
    """The fernet key of an existing `airflow.cfg` in this AIRFLOW_HOME, if any."""
    import configparser

    cfg = configparser.ConfigParser(interpolation=None)
    try:
        cfg.read(paths.airflow_home / "airflow.cfg")
        return cfg.get("core", "fernet_key", fallback="").strip() or None
    except configparser.Error:
        return None


def check_profile(profile: str) -> Profile:
    if profile not in PROFILES:
        raise DevStackError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    return cast(Profile, profile)


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


def airflow_env(paths: StatePaths, ports: Ports, profile: Profile = "embedded") -> dict[str, str]:
    """One profile's Airflow settings (variables only; children also inherit os.environ)."""
    home = paths.airflow_home
    api = f"http://{ports.host}:{ports.airflow}"
    keys = _secrets(paths)
    env = {
        **AIRFLOW_SETTINGS,
        "AIRFLOW__CORE__EXECUTOR": EXECUTORS[check_profile(profile)],
        "CLOSEDLOOP_HOME": str(paths.root),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__API__HOST": ports.host,
        "AIRFLOW__API__PORT": str(ports.airflow),
        "AIRFLOW__API__BASE_URL": api,
        # tasks reach the API server here; it must follow the port (DESIGN.md)
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        MLFLOW_UI_ENV_VAR: f"http://{ports.host}:{ports.mlflow}",
    }
    if profile == "services":
        b = ServicesBackends.for_state(paths)
        env.update({
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": b.url("airflow"),
            # a dozen processes share one PostgreSQL server (and other stacks): small pools
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "2",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "4",
            **CELERY_SETTINGS,
            "AIRFLOW__CELERY__BROKER_URL": b.redis_url,
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": b.redis_prefix,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + b.url("airflow"),
            **b.library_env(f"http://{ports.host}:{ports.mlflow}"),
        })
    return env


def mlflow_env(paths: StatePaths, ports: Ports, profile: Profile = "embedded") -> dict[str, str]:
    """`mlflow server` with proxied artifacts under the state dir: on the state dir's SQLite store
    (the one training writes) on embedded, on the stack's own PostgreSQL database on services."""
    store = ServicesBackends.for_state(paths).url("mlflow") if check_profile(profile) == "services" else paths.mlflow_tracking_uri
    return {
        "MLFLOW_BACKEND_STORE_URI": store,
        "MLFLOW_ARTIFACTS_DESTINATION": str(paths.mlflow_artifacts),
        "MLFLOW_HOST": ports.host,
        "MLFLOW_PORT": str(ports.mlflow),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def dbt_docs_env(paths: StatePaths, ports: Ports) -> dict[str, str]:
    return {
        "CLOSEDLOOP_HOME": str(paths.root),
        DBT_DOCS_HOST_ENV_VAR: ports.host,
        DBT_DOCS_PORT_ENV_VAR: str(ports.dbt_docs),
    }


def service_env(service: str, paths: StatePaths, ports: Ports, profile: Profile = "embedded") -> dict[str, str]:
    """The variables one service gets on `profile` (on top of the inherited environment)."""
    if service == INIT_SERVICE and profile == "services":
        # init creates the MLflow database too
        return {**airflow_env(paths, ports, profile), "MLFLOW_BACKEND_STORE_URI": mlflow_env(paths, ports, profile)["MLFLOW_BACKEND_STORE_URI"]}
    if service in (INIT_SERVICE, *AIRFLOW_COMPONENTS, *CELERY_WORKERS):
        return airflow_env(paths, ports, profile)
    if service == "mlflow":
        return mlflow_env(paths, ports, profile)
    if service == "dbt-docs":
        return {**airflow_env(paths, ports, profile), **dbt_docs_env(paths, ports)}
    raise KeyError(f"unknown service {service!r}; known: {', '.join(SERVICE_COMMANDS)}")


def _inherited(environ: Mapping[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in environ.items()
        if k not in _NOT_INHERITED and not k.startswith(_NOT_INHERITED_PREFIXES)
    }


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
# the running stack
# --------------------------------------------------------------------------------------------


def devstack_dir(paths: StatePaths) -> Path:
    return paths.root / "devstack"


@dataclass
class Stack:
    """Background services of one state directory, with their pid files and logs."""

    paths: StatePaths
    ports: Ports
    env: dict[str, str]
    services: tuple[str, ...]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    user: str = ADMIN_USER
    #: per service: the environment it was started with (to restart it the same way)
    service_envs: dict[str, dict[str, str]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    profile: Profile = "embedded"
    #: per service: its log's size when it was (re)started (a worker is ready once it says so after that)
    log_offsets: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.ports.host}:{self.ports.airflow}"

    airflow_url = url

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.ports.host}:{self.ports.mlflow}"

    @property
    def dbt_docs_url(self) -> str:
        return f"http://{self.ports.host}:{self.ports.dbt_docs}"

    @property
    def model_health_url(self) -> str:
        return f"{self.url}/plugin/model-health"

    @property
    def airflow_db(self) -> Path:
        """The SQLite metadata DB (embedded profile); see `metadata_connection` for either profile."""
        return self.paths.airflow_home / "airflow.db"

    @property
    def backends(self) -> ServicesBackends:
        return ServicesBackends.for_state(self.paths, self.env)

    @property
    def library_env(self) -> dict[str, str]:
        """Variables a process needs to read this stack's state with `training` (the demo's report):
        none on embedded (the state dir says it all), the servers on services."""
        return self.backends.library_env(self.mlflow_url) if self.profile == "services" else {}

    def metadata_connection(self) -> Any:
        """A DB-API connection to the Airflow metadata DB (read-only use): SQLite or PostgreSQL."""
        if self.profile == "services":
            import psycopg2

            b = self.backends
            return psycopg2.connect(host=b.pg_host, port=b.pg_port, user=b.pg_user, password=b.pg_password or None,
                                    dbname=b.dbname("airflow"), connect_timeout=5)
        import sqlite3

        return sqlite3.connect(f"file:{self.airflow_db}?mode=ro", uri=True, timeout=5)

    @property
    def log_dir(self) -> Path:
        return devstack_dir(self.paths) / "logs"

    @property
    def password(self) -> str:
        return admin_password(self.paths)

    def log_of(self, service: str) -> Path:
        return self.log_dir / f"{service}.log"

    def airflow(self, *args: str, check: bool = True, timeout: float = 600, attempts: int = 3) -> subprocess.CompletedProcess:
        """An `airflow` CLI command in this stack's environment (retried: SQLite may be busy)."""
        for attempt in range(1, attempts + 1):
            result = subprocess.run(
                resolve_argv(["airflow", *args]),
                env=self.env,
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if result.returncode == 0 or not check:
                return result
            if attempt < attempts:
                time.sleep(3)
        raise DevStackError(f"`airflow {' '.join(args)}` failed:\n{result.stderr[-3000:]}")

    def spawn(self, name: str) -> subprocess.Popen:
        """Start one service in the background (its own process group), recording its pid file."""
        with open(self.log_of(name), "ab") as log:
            self.log_offsets[name] = log.tell()
            proc = subprocess.Popen(
                resolve_argv(SERVICE_COMMANDS[name]),
                env=self.service_envs[name], cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.procs[name] = proc
        _write_pid(self.paths, name, proc.pid, SERVICE_COMMANDS[name])
        return proc

    def check_alive(self, restart_budget: int = 0) -> None:
        """Raise naming any service that exited, with the end of its log.

        With a `restart_budget`, a service that exited is started again up to that many times
        first (like compose's `restart: unless-stopped`); SQLite can refuse a component's first
        writes while its siblings start on a loaded machine.
        """
        for name in self.services:
            pid = self._pid(name)
            if pid is None or not _alive(self.paths, name):
                if name in self.service_envs and self.restarts.get(name, 0) < restart_budget:
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    with open(self.log_of(name), "a") as log:
                        log.write(f"\n--- dev_stack: {name} exited; restart {self.restarts[name]} of {restart_budget} ---\n")
                    print(f"{name} exited during start-up; restarting it (see {self.log_of(name)})", file=sys.stderr)
                    if name in self.procs:  # whatever its group left behind (workers holding the port)
                        _signal_group(self.procs[name].pid, signal.SIGKILL)
                    self.spawn(name)
                    continue
                raise DevStackError(f"{name} is not running; last lines of {self.log_of(name)}:\n{_tail(self.log_of(name))}")

    def _pid(self, name: str) -> int | None:
        proc = self.procs.get(name)
        if proc is not None:
            return proc.pid if proc.poll() is None else None
        rec = _read_pid(self.paths, name)
        return None if rec is None else rec["pid"]

    def health(self) -> dict[str, str]:
        """service -> 'healthy' or why not (one probe per service, no waiting)."""
        out: dict[str, str] = {}
        want_airflow = [s for s in self.services if s in AIRFLOW_COMPONENTS]
        if want_airflow:
            try:
                health = _get_json(f"{self.url}/api/v2/monitor/health")
                for s in want_airflow:
                    key = HEALTH_KEYS.get(s)
                    status = "healthy" if key is None else (health.get(key) or {}).get("status") or "unknown"
                    out[s] = status
            except (OSError, ValueError) as exc:
                out.update({s: f"api-server not answering: {exc}" for s in want_airflow})
        for s in self.services:
            if s in CELERY_WORKERS:
                out[s] = "healthy" if self._worker_ready(s) else "not ready (no 'ready.' in its log yet)"
        if "mlflow" in self.services:
            out["mlflow"] = "healthy" if http_ok(f"{self.mlflow_url}/health") else "not answering"
        if "dbt-docs" in self.services:
            out["dbt-docs"] = "healthy" if http_ok(f"{self.dbt_docs_url}/") else "not answering"
        return out

    def _worker_ready(self, name: str) -> bool:
        """A Celery worker logs `<node> ready.` once connected to the broker and consuming."""
        try:
            with open(self.log_of(name), "rb") as log:
                log.seek(self.log_offsets.get(name, 0))
                return b" ready." in log.read()
        except OSError:
            return False

    def wait_healthy(self, timeout_s: float = 300, restart_budget: int = 2) -> None:
        """Until every service answers healthy; raises `DevStackError` naming the laggards.

        A service that exits meanwhile is restarted up to `restart_budget` times.
        """
        deadline = time.monotonic() + timeout_s
        health: dict[str, str] = {}
        while time.monotonic() < deadline:
            self.check_alive(restart_budget)
            health = self.health()
            if all(v == "healthy" for v in health.values()):
                return
            time.sleep(2)
        bad = {k: v for k, v in health.items() if v != "healthy"}
        raise DevStackError(f"not healthy after {timeout_s:.0f}s: {bad}; logs in {self.log_dir}")

    def wait_for_dags(self, dag_ids: Iterable[str], timeout_s: float = 240) -> None:
        """Until the dag-processor has parsed every DAG in `dag_ids`; raises on import errors."""
        wanted = set(dag_ids)
        deadline = time.monotonic() + timeout_s
        token = get_token(self.url, self.user, self.password)
        missing = wanted
        while time.monotonic() < deadline:
            self.check_alive()
            errors = _get_json(f"{self.url}/api/v2/importErrors", token)
            if errors.get("total_entries"):
                found = [(e.get("filename"), (e.get("stack_trace") or "")[-800:]) for e in errors["import_errors"]]
                raise DevStackError(f"DAG import errors: {found}")
            dags = _get_json(f"{self.url}/api/v2/dags?limit=1000", token)
            missing = wanted - {d["dag_id"] for d in dags.get("dags", [])}
            if not missing:
                return
            time.sleep(2)
        raise DevStackError(f"DAGs not parsed after {timeout_s:.0f}s: {sorted(missing)}; see {self.log_of('airflow-dag-processor')}")

    def describe(self) -> str:
        lines = [f"closedloop dev stack, {self.profile} profile (state {self.paths.root})"]
        if any(s in AIRFLOW_COMPONENTS for s in self.services):
            lines += [
                f"  Airflow UI    {self.url}    login: {self.user} / {self.password}",
                f"  Model health  {self.model_health_url}",
            ]
        workers = [s for s in self.services if s in CELERY_WORKERS]
        if workers:
            b = self.backends
            lines.append(f"  Celery        {len(workers)} workers, broker {b.redis_url} (keys {b.redis_prefix}*)")
            lines.append(f"  PostgreSQL    {b.pg_user}@{b.pg_host}:{b.pg_port}, databases {b.stack_id}_*")
        if "mlflow" in self.services:
            lines.append(f"  MLflow UI     {self.mlflow_url}")
        if "dbt-docs" in self.services:
            lines.append(f"  dbt docs      {self.dbt_docs_url}")
        lines.append(f"  logs, pids    {devstack_dir(self.paths)}")
        return "\n".join(lines)

    def stop(self, timeout_s: float = 30) -> None:
        """Stop every service of this stack (process groups: api-server workers, task processes)."""
        stop_services(self.paths, self.services, timeout_s=timeout_s, procs=self.procs)
        self.procs.clear()


def admin_password(paths: StatePaths) -> str:
    file = paths.airflow_home / PASSWORD_FILE
    try:
        return str(json.loads(file.read_text())[ADMIN_USER])
    except (OSError, ValueError, KeyError):
        raise DevStackError(f"no admin password in {file} yet: run `python scripts/dev_stack.py init`") from None


def start_stack(
    paths: StatePaths,
    ports: Ports | None = None,
    *,
    services: Iterable[str] | None = None,
    profile: Profile = "embedded",
    extra_env: Mapping[str, str] | None = None,
    init_timeout_s: float = 600,
) -> Stack:
    """Run the init command, then start `services` (default: the profile's) in the background;
    returns without waiting.

    Call `.wait_healthy()` next. `extra_env` reaches every service and overrides the stack's own
    variables (e.g. `CLOSEDLOOP_CONFIG`, `AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC`).
    Raises `DevStackError` if a port is taken, the stack of this state dir already runs, or (services)
    PostgreSQL or Redis does not answer.
    """
    ports = ports or Ports.from_env()
    profile = check_profile(profile)
    chosen = tuple(PROFILE_SERVICES[profile] if services is None else services)
    if profile == "embedded" and any(s in CELERY_WORKERS for s in chosen):
        raise DevStackError("Celery workers belong to the services profile: start_stack(..., profile='services')")
    unknown = [s for s in chosen if s not in LONG_RUNNING]
    if unknown:
        raise DevStackError(f"unknown services {unknown}; choose from {', '.join(LONG_RUNNING)}")
    paths.ensure()
    running = [s for s in LONG_RUNNING if _alive(paths, s)]
    if running:
        raise DevStackError(f"the stack of {paths.root} is already running ({', '.join(running)}): `make down` first")
    port_of = {"airflow-api-server": ports.airflow, "mlflow": ports.mlflow, "dbt-docs": ports.dbt_docs}
    for s in chosen:
        if s in port_of and not _port_free(ports.host, port_of[s]):
            var = {"airflow-api-server": "CLOSEDLOOP_AIRFLOW_PORT", "mlflow": "CLOSEDLOOP_MLFLOW_PORT", "dbt-docs": "CLOSEDLOOP_DBT_DOCS_PORT"}[s]
            raise DevStackError(f"port {ports.host}:{port_of[s]} for {s} is taken: free it or set {var}")
    base = _inherited(os.environ)
    if profile == "services":
        check_servers(ServicesBackends.for_state(paths, base))
    extra = dict(extra_env or {})  # wins over the stack's own settings (e.g. faster dag parsing in a demo)
    log_dir = devstack_dir(paths) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    (devstack_dir(paths) / "ports.json").write_text(json.dumps(ports.__dict__))  # for status / attach
    (devstack_dir(paths) / "profile").write_text(profile)

    init_env = {**base, **service_env(INIT_SERVICE, paths, ports, profile), **extra}
    with open(log_dir / f"{INIT_SERVICE}.log", "ab") as log:
        try:
            done = subprocess.run(
                resolve_argv(SERVICE_COMMANDS[INIT_SERVICE]),
                env=init_env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=init_timeout_s, check=False,
            )
        except subprocess.TimeoutExpired:
            raise DevStackError(f"init timed out after {init_timeout_s:.0f}s; see {log_dir / (INIT_SERVICE + '.log')}") from None
    if done.returncode != 0:
        raise DevStackError(f"init failed (exit {done.returncode}):\n{_tail(log_dir / (INIT_SERVICE + '.log'))}")

    stack = Stack(
        paths=paths,
        ports=ports,
        env=init_env,
        services=chosen,
        service_envs={name: {**base, **service_env(name, paths, ports, profile), **extra} for name in chosen},
        profile=profile,
    )
    try:
        for name in chosen:
            stack.spawn(name)
    except Exception:
        stack.stop()
        raise
    return stack


def attach(paths: StatePaths, ports: Ports | None = None) -> Stack:
    """The stack of a state dir started by another process (`make up`), from its pid files."""
    ports = ports or _recorded_ports(paths) or Ports.from_env()
    profile = recorded_profile(paths)
    services = tuple(s for s in LONG_RUNNING if _read_pid(paths, s) is not None)
    return Stack(paths=paths, ports=ports, env={**_inherited(os.environ), **airflow_env(paths, ports, profile)},
                 services=services, profile=profile)


def recorded_profile(paths: StatePaths) -> Profile:
    """The profile the state dir's stack was last started with (embedded if never)."""
    try:
        return check_profile((devstack_dir(paths) / "profile").read_text().strip())
    except (OSError, DevStackError):
        return "embedded"


# --------------------------------------------------------------------------------------------
# services profile: the servers, and a state dir's databases and keys on them
# --------------------------------------------------------------------------------------------

PG_START_HINT = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
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


# --------------------------------------------------------------------------------------------
# pid files: <state>/devstack/<service>.pid = {"pid", "start_ticks", "argv"}
# --------------------------------------------------------------------------------------------


def _pid_file(paths: StatePaths, name: str) -> Path:
    return devstack_dir(paths) / f"{name}.pid"


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): tells a reused pid from ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _write_pid(paths: StatePaths, name: str, pid: int, argv: Iterable[str]) -> None:
    _pid_file(paths, name).write_text(json.dumps({"pid": pid, "start_ticks": _start_ticks(pid), "argv": list(argv)}))


def _read_pid(paths: StatePaths, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(_pid_file(paths, name).read_text())
    except (OSError, ValueError):
        return None


def _alive(paths: StatePaths, name: str) -> bool:
    rec = _read_pid(paths, name)
    if rec is None:
        return False
    ticks = _start_ticks(int(rec["pid"]))
    if ticks is None or ticks != rec.get("start_ticks"):
        return False
    try:
        state = Path(f"/proc/{rec['pid']}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop_services(
    paths: StatePaths,
    services: Iterable[str] = LONG_RUNNING,
    *,
    timeout_s: float = 30,
    procs: Mapping[str, subprocess.Popen] | None = None,
) -> list[str]:
    """SIGTERM each service's process group, SIGKILL what is left after `timeout_s`; returns the stopped."""
    procs = procs or {}
    targets: dict[str, int] = {}
    for name in services:
        if _alive(paths, name):
            targets[name] = int(_read_pid(paths, name)["pid"])  # type: ignore[index]
        elif name in procs and procs[name].poll() is None:
            targets[name] = procs[name].pid
    for pid in targets.values():
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for name, pid in targets.items():
        while time.monotonic() < deadline and _group_alive(pid, procs.get(name)):
            time.sleep(0.3)
        if _group_alive(pid, procs.get(name)):
            _signal_group(pid, signal.SIGKILL)
        if name in procs:
            try:
                procs[name].wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    for name in services:
        _pid_file(paths, name).unlink(missing_ok=True)
    return list(targets)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session: the service leads its own group
    except ProcessLookupError:
        pass


def _group_alive(pgid: int, proc: subprocess.Popen | None) -> bool:
    if proc is not None:
        proc.poll()  # reap our own child so it does not linger as a zombie
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a group of only zombies is gone for our purposes
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _recorded_ports(paths: StatePaths) -> Ports | None:
    try:
        return Ports(**json.loads((devstack_dir(paths) / "ports.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


# --------------------------------------------------------------------------------------------
# HTTP helpers and the REST trigger
# --------------------------------------------------------------------------------------------


def http_ok(url: str, timeout: float = 5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 400
    except (OSError, ValueError):
        return False


def _request(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 30) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        raise RestApiError(f"{method} {url} -> HTTP {exc.code}: {text[:1000]}", exc.code, text) from None


def _get_json(url: str, token: str | None = None) -> Any:
    return _request("GET", url, token=token)


def get_token(base_url: str, user: str, password: str) -> str:
    """A JWT for the Airflow REST API (`POST /auth/token`, SimpleAuthManager)."""
    reply = _request("POST", f"{base_url.rstrip('/')}/auth/token", {"username": user, "password": password})
    return str(reply["access_token"])


def trigger_via_rest(
    base_url: str, user: str, password: str, dag_id: str, conf: Mapping[str, Any],
    *, run_id: str | None = None, logical_date: str | None = None,
) -> str:
    """Trigger `dag_id` through the REST API v2 with `conf`; returns the new run id.

    `logical_date` defaults to null: the run is not tied to a data interval (a manual trigger).
    A paused DAG accepts the run but the scheduler starts it only once the DAG is unpaused.
    """
    token = get_token(base_url, user, password)
    quoted = urllib.parse.quote(dag_id, safe="")
    body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf)}
    if run_id:
        body["dag_run_id"] = run_id
    url = f"{base_url.rstrip('/')}/api/v2/dags/{quoted}/dagRuns"
    for attempt in range(4):
        try:
            reply = _request("POST", url, body, token=token)
            break
        except RestApiError as exc:
            # SQLite metadata DB under load: "database is locked" comes back as a 500 - retry that only
            if exc.status != 500 or "Database error" not in exc.body or attempt == 3:
                raise
            time.sleep(2 * (attempt + 1))
    return str(reply["dag_run_id"])


# --------------------------------------------------------------------------------------------
# service commands: init, dbt-docs
# --------------------------------------------------------------------------------------------


def _postgres_databases(environ: Mapping[str, str]) -> list[str]:
    """SQLAlchemy URLs of the PostgreSQL databases this profile uses (none on the embedded profile)."""
    urls = [environ.get(k, "") for k in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "MLFLOW_BACKEND_STORE_URI", "CLOSEDLOOP_OPS_DB_URL")]
    if environ.get("CLOSEDLOOP_DBT_TARGET") == "postgres":
        from sqlalchemy.engine import URL

        urls.append(
            URL.create(
                "postgresql+psycopg2",
                username=environ.get("CLOSEDLOOP_PG_USER", "postgres"),
                password=environ.get("CLOSEDLOOP_PG_PASSWORD") or None,
                host=environ.get("CLOSEDLOOP_PG_HOST", "127.0.0.1"),
                port=int(environ.get("CLOSEDLOOP_PG_PORT", "5432")),
                database=environ.get("CLOSEDLOOP_PG_DBNAME", "closedloop"),
            ).render_as_string(hide_password=False)
        )
    return [u for u in urls if u.startswith("postgresql")]


def create_databases(environ: Mapping[str, str], wait_s: float = 60) -> list[str]:
    """Create each PostgreSQL database named in the profile's URLs if missing; returns those created."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    created: list[str] = []
    for raw in _postgres_databases(environ):
        url = make_url(raw)
        name = url.database
        admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        deadline = time.monotonic() + wait_s
        try:
            while True:
                try:
                    with admin.connect() as con:
                        exists = con.execute(sa.text("select 1 from pg_database where datname = :n"), {"n": name}).first()
                        if not exists:
                            con.execute(sa.text(f'create database "{name}"'))
                            created.append(str(name))
                    break
                except sa.exc.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(2)
        finally:
            admin.dispose()
    return created


def ensure_admin_password(paths: StatePaths, environ: Mapping[str, str]) -> None:
    """The SimpleAuthManager password file: `CLOSEDLOOP_AIRFLOW_ADMIN_PASSWORD` if given, else kept or generated."""
    file = paths.airflow_home / PASSWORD_FILE
    try:
        passwords = json.loads(file.read_text())
    except (OSError, ValueError):
        passwords = {}
    wanted = environ.get(ADMIN_PASSWORD_ENV_VAR) or passwords.get(ADMIN_USER) or secrets.token_urlsafe(12)
    if passwords.get(ADMIN_USER) != wanted:
        passwords[ADMIN_USER] = wanted
        file.parent.mkdir(parents=True, exist_ok=True)
        file.touch(mode=0o600)
        file.write_text(json.dumps(passwords) + "\n")


def _connections(paths: StatePaths, environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """Connections a user's hooks can use: the warehouse and the MLflow tracking server."""
    if environ.get("CLOSEDLOOP_DBT_TARGET") == "postgres":
        warehouse = {
            "conn_type": "postgres",
            "host": environ.get("CLOSEDLOOP_PG_HOST", "127.0.0.1"),
            "port": int(environ.get("CLOSEDLOOP_PG_PORT", "5432")),
            "login": environ.get("CLOSEDLOOP_PG_USER", "postgres"),
            "password": environ.get("CLOSEDLOOP_PG_PASSWORD") or None,
            "schema": environ.get("CLOSEDLOOP_PG_DBNAME", "closedloop"),
        }
    else:
        warehouse = {"conn_type": "generic", "extra": json.dumps({"path": str(paths.warehouse), "engine": "duckdb"})}
    mlflow_url = environ.get("MLFLOW_TRACKING_URI") or environ.get(MLFLOW_UI_ENV_VAR) or ""
    return [
        {"conn_id": "closedloop_warehouse", "description": "closedloop warehouse (dbt target)", **warehouse},
        {"conn_id": "closedloop_mlflow", "description": "MLflow tracking server", "conn_type": "http", "host": mlflow_url},
    ]


def _airflow_metadata(paths: StatePaths, environ: Mapping[str, str]) -> None:
    """Migrate the metadata DB, then the pool and the connections (idempotent)."""
    subprocess.run(resolve_argv(["airflow", "db", "migrate"]), check=True, env=dict(environ), cwd=PROJECT_ROOT)
    from airflow.models.connection import Connection  # the ORM model (metadata DB), not the SDK one
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    # one writer at a time on DuckDB; PostgreSQL takes concurrent writers
    on_postgres = environ.get("CLOSEDLOOP_DBT_TARGET") == "postgres"
    name, slots, description = WAREHOUSE_POOL_SERVICES if on_postgres else WAREHOUSE_POOL
    Pool.create_or_update_pool(name, slots, description, include_deferred=False)
    if on_postgres:
        Pool.create_or_update_pool(*DBT_POOL_SERVICES, include_deferred=False)
    with create_session() as session:
        for spec in _connections(paths, environ):
            found = session.query(Connection).filter(Connection.conn_id == spec["conn_id"]).one_or_none()
            if found is not None:
                session.delete(found)
                session.flush()
            session.add(Connection(**spec))


def _dbt_docs(paths: StatePaths, target: str) -> None:
    """`dbt docs generate` (also writes the manifest cosmos renders from); else at least `dbt parse`."""
    from training.config import load_config
    from training.data.dbt import DbtError, parse_manifest, run_dbt

    cfg = load_config()
    try:
        run_dbt(["docs", "generate"], paths, cfg, target)  # type: ignore[arg-type]
    except DbtError as exc:
        print(f"dbt docs generate failed; the docs site will say so:\n{exc}", file=sys.stderr)
        parse_manifest(paths, cfg, target)  # type: ignore[arg-type]
        (paths.dbt_target / "index.html").write_text(
            "<!doctype html><title>dbt docs unavailable</title><h1>dbt docs could not be generated</h1>"
            f"<pre>{_html_escape(str(exc))}</pre>"
        )
    if not (paths.dbt_target / "manifest.json").is_file():
        raise DevStackError(f"no dbt manifest at {paths.dbt_target / 'manifest.json'}")


def _html_escape(text: str) -> str:
    import html

    return html.escape(text)


def run_init(environ: Mapping[str, str] | None = None) -> None:
    """What the init service does, in order; every step is idempotent."""
    env = dict(os.environ if environ is None else environ)
    paths = StatePaths.from_env().ensure()
    created = create_databases(env)
    if created:
        print(f"created PostgreSQL databases: {', '.join(created)}")
    ensure_admin_password(paths, env)
    _airflow_metadata(paths, env)
    _dbt_docs(paths, env.get("CLOSEDLOOP_DBT_TARGET", "duckdb"))
    print(f"init done: metadata DB, admin password, pool {WAREHOUSE_POOL[0]}, connections, dbt manifest + docs", flush=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        sys.stderr.write("dbt-docs: " + (format % args) + "\n")


def serve_dbt_docs(paths: StatePaths, host: str, port: int) -> None:
    """Serve the dbt docs site (index.html + manifest.json + catalog.json) from the state dir."""
    if not (paths.dbt_target / "index.html").is_file():
        _dbt_docs(paths, os.environ.get("CLOSEDLOOP_DBT_TARGET", "duckdb"))
    handler = functools.partial(_QuietHandler, directory=str(paths.dbt_target))
    with http.server.ThreadingHTTPServer((host, port), handler) as server:
        print(f"dbt docs on http://{host}:{port} from {paths.dbt_target}", flush=True)
        server.serve_forever()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _cmd_up(ns: argparse.Namespace) -> int:
    paths = StatePaths.from_env()
    profile = check_profile(ns.profile)
    if recorded_profile(paths) == profile and all(_alive(paths, s) for s in PROFILE_SERVICES[profile]):
        print(attach(paths).describe())
        print("already running; `make down` stops it")
        return 0
    stopped = stop_services(paths)  # a half-running stack from an earlier `up`
    if stopped:
        print(f"stopped leftovers: {', '.join(stopped)}")
    ports = Ports.from_env()
    t0 = time.monotonic()
    print(f"starting the dev stack ({profile} profile) in {paths.root} (init: metadata DB, dbt docs; then the services) ...", flush=True)
    stack = start_stack(paths, ports, profile=profile)
    try:
        stack.wait_healthy(timeout_s=ns.timeout)
    except DevStackError:
        stack.stop()
        raise
    print(f"up in {time.monotonic() - t0:.0f}s\n{stack.describe()}\nStop with `make down`.")
    return 0


def _cmd_down(ns: argparse.Namespace) -> int:
    paths = StatePaths.from_env()
    stopped = stop_services(paths)
    print(f"stopped: {', '.join(stopped)}" if stopped else f"nothing running for {paths.root}")
    return 0


def _cmd_status(ns: argparse.Namespace) -> int:
    paths = StatePaths.from_env()
    alive = {s: _alive(paths, s) for s in PROFILE_SERVICES[recorded_profile(paths)]}
    for s, ok in alive.items():
        print(f"  {s:24s} {'running' if ok else 'stopped'}")
    if any(alive.values()):
        print(attach(paths).describe())
    return 0 if all(alive.values()) else 3


def _cmd_init(ns: argparse.Namespace) -> int:
    run_init()
    return 0


def _cmd_dbt_docs(ns: argparse.Namespace) -> int:
    serve_dbt_docs(
        StatePaths.from_env(),
        os.environ.get(DBT_DOCS_HOST_ENV_VAR, "127.0.0.1"),
        int(os.environ.get(DBT_DOCS_PORT_ENV_VAR, "8081")),
    )
    return 0


def _cmd_check_http(ns: argparse.Namespace) -> int:
    return 0 if http_ok(ns.url) else 1


def celery_ping(node: str, timeout_s: float = 5) -> bool:
    """The Celery worker `node` answers a ping over the broker (run in the workers' environment)."""
    from airflow.providers.celery.executors.celery_executor import app

    return bool(app.control.ping(destination=[node], timeout=timeout_s))


def _cmd_check_celery(ns: argparse.Namespace) -> int:
    return 0 if celery_ping(ns.node) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/dev_stack.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the stack in the background and wait until healthy")
    up.add_argument("--timeout", type=float, default=300)
    up.add_argument("--profile", choices=PROFILES, default=os.environ.get("CLOSEDLOOP_PROFILE") or "embedded",
                    help="embedded (SQLite, DuckDB, LocalExecutor) or services (PostgreSQL, Redis + Celery, MLflow server)")
    sub.add_parser("down", help="stop the stack of $CLOSEDLOOP_HOME")
    sub.add_parser("status", help="which services run")
    sub.add_parser("init", help="service command: metadata DB, admin password, pool, connections, dbt docs")
    sub.add_parser("dbt-docs", help="service command: serve the dbt docs site")
    check = sub.add_parser("check-http", help="exit 0 if URL answers 2xx/3xx (healthchecks)")
    check.add_argument("url")
    ping = sub.add_parser("check-celery", help="exit 0 if Celery worker NODE answers a ping (healthchecks)")
    ping.add_argument("node", help="worker node name, e.g. worker-1@$HOSTNAME")
    ns = parser.parse_args(argv)
    handler = {
        "up": _cmd_up, "down": _cmd_down, "status": _cmd_status, "init": _cmd_init,
        "dbt-docs": _cmd_dbt_docs, "check-http": _cmd_check_http, "check-celery": _cmd_check_celery,
    }[ns.cmd]
    try:
        return handler(ns)
    except DevStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
