"""Deployment settings: every environment variable the library and the plugins read, in one typed object.

`settings()` is the one reader. It parses and validates the environment once per distinct set of
values (the cache is keyed on the variables' raw strings), so a process pays once and a bad value
fails with one message naming the variable, wherever it is first needed. Keying on the values
rather than caching forever keeps the call-time semantics the loop relies on: `dag.test()` runs,
the demo and the tests switch the state directory or the MLflow server within one process.

Code that builds an environment for a child process (dbt, a pod, MLflow's own export) still copies
`os.environ`: that is passing the environment on, not reading a setting.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from training.errors import ClosedloopError

HOME_ENV_VAR = "CLOSEDLOOP_HOME"
CONFIG_ENV_VAR = "CLOSEDLOOP_CONFIG"
#: A deployment of several models: the folder of their configs (one `<model>.yaml` each) ...
MODELS_DIR_ENV_VAR = "CLOSEDLOOP_MODELS_DIR"
#: ... and the one a process acts for (tasks of a model's DAGs and `python -m training --model` set it).
MODEL_ENV_VAR = "CLOSEDLOOP_MODEL"
DBT_TARGET_ENV_VAR = "CLOSEDLOOP_DBT_TARGET"
OPS_DB_ENV_VAR = "CLOSEDLOOP_OPS_DB_URL"
TRACKING_URI_ENV_VAR = "MLFLOW_TRACKING_URI"
REGISTRY_URI_ENV_VAR = "MLFLOW_REGISTRY_URI"
MLFLOW_UI_ENV_VAR = "CLOSEDLOOP_MLFLOW_UI_URL"
MANIFEST_ENV_VAR = "CLOSEDLOOP_DBT_MANIFEST"

#: The warehouse backends, which are also the dbt profile's targets: one switch points both.
Target = Literal["duckdb", "postgres"]
TARGETS: tuple[Target, ...] = ("duckdb", "postgres")
#: DuckDB allows one writer at a time: the Airflow pool with one slot every warehouse writer takes.
DEFAULT_WAREHOUSE_POOL = "duckdb_writer"

#: Every variable `Settings` reads (the cache key of `settings()`).
ENV_VARS = (
    HOME_ENV_VAR,
    CONFIG_ENV_VAR,
    MODELS_DIR_ENV_VAR,
    MODEL_ENV_VAR,
    DBT_TARGET_ENV_VAR,
    "CLOSEDLOOP_PG_HOST",
    "CLOSEDLOOP_PG_PORT",
    "CLOSEDLOOP_PG_USER",
    "CLOSEDLOOP_PG_PASSWORD",
    "CLOSEDLOOP_PG_DBNAME",
    OPS_DB_ENV_VAR,
    TRACKING_URI_ENV_VAR,
    REGISTRY_URI_ENV_VAR,
    MLFLOW_UI_ENV_VAR,
    MANIFEST_ENV_VAR,
    "CLOSEDLOOP_WAREHOUSE_POOL",
    "CLOSEDLOOP_DBT_POOL",
    "CLOSEDLOOP_MAX_ACTIVE_WRITER_RUNS",
    "CLOSEDLOOP_DBT_EXECUTION_MODE",
    "CLOSEDLOOP_IMAGE",
)


class SettingsError(ClosedloopError, ValueError):
    """An environment variable holds a value the deployment cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    """The deployment as the environment describes it. Blank values count as unset."""

    #: the state directory (`StatePaths.from_env` falls back to `.closedloop/` beside the project)
    home: Path | None = None
    #: the config YAML (`load_config` falls back to config/closedloop.yaml)
    config: Path | None = None
    #: a deployment of several models: their configs' folder, and the model this process acts for
    models_dir: Path | None = None
    model: str | None = None
    #: which warehouse the stages use and dbt builds into
    dbt_target: Target = "duckdb"
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "postgres"
    pg_password: str = ""
    pg_dbname: str = "closedloop"
    #: the operations ledger (None: SQLite in the state directory)
    ops_db_url: str | None = None
    #: MLflow tracking / registry server (None: the state directory's SQLite store)
    mlflow_tracking_uri: str | None = None
    mlflow_registry_uri: str | None = None
    #: the MLflow UI as a browser reaches it, for links from the model-health page
    mlflow_ui_url: str | None = None
    #: the precompiled dbt manifest cosmos renders from (None: in the state directory's dbt target)
    dbt_manifest: Path | None = None
    #: Airflow pool of warehouse writers; dbt's pool (the same unless the services profile splits them)
    warehouse_pool: str = DEFAULT_WAREHOUSE_POOL
    dbt_pool: str = DEFAULT_WAREHOUSE_POOL
    #: concurrent runs of a DAG that only replaces its own interval's partitions
    max_active_writer_runs: int = 1
    #: cosmos execution mode of the dbt tasks (`local`, `watcher`, ...)
    dbt_execution_mode: str = "watcher"
    #: the image heavy stages run in as Kubernetes pods, when the config names none
    image: str = "closedloop:latest"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse and validate `environ` (default: the process environment), uncached."""
        env = os.environ if environ is None else environ

        def text(name: str) -> str | None:
            return (env.get(name) or "").strip() or None

        def number(name: str, default: int) -> int:
            raw = text(name)
            try:
                return int(raw) if raw else default
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a whole number") from None

        target = text(DBT_TARGET_ENV_VAR) or "duckdb"
        if target not in TARGETS:
            raise SettingsError(
                f"unknown dbt target {target!r} ({DBT_TARGET_ENV_VAR}={target!r} names the warehouse backend "
                f"and the dbt target): use one of {', '.join(TARGETS)}"
            )
        home, config, manifest = text(HOME_ENV_VAR), text(CONFIG_ENV_VAR), text(MANIFEST_ENV_VAR)
        models_dir = text(MODELS_DIR_ENV_VAR)
        warehouse_pool = text("CLOSEDLOOP_WAREHOUSE_POOL") or DEFAULT_WAREHOUSE_POOL
        return cls(
            home=Path(home) if home else None,
            config=Path(config) if config else None,
            models_dir=Path(models_dir) if models_dir else None,
            model=text(MODEL_ENV_VAR),
            dbt_target=cast(Target, target),
            pg_host=text("CLOSEDLOOP_PG_HOST") or "127.0.0.1",
            pg_port=number("CLOSEDLOOP_PG_PORT", 5432),
            pg_user=text("CLOSEDLOOP_PG_USER") or "postgres",
            pg_password=env.get("CLOSEDLOOP_PG_PASSWORD") or "",  # a password is taken verbatim
            pg_dbname=text("CLOSEDLOOP_PG_DBNAME") or "closedloop",
            ops_db_url=text(OPS_DB_ENV_VAR),
            mlflow_tracking_uri=text(TRACKING_URI_ENV_VAR),
            mlflow_registry_uri=text(REGISTRY_URI_ENV_VAR),
            mlflow_ui_url=text(MLFLOW_UI_ENV_VAR),
            dbt_manifest=Path(manifest) if manifest else None,
            warehouse_pool=warehouse_pool,
            dbt_pool=text("CLOSEDLOOP_DBT_POOL") or warehouse_pool,
            max_active_writer_runs=number("CLOSEDLOOP_MAX_ACTIVE_WRITER_RUNS", 1),
            dbt_execution_mode=text("CLOSEDLOOP_DBT_EXECUTION_MODE") or "watcher",
            image=text("CLOSEDLOOP_IMAGE") or "closedloop:latest",
        )


def settings() -> Settings:
    """The settings of the current environment, parsed once per distinct set of values."""
    return _parsed(tuple(os.environ.get(name) for name in ENV_VARS))


@functools.lru_cache(maxsize=32)
def _parsed(values: tuple[str | None, ...]) -> Settings:
    return Settings.from_env({k: v for k, v in zip(ENV_VARS, values, strict=True) if v is not None})
