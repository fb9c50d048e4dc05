"""Where the stack listens and the environment each service gets on each profile."""

from __future__ import annotations

import configparser
import json
import os
import secrets
import shlex
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from devstack.services import (
    AIRFLOW_COMPONENTS,
    AIRFLOW_SETTINGS,
    CELERY_SETTINGS,
    CELERY_WORKERS,
    DBT_DOCS_HOST_ENV_VAR,
    DBT_DOCS_PORT_ENV_VAR,
    EXECUTORS,
    INIT_SERVICE,
    PROJECT_ROOT,
    SERVICE_COMMANDS,
    DevStackError,
    Profile,
    ServicesBackends,
    check_profile,
)
from training import stack_env
from training.config import DEFAULT_CONFIG_PATH, model_names
from training.outages import MLFLOW_RETRY_DEFAULTS
from training.paths import StatePaths
from training.settings import CONFIG_ENV_VAR, MLFLOW_UI_ENV_VAR, MODEL_ENV_VAR, MODELS_DIR_ENV_VAR

#: The merged config `make demo` writes into the state dir (devstack.demo.demo_config_file).
DEMO_CONFIG_FILE = "demo_config.yaml"

#: Inherited variables that describe another state dir / Airflow install and must not leak in.
_NOT_INHERITED_PREFIXES = ("AIRFLOW__", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION")
_NOT_INHERITED = {
    "AIRFLOW_HOME", "AIRFLOW_CONFIG", "CLOSEDLOOP_HOME", "CLOSEDLOOP_DBT_MANIFEST", "MLFLOW_HOST", "MLFLOW_PORT",
    # chosen by the profile, never by whoever started the stack
    "MLFLOW_TRACKING_URI", "CLOSEDLOOP_OPS_DB_URL", "CLOSEDLOOP_DBT_TARGET", "CLOSEDLOOP_PG_DBNAME",
    # what the stack runs is chosen by `up --models` / the caller's extra_env; a task picks its model itself
    MODELS_DIR_ENV_VAR, MODEL_ENV_VAR,
}


@dataclass(frozen=True)
class Ports:
    """Where the stack listens (localhost only on the embedded profile)."""

    airflow: int = 8080
    mlflow: int = 5000
    dbt_docs: int = 8081
    host: str = "127.0.0.1"

    ENV_VARS: ClassVar[dict[str, str]] = {
        "airflow": "CLOSEDLOOP_AIRFLOW_PORT", "mlflow": "CLOSEDLOOP_MLFLOW_PORT", "dbt_docs": "CLOSEDLOOP_DBT_DOCS_PORT",
    }

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
        return cls(airflow=free_port(), mlflow=free_port(), dbt_docs=free_port())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _secrets(paths: StatePaths) -> dict[str, str]:
    """Per-state-dir Airflow secrets, created once: every component must share the JWT secret."""
    file = paths.airflow_home / "devstack-secrets.json"
    if file.is_file():
        return dict(json.loads(file.read_text()))
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
    cfg = configparser.ConfigParser(interpolation=None)
    try:
        cfg.read(paths.airflow_home / "airflow.cfg")
        return cfg.get("core", "fernet_key", fallback="").strip() or None
    except configparser.Error:
        return None


def airflow_env(
    paths: StatePaths, ports: Ports, profile: Profile = "embedded", environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """One profile's Airflow settings (variables only; children also inherit os.environ).

    `environ` (default os.environ) names the services profile's servers (`CLOSEDLOOP_PG_*`,
    `CLOSEDLOOP_REDIS_URL`) and may set MLflow's HTTP retries (short by default: a task whose MLflow
    server is down fails within seconds, and Airflow's own retry policy takes over).
    """
    env_in = os.environ if environ is None else environ
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
        # tasks reach the API server here; it must follow the port (docs/architecture.md)
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        MLFLOW_UI_ENV_VAR: f"http://{ports.host}:{ports.mlflow}",
        **{k: env_in.get(k) or v for k, v in MLFLOW_RETRY_DEFAULTS.items()},
        **lineage_env(paths, env_in),
    }
    if profile == "services":
        b = ServicesBackends.for_state(paths, env_in)
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


#: `CLOSEDLOOP_LINEAGE=file`: OpenLineage events as JSON lines into the state dir (README "OpenLineage").
LINEAGE_ENV_VAR = "CLOSEDLOOP_LINEAGE"


def lineage_env(paths: StatePaths, environ: Mapping[str, str]) -> dict[str, str]:
    """OpenLineage for the stack: the namespace always (`$OPENLINEAGE_NAMESPACE`, default `closedloop`);
    a file transport into the state dir with `CLOSEDLOOP_LINEAGE=file`. Off otherwise, unless
    `$OPENLINEAGE_URL` (inherited; the provider reads it) names an HTTP receiver such as Marquez.

    Off by default: the provider forks a process per task event, which a 2-core dev box feels, and
    nothing reads the events unless someone asked for them.
    """
    env = {"AIRFLOW__OPENLINEAGE__NAMESPACE": environ.get("OPENLINEAGE_NAMESPACE") or "closedloop"}
    mode = environ.get(LINEAGE_ENV_VAR, "")
    if mode == "file":
        events = paths.root / "openlineage" / "events.jsonl"
        events.parent.mkdir(parents=True, exist_ok=True)
        env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps({"type": "file", "log_file_path": str(events), "append": True})
    elif mode:
        raise ValueError(f"{LINEAGE_ENV_VAR}={mode!r}: use 'file' (events into the state dir), or unset it and "
                         "set OPENLINEAGE_URL for an HTTP receiver")
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
        # the job runner serves GenAI features (judges, trace roll-ups) this project does not use: off,
        # it is seven Python processes (a huey consumer per job kind) per server that start and poll
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
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


def inherited_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What a service inherits from whoever started the stack: nothing that names another state dir."""
    return {
        k: v
        for k, v in environ.items()
        if k not in _NOT_INHERITED and not k.startswith(_NOT_INHERITED_PREFIXES)
    }


def stack_config(paths: StatePaths, environ: Mapping[str, str]) -> tuple[Path, str]:
    """The config a stack of `paths` runs with, and why: `CLOSEDLOOP_CONFIG` if set, else the one the
    state dir's stack last ran with, else the demo's merged config in the state dir, else the project's."""
    if (environ.get(CONFIG_ENV_VAR) or "").strip():
        return Path(environ[CONFIG_ENV_VAR]).resolve(), f"{CONFIG_ENV_VAR} is set"
    rec = stack_env.recorded(paths) or {}
    last = (rec.get("env") or {}).get(CONFIG_ENV_VAR)
    if last and Path(last).is_file():
        return Path(last), f"the config this state dir's stack last ran with ({stack_env.record_file(paths)})"
    demo = paths.root / DEMO_CONFIG_FILE
    if demo.is_file():
        return demo, "written by `make demo` into the state dir"
    return DEFAULT_CONFIG_PATH, "the project's default"


def stack_models_dir(
    paths: StatePaths, environ: Mapping[str, str], given: str | Path | None = None, profile: Profile = "embedded"
) -> tuple[Path | None, str]:
    """The folder of model configs a stack of `paths` runs (None: one model), and why: `given`
    (`up --models`, `make up MODELS=`) if set, else `CLOSEDLOOP_MODELS_DIR`, else the folder the state
    dir's stack last ran with (its state is laid out per model). Checked here, before anything starts:
    the folder holds `<model>.yaml` files, and several models run on the embedded profile only."""
    rec = (stack_env.recorded(paths) or {}).get("env") or {}
    if given is not None and str(given).strip():
        folder, why = Path(given), "--models / MODELS= given"
    elif (environ.get(MODELS_DIR_ENV_VAR) or "").strip():
        folder, why = Path(environ[MODELS_DIR_ENV_VAR]), f"{MODELS_DIR_ENV_VAR} is set"
    elif rec.get(MODELS_DIR_ENV_VAR):
        folder, why = Path(rec[MODELS_DIR_ENV_VAR]), f"the models this state dir's stack last ran ({stack_env.record_file(paths)})"
    else:
        return None, "one model"
    folder = folder.resolve()
    names = model_names(folder) if folder.is_dir() else []
    if not names:
        raise DevStackError(f"{folder} ({why}) holds no <model>.yaml: put one config per model there "
                            "(e.g. config/models), or start one model without MODELS=")
    if check_profile(profile) == "services" and len(names) > 1:
        raise DevStackError(
            f"{len(names)} models in {folder} on the services profile: their raw/ml/published schemas would share "
            "one PostgreSQL warehouse. Run several models on the embedded profile (one DuckDB file each), or one "
            "services stack per model (its own CLOSEDLOOP_HOME and CLOSEDLOOP_CONFIG)"
        )
    return folder, why


def recorded_models_env(paths: StatePaths) -> dict[str, str]:
    """`CLOSEDLOOP_MODELS_DIR` of the state dir's stack if it ran several models (for `env`, `attach`)."""
    folder = ((stack_env.recorded(paths) or {}).get("env") or {}).get(MODELS_DIR_ENV_VAR)
    return {MODELS_DIR_ENV_VAR: str(folder)} if folder else {}


def recorded_environ(paths: StatePaths, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environ` (default os.environ) with the servers the state dir's stack recorded: where its
    databases and broker keys really are, whatever the caller's `CLOSEDLOOP_PG_*` say now. The
    password is never recorded; the caller's `CLOSEDLOOP_PG_PASSWORD` stays."""
    env = dict(os.environ if environ is None else environ)
    rec = stack_env.recorded(paths) or {}
    for key in ("CLOSEDLOOP_PG_HOST", "CLOSEDLOOP_PG_PORT", "CLOSEDLOOP_PG_USER", "CLOSEDLOOP_REDIS_URL"):
        value = (rec.get("env") or {}).get(key)
        if value:
            env[key] = str(value)
    return env


def export_lines(env: Mapping[str, str]) -> list[str]:
    """`export K=V` lines a POSIX shell can `eval`."""
    return [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
