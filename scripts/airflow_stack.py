"""The real Airflow components on the embedded profile: api-server, scheduler, dag-processor, triggerer.

AIRFLOW_HOME, the SQLite metadata DB and the logs live in the state directory. Used by `make demo`
and the end-to-end test; every component runs the same `airflow <component>` command as compose.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from training.config import PROJECT_ROOT
from training.paths import StatePaths

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
BIN = Path(sys.executable).parent


def airflow_env(paths: StatePaths, api_port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every component and CLI call shares (the embedded profile)."""
    home = paths.airflow_home
    env = {
        **os.environ,
        "CLOSEDLOOP_HOME": str(paths.root),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        # one `dbt build` per day watched by every model/test task (needs this real scheduler + triggerer)
        "CLOSEDLOOP_DBT_EXECUTION_MODE": "watcher",
        # production-style runs: dbt unit tests belong to development/CI (tests/dbt)
        "CLOSEDLOOP_DBT_UNIT_TESTS": "false",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GIT_PYTHON_REFRESH": "quiet",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.update(extra or {})
    return env


class AirflowStack:
    """Start, watch and stop the Airflow components of one state directory."""

    def __init__(self, paths: StatePaths, api_port: int = 8080, extra_env: dict[str, str] | None = None):
        self.paths = paths
        self.api_port = api_port
        self.env = airflow_env(paths, api_port, extra_env)
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs = paths.airflow_home / "components"
        self.user = "admin"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def airflow_db(self) -> Path:
        return self.paths.airflow_home / "airflow.db"

    @property
    def password(self) -> str:
        generated = self.paths.airflow_home / "simple_auth_manager_passwords.json.generated"
        if generated.is_file():
            return json.loads(generated.read_text()).get(self.user, "?")
        return "(generated at first start)"

    def airflow(self, *args: str, check: bool = True, attempts: int = 3) -> subprocess.CompletedProcess:
        """Run an `airflow` CLI command in this stack's environment (retried: SQLite may be busy)."""
        for attempt in range(1, attempts + 1):
            result = subprocess.run([str(BIN / "airflow"), *args], env=self.env, check=False,
                                    capture_output=True, text=True, timeout=600)
            if result.returncode == 0 or not check:
                return result
            if attempt < attempts:
                time.sleep(3)
        raise RuntimeError(f"`airflow {' '.join(args)}` failed:\n{result.stderr[-3000:]}")

    def prepare(self) -> None:
        """Metadata DB, the one-slot DuckDB writer pool, and the dbt manifest cosmos renders from."""
        from training.config import load_config
        from training.dbt import parse_manifest

        self.paths.ensure()
        self.logs.mkdir(parents=True, exist_ok=True)
        self.airflow("db", "migrate")
        self.airflow("pools", "set", "duckdb_writer", "1", "DuckDB allows one writer at a time")
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("CLOSEDLOOP_")})
        parse_manifest(self.paths, load_config())

    def start(self) -> None:
        for name in COMPONENTS:
            cmd = [str(BIN / "airflow"), name] + (["--port", str(self.api_port)] if name == "api-server" else [])
            log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child's lifetime
            self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True, cwd=self.paths.root)

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"Airflow components exited: {dead}; see logs in {self.logs}")

    def wait_healthy(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as resp:
                    health = json.loads(resp.read())
                if health.get("scheduler", {}).get("status") == "healthy":
                    return
            except OSError:
                pass
            time.sleep(2)
        raise TimeoutError(f"Airflow did not become healthy in {timeout_s}s; see {self.logs}")

    def wait_for_dags(self, dag_ids: tuple[str, ...], timeout_s: float = 180) -> None:
        """Until the dag-processor has serialized every DAG (and none has an import error)."""
        import sqlite3

        deadline = time.monotonic() + timeout_s
        missing: set[str] = set(dag_ids)
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                con = sqlite3.connect(f"file:{self.airflow_db}?mode=ro", uri=True, timeout=5)
                try:
                    found = {r[0] for r in con.execute("select dag_id from serialized_dag")}
                    errors = con.execute("select filename, stacktrace from import_error").fetchall()
                finally:
                    con.close()
                if errors:
                    raise RuntimeError(f"DAG import errors: {errors}")
                missing = set(dag_ids) - found
                if not missing:
                    return
            except sqlite3.Error:
                pass
            time.sleep(2)
        raise TimeoutError(f"DAGs not parsed after {timeout_s}s: {sorted(missing)}; see {self.logs}")

    def _token(self) -> str:
        body = json.dumps({"username": self.user, "password": self.password}).encode()
        req = urllib.request.Request(f"{self.url}/auth/token", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())["access_token"]

    def trigger(self, dag_id: str, conf: dict, run_id: str, logical_date: str | None = None) -> str:
        """Create a DAG run through the REST API v2 (what a user's script or CI would do)."""
        body = json.dumps({"dag_run_id": run_id, "logical_date": logical_date, "conf": conf}).encode()
        req = urllib.request.Request(
            f"{self.url}/api/v2/dags/{dag_id}/dagRuns", data=body, method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._token()}"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())["dag_run_id"]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()
