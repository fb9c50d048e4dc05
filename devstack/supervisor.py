"""Starting, watching and stopping the services of one state dir.

Each service runs in the background in its own process group, with its log and a pid file under
`<state>/devstack/`, so another process (`make down`, `status`) finds and stops it. A pid file
records the process's create time too, which tells a reused pid from ours.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from devstack.airflow_api import get_json, get_token, http_ok
from devstack.environment import Ports, airflow_env, inherited_env, recorded_models_env, service_env
from devstack.services import (
    ADMIN_USER,
    AIRFLOW_COMPONENTS,
    CELERY_WORKERS,
    HEALTH_KEYS,
    INIT_SERVICE,
    LONG_RUNNING,
    PASSWORD_FILE,
    PROFILE_SERVICES,
    PROJECT_ROOT,
    SERVICE_COMMANDS,
    DevStackError,
    Profile,
    ServicesBackends,
    check_profile,
    check_servers,
    resolve_argv,
)
from training.paths import StatePaths
from training.settings import MODELS_DIR_ENV_VAR


def devstack_dir(paths: StatePaths) -> Path:
    return paths.root / "devstack"


@dataclass
class Stack:
    """Background services of one state directory, with their pid files and logs."""

    paths: StatePaths
    ports: Ports
    env: dict[str, str]
    services: tuple[str, ...]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
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
    def models(self) -> list[str]:
        """The models of a several-model stack (`CLOSEDLOOP_MODELS_DIR`), else none."""
        from training.config import model_names

        folder = self.env.get(MODELS_DIR_ENV_VAR)
        return model_names(Path(folder)) if folder else []

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

    def airflow(self, *args: str, check: bool = True, timeout: float = 600, attempts: int = 3) -> subprocess.CompletedProcess[str]:
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

    def spawn(self, name: str) -> subprocess.Popen[bytes]:
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
            if pid is None or not alive(self.paths, name):
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
        return None if rec is None else int(rec["pid"])

    def health(self) -> dict[str, str]:
        """service -> 'healthy' or why not (one probe per service, no waiting)."""
        out: dict[str, str] = {}
        want_airflow = [s for s in self.services if s in AIRFLOW_COMPONENTS]
        if want_airflow:
            try:
                health = get_json(f"{self.url}/api/v2/monitor/health")
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
            errors = get_json(f"{self.url}/api/v2/importErrors", token)
            if errors.get("total_entries"):
                found = [(e.get("filename"), (e.get("stack_trace") or "")[-800:]) for e in errors["import_errors"]]
                raise DevStackError(f"DAG import errors: {found}")
            dags = get_json(f"{self.url}/api/v2/dags?limit=1000", token)
            missing = wanted - {d["dag_id"] for d in dags.get("dags", [])}
            if not missing:
                return
            time.sleep(2)
        raise DevStackError(f"DAGs not parsed after {timeout_s:.0f}s: {sorted(missing)}; see {self.log_of('airflow-dag-processor')}")

    def describe(self) -> str:
        lines = [f"closedloop dev stack, {self.profile} profile (state {self.paths.root})"]
        if any(s in AIRFLOW_COMPONENTS for s in self.services):
            lines.append(f"  Airflow UI    {self.url}    login: {self.user} / {self.password}")
            lines.append(f"  Model health  {self.model_health_url}")
            if self.models:  # the page lists them; /model-health/?model=<m> opens one directly
                lines.append(f"  Models        {', '.join(self.models)} (DAG ids <model>__data_pipeline, ...)")
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
    running = [s for s in LONG_RUNNING if alive(paths, s)]
    if running:
        raise DevStackError(f"the stack of {paths.root} is already running ({', '.join(running)}): `make down` first")
    port_of = {"airflow-api-server": ports.airflow, "mlflow": ports.mlflow, "dbt-docs": ports.dbt_docs}
    for s in chosen:
        if s in port_of and not port_free(ports.host, port_of[s]):
            var = {"airflow-api-server": "CLOSEDLOOP_AIRFLOW_PORT", "mlflow": "CLOSEDLOOP_MLFLOW_PORT", "dbt-docs": "CLOSEDLOOP_DBT_DOCS_PORT"}[s]
            raise DevStackError(f"port {ports.host}:{port_of[s]} for {s} is taken: free it or set {var}")
    base = inherited_env(os.environ)
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
    env = {**inherited_env(os.environ), **airflow_env(paths, ports, profile), **recorded_models_env(paths)}
    return Stack(paths=paths, ports=ports, env=env,
                 services=services, profile=profile)


def recorded_profile(paths: StatePaths) -> Profile:
    """The profile the state dir's stack was last started with (embedded if never)."""
    try:
        return check_profile((devstack_dir(paths) / "profile").read_text().strip())
    except (OSError, DevStackError):
        return "embedded"


def _recorded_ports(paths: StatePaths) -> Ports | None:
    try:
        return Ports(**json.loads((devstack_dir(paths) / "ports.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


# --------------------------------------------------------------------------------------------
# pid files: <state>/devstack/<service>.pid = {"pid", "create_time", "argv"}
# --------------------------------------------------------------------------------------------


def _pid_file(paths: StatePaths, name: str) -> Path:
    return devstack_dir(paths) / f"{name}.pid"


def _create_time(pid: int) -> float | None:
    """When the process started: tells a reused pid from ours."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _write_pid(paths: StatePaths, name: str, pid: int, argv: Iterable[str]) -> None:
    _pid_file(paths, name).write_text(json.dumps({"pid": pid, "create_time": _create_time(pid), "argv": list(argv)}))


def _read_pid(paths: StatePaths, name: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(_pid_file(paths, name).read_text()))
    except (OSError, ValueError):
        return None


def alive(paths: StatePaths, name: str) -> bool:
    """The service's recorded process still runs (the same process, not a zombie)."""
    rec = _read_pid(paths, name)
    if rec is None:
        return False
    try:
        proc = psutil.Process(int(rec["pid"]))
        return proc.create_time() == rec.get("create_time") and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop_services(
    paths: StatePaths,
    services: Iterable[str] = LONG_RUNNING,
    *,
    timeout_s: float = 30,
    procs: Mapping[str, subprocess.Popen[bytes]] | None = None,
) -> list[str]:
    """SIGTERM each service's process group, SIGKILL what is left after `timeout_s`; returns the stopped."""
    procs = procs or {}
    services = tuple(services)
    targets: dict[str, int] = {}
    for name in services:
        rec = _read_pid(paths, name)
        if rec is not None and alive(paths, name):
            targets[name] = int(rec["pid"])
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


def _group_alive(pgid: int, proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is not None:
        proc.poll()  # reap our own child so it does not linger as a zombie
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a group of only zombies is gone for our purposes
    for member in psutil.process_iter(["status"]):
        try:
            if os.getpgid(member.pid) == pgid and member.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except ProcessLookupError:
            continue
    return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
