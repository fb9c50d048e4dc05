"""The init service (`python scripts/dev_stack.py init`): everything the long-running services need
before they start - databases, admin password, metadata DB, pools, connections, dbt manifest + docs.
Every step is idempotent: compose and `make up` run it on each start."""

from __future__ import annotations

import html
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from devstack.services import (
    ADMIN_PASSWORD_ENV_VAR,
    ADMIN_USER,
    DBT_POOL_SERVICES,
    EXECUTORS,
    PASSWORD_FILE,
    PROJECT_ROOT,
    WAREHOUSE_POOL,
    WAREHOUSE_POOL_SERVICES,
    DevStackError,
    resolve_argv,
)
from training import stack_env
from training.deployment import deployment_models, pool_name
from training.paths import StatePaths
from training.settings import CONFIG_ENV_VAR, Settings


def postgres_databases(environ: Mapping[str, str]) -> list[str]:
    """SQLAlchemy URLs of the PostgreSQL databases this profile uses (none on the embedded profile)."""
    urls = [environ.get(k, "") for k in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "MLFLOW_BACKEND_STORE_URI", "CLOSEDLOOP_OPS_DB_URL")]
    s = Settings.from_env(environ)
    if s.dbt_target == "postgres":
        from sqlalchemy.engine import URL

        urls.append(
            URL.create(
                "postgresql+psycopg2", username=s.pg_user, password=s.pg_password or None,
                host=s.pg_host, port=s.pg_port, database=s.pg_dbname,
            ).render_as_string(hide_password=False)
        )
    return [u for u in urls if u.startswith("postgresql")]


def create_databases(environ: Mapping[str, str], wait_s: float = 60) -> list[str]:
    """Create each PostgreSQL database named in the profile's URLs if missing; returns those created."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    created: list[str] = []
    for raw in postgres_databases(environ):
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
    warehouse: dict[str, Any]
    s = Settings.from_env(environ)
    if s.dbt_target == "postgres":
        warehouse = {
            "conn_type": "postgres", "host": s.pg_host, "port": s.pg_port, "login": s.pg_user,
            "password": s.pg_password or None, "schema": s.pg_dbname,
        }
    else:
        warehouse = {"conn_type": "generic", "extra": json.dumps({"path": str(paths.warehouse), "engine": "duckdb"})}
    mlflow_url = s.mlflow_tracking_uri or s.mlflow_ui_url or ""
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
    on_postgres = Settings.from_env(environ).dbt_target == "postgres"
    name, slots, description = WAREHOUSE_POOL_SERVICES if on_postgres else WAREHOUSE_POOL
    for model in deployment_models():  # each model's warehouse has its own writer slot
        Pool.create_or_update_pool(pool_name(model, name), slots, description, include_deferred=False)
        if on_postgres:
            dbt_name, dbt_slots, dbt_description = DBT_POOL_SERVICES
            Pool.create_or_update_pool(pool_name(model, dbt_name), dbt_slots, dbt_description, include_deferred=False)
    with create_session() as session:
        for spec in _connections(paths, environ):
            found = session.query(Connection).filter(Connection.conn_id == spec["conn_id"]).one_or_none()
            if found is not None:
                session.delete(found)
                session.flush()
            session.add(Connection(**spec))


def build_dbt_docs(paths: StatePaths, target: str, model: str | None = None) -> None:
    """`dbt docs generate` (also writes the manifest cosmos renders from); else at least `dbt parse`."""
    from training.config import load_config, model_config_path
    from training.data.dbt import DbtError, parse_manifest, run_dbt

    cfg = load_config(model_config_path(model) if model else None)
    try:
        run_dbt(["docs", "generate"], paths, cfg, target)  # type: ignore[arg-type]
    except DbtError as exc:
        print(f"dbt docs generate failed; the docs site will say so:\n{exc}", file=sys.stderr)
        parse_manifest(paths, cfg, target)  # type: ignore[arg-type]
        (paths.dbt_target / "index.html").write_text(
            "<!doctype html><title>dbt docs unavailable</title><h1>dbt docs could not be generated</h1>"
            f"<pre>{html.escape(str(exc))}</pre>"
        )
    if not (paths.dbt_target / "manifest.json").is_file():
        raise DevStackError(f"no dbt manifest at {paths.dbt_target / 'manifest.json'}")


def record_stack_env(paths: StatePaths, environ: Mapping[str, str]) -> None:
    """Write down the profile, config and servers this stack's tasks use (`training.stack_env`), so the
    CLIs (`python -m training`, `dev_stack.py env|clean`) find them with only CLOSEDLOOP_HOME set."""
    profile = "services" if environ.get("AIRFLOW__CORE__EXECUTOR") == EXECUTORS["services"] else "embedded"
    if profile == "services":
        env = dict(environ)
        env["CLOSEDLOOP_REDIS_URL"] = env.get("AIRFLOW__CELERY__BROKER_URL") or env.get("CLOSEDLOOP_REDIS_URL", "")
    else:  # everything lives in the state dir: only the config is worth recording
        env = {k: v for k, v in environ.items() if k == CONFIG_ENV_VAR}
    stack_env.record(paths, profile, env)


def run_init(environ: Mapping[str, str] | None = None) -> None:
    """What the init service does, in order; every step is idempotent."""
    env = dict(os.environ if environ is None else environ)
    paths = StatePaths.from_env().ensure()
    record_stack_env(paths, env)
    created = create_databases(env)
    if created:
        print(f"created PostgreSQL databases: {', '.join(created)}")
    ensure_admin_password(paths, env)
    _airflow_metadata(paths, env)
    for model in deployment_models():  # every model's manifest: its DAGs render their dbt tasks from it
        build_dbt_docs(StatePaths.for_model(model).ensure(), Settings.from_env(env).dbt_target, model)
    print(f"init done: metadata DB, admin password, pool {WAREHOUSE_POOL[0]}, connections, dbt manifest + docs", flush=True)
