"""The local development stack: Airflow UI and components, MLflow UI and the dbt docs site.

    python scripts/dev_stack.py up [--profile services]   # start in the background, wait until healthy
    python scripts/dev_stack.py down      # stop what `up` started (pid files under <state>/devstack)
    python scripts/dev_stack.py status
    python scripts/dev_stack.py env       # the stack's environment as `export K=V` lines:
                                          #   eval "$(python scripts/dev_stack.py env)"; airflow dags trigger ...
    python scripts/dev_stack.py clean     # drop the state: PostgreSQL databases + Redis keys (services), the dir
    python scripts/dev_stack.py init      # service command: metadata DB, admin password, pool,
                                          # connections, dbt manifest + docs
    python scripts/dev_stack.py dbt-docs  # service command: serve the dbt docs site
    python scripts/dev_stack.py check-http URL   # healthcheck helper (compose)
    python scripts/dev_stack.py check-celery NODE  # healthcheck helper: the Celery worker answers a ping
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from devstack.airflow_api import http_ok
from devstack.bootstrap import run_init
from devstack.docs_server import serve_dbt_docs
from devstack.environment import (
    Ports,
    airflow_env,
    export_lines,
    recorded_environ,
    recorded_models_env,
    stack_config,
    stack_models_dir,
)
from devstack.services import (
    DBT_DOCS_HOST_ENV_VAR,
    DBT_DOCS_PORT_ENV_VAR,
    LONG_RUNNING,
    PROFILE_SERVICES,
    PROFILES,
    DevStackError,
    ServicesBackends,
    check_profile,
    check_servers,
    drop_services_state,
)
from devstack.supervisor import _recorded_ports, alive, attach, recorded_profile, start_stack, stop_services
from training import stack_env
from training.config import model_names
from training.paths import StatePaths
from training.settings import CONFIG_ENV_VAR, MODELS_DIR_ENV_VAR


def _cmd_up(ns: argparse.Namespace) -> int:
    paths = StatePaths.from_env()
    profile = check_profile(ns.profile)
    if recorded_profile(paths) == profile and all(alive(paths, s) for s in PROFILE_SERVICES[profile]):
        print(attach(paths).describe())
        print("already running; `make down` stops it")
        return 0
    stopped = stop_services(paths)  # a half-running stack from an earlier `up`
    if stopped:
        print(f"stopped leftovers: {', '.join(stopped)}")
    ports = Ports.from_env()
    config, why = stack_config(paths, os.environ)
    models, models_why = stack_models_dir(paths, os.environ, ns.models, profile)
    extra = {CONFIG_ENV_VAR: str(config)}
    t0 = time.monotonic()
    print(f"starting the dev stack ({profile} profile) in {paths.root} (init: metadata DB, dbt docs; then the services) ...", flush=True)
    if models is None:
        print(f"config: {config} ({why})", flush=True)
    else:  # each model's DAGs, pools, state and dbt manifest (docs/architecture.md, "Several models per deployment")
        extra[MODELS_DIR_ENV_VAR] = str(models)
        print(f"models: {', '.join(model_names(models))} from {models} ({models_why})", flush=True)
    stack = start_stack(paths, ports, profile=profile, extra_env=extra)
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
    running = {s: alive(paths, s) for s in PROFILE_SERVICES[recorded_profile(paths)]}
    for s, ok in running.items():
        print(f"  {s:24s} {'running' if ok else 'stopped'}")
    if any(running.values()):
        print(attach(paths).describe())
    return 0 if all(running.values()) else 3


def _cmd_env(ns: argparse.Namespace) -> int:
    paths = StatePaths.from_env()
    if not paths.airflow_home.is_dir():
        raise DevStackError(f"no dev stack has run in {paths.root} yet: `make up` (or set CLOSEDLOOP_HOME to its state dir)")
    profile = recorded_profile(paths)
    ports = _recorded_ports(paths) or Ports.from_env()
    env = airflow_env(paths, ports, profile, recorded_environ(paths))
    env[CONFIG_ENV_VAR] = str(stack_config(paths, os.environ)[0])
    env.update(recorded_models_env(paths))  # a several-model stack: the airflow CLI parses its DAGs the same way
    # the stack's programs (`airflow`, `mlflow`) come from this virtualenv, as the services' do
    venv_bin = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    env["PATH"] = path if path.split(os.pathsep)[0] == venv_bin else f"{venv_bin}{os.pathsep}{path}"
    if profile == "services" and (stack_env.recorded(paths) or {}).get("pg_password") and not os.environ.get("CLOSEDLOOP_PG_PASSWORD"):
        print("# the stack's PostgreSQL needs a password: set CLOSEDLOOP_PG_PASSWORD, then run this again", file=sys.stderr)
    print("\n".join(export_lines(env)))
    return 0


def _cmd_clean(ns: argparse.Namespace) -> int:
    paths = StatePaths.from_env()
    running = [s for s in LONG_RUNNING if alive(paths, s)]
    if running:
        raise DevStackError(f"the stack of {paths.root} is running ({', '.join(running)}): stop it with `make down`, "
                            "then clean (nothing was removed)")
    services = ns.profile == "services" or stack_env.looks_like_services(paths)
    if services:
        environ = recorded_environ(paths)
        b = ServicesBackends.for_state(paths, environ)
        check_servers(b)  # before anything is removed: a half-clean state is worse than none
        dropped = drop_services_state(paths, environ)
        print(f"dropped PostgreSQL databases on {b.pg_user}@{b.pg_host}:{b.pg_port}: {', '.join(dropped) or 'none existed'}; "
              f"deleted Redis keys {b.redis_prefix}* on {b.redis_url}")
    if paths.root.exists():
        shutil.rmtree(paths.root)
        print(f"removed {paths.root}")
    elif not services:
        print(f"nothing to clean: {paths.root} does not exist")
    return 0


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
    parser = argparse.ArgumentParser(prog="scripts/dev_stack.py", description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the stack in the background and wait until healthy")
    up.add_argument("--timeout", type=float, default=300)
    up.add_argument("--models", default=None, metavar="DIR",
                    help="a folder of <model>.yaml configs: one stack runs every model's DAGs (ids <model>__...; "
                         "default $CLOSEDLOOP_MODELS_DIR, else the folder this state dir's stack last ran)")
    up.add_argument("--profile", choices=PROFILES, default=os.environ.get("CLOSEDLOOP_PROFILE") or "embedded",
                    help="embedded (SQLite, DuckDB, LocalExecutor) or services (PostgreSQL, Redis + Celery, MLflow server)")
    sub.add_parser("down", help="stop the stack of $CLOSEDLOOP_HOME")
    sub.add_parser("status", help="which services run")
    sub.add_parser(
        "env",
        help="print the stack's environment as `export K=V` lines, for the airflow CLI: "
             'eval "$(python scripts/dev_stack.py env)"',
        description=(
            "Print the environment the stack of $CLOSEDLOOP_HOME gives its Airflow processes, as `export K=V` lines "
            "a shell can eval before `airflow dags trigger ...` or `python -m training ...`. Secrets appear only "
            "as you already hold them: the Airflow JWT/API/fernet keys from the state dir's "
            "airflow/devstack-secrets.json, and a PostgreSQL password only if CLOSEDLOOP_PG_PASSWORD is set in "
            "your environment (it is never written to the state dir). Treat the output like those files."
        ),
    )
    clean = sub.add_parser(
        "clean",
        help="remove the state of $CLOSEDLOOP_HOME: its PostgreSQL databases and Redis keys (services), then the dir",
        description=(
            "Reset a state dir. On the services profile (the state dir's record says so, or --profile services) "
            "first drop its PostgreSQL databases cl_<hash>_* and delete its Redis keys cl_<hash>:*, then remove "
            "the directory. Refuses while any of its services runs: `make down` first."
        ),
    )
    clean.add_argument("--profile", choices=PROFILES, default=None,
                       help="services: drop the databases and keys even if the state dir does not record that profile")
    sub.add_parser("init", help="service command: metadata DB, admin password, pool, connections, dbt docs")
    sub.add_parser("dbt-docs", help="service command: serve the dbt docs site")
    check = sub.add_parser("check-http", help="exit 0 if URL answers 2xx/3xx (healthchecks)")
    check.add_argument("url")
    ping = sub.add_parser("check-celery", help="exit 0 if Celery worker NODE answers a ping (healthchecks)")
    ping.add_argument("node", help="worker node name, e.g. worker-1@$HOSTNAME")
    ns = parser.parse_args(argv)
    handler = {
        "up": _cmd_up, "down": _cmd_down, "status": _cmd_status, "env": _cmd_env, "clean": _cmd_clean, "init": _cmd_init,
        "dbt-docs": _cmd_dbt_docs, "check-http": _cmd_check_http, "check-celery": _cmd_check_celery,
    }[ns.cmd]
    try:
        return handler(ns)
    except DevStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
