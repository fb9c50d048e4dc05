"""The local development stack: Airflow UI and components, MLflow UI and the dbt docs site.

    python scripts/dev_stack.py up [--profile services]   # start in the background, wait until healthy
    python scripts/dev_stack.py down      # stop what `up` started (pid files under <state>/devstack)
    python scripts/dev_stack.py status
    python scripts/dev_stack.py init      # service command: metadata DB, admin password, pool,
                                          # connections, dbt manifest + docs
    python scripts/dev_stack.py dbt-docs  # service command: serve the dbt docs site
    python scripts/dev_stack.py check-http URL   # healthcheck helper (compose)
    python scripts/dev_stack.py check-celery NODE  # healthcheck helper: the Celery worker answers a ping
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from devstack.airflow_api import http_ok
from devstack.bootstrap import run_init
from devstack.docs_server import serve_dbt_docs
from devstack.environment import Ports
from devstack.services import (
    DBT_DOCS_HOST_ENV_VAR,
    DBT_DOCS_PORT_ENV_VAR,
    PROFILE_SERVICES,
    PROFILES,
    DevStackError,
    check_profile,
)
from devstack.supervisor import alive, attach, recorded_profile, start_stack, stop_services
from training.paths import StatePaths


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
    running = {s: alive(paths, s) for s in PROFILE_SERVICES[recorded_profile(paths)]}
    for s, ok in running.items():
        print(f"  {s:24s} {'running' if ok else 'stopped'}")
    if any(running.values()):
        print(attach(paths).describe())
    return 0 if all(running.values()) else 3


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
