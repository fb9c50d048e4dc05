"""Run the model's dbt project (the config's `project.dbt_dir`) against the warehouse, always in a subprocess.

Why a subprocess: dbt's in-process runner keeps the DuckDB connection open for the life of the
Python process, so a later read-only connection from the same process (GX gate, publish) fails
(docs/architecture.md). A child process releases the file when it exits.

Everything dbt writes (target/, logs/, partial-parse state) goes under the state directory
(`StatePaths.dbt_target` and its sibling `logs/`), never into the source tree.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import PROJECT_ROOT, Config
from training.errors import ClosedloopError
from training.paths import StatePaths
from training.settings import TARGETS, Target, settings

#: The deployment's dbt profile (`closedloop`: duckdb and postgres targets), shared by every model's project.
PROFILES_DIR = PROJECT_ROOT / "config" / "dbt"


def project_dir(cfg: Config | None = None) -> Path:
    """The dbt project of `cfg` (default: the model this process acts for)."""
    if cfg is None:
        from training.config import load_config

        cfg = load_config()
    return cfg.project.dbt_path

# Environment variables the postgres target reads (with local trust-auth defaults in profiles.yml).
POSTGRES_ENV_VARS = (
    "CLOSEDLOOP_PG_HOST",
    "CLOSEDLOOP_PG_PORT",
    "CLOSEDLOOP_PG_USER",
    "CLOSEDLOOP_PG_PASSWORD",
    "CLOSEDLOOP_PG_DBNAME",
    "CLOSEDLOOP_PG_THREADS",
)
# `python -m dbt.cli.main` warns about runpy re-import; call the console entry point instead.
_DBT_MAIN = "import sys; from dbt.cli.main import cli; sys.exit(cli())"
_FAILED_STATUSES = {"error", "fail", "runtime error"}


class DbtError(ClosedloopError, RuntimeError):
    """A dbt command failed; `failed_nodes` names the models/tests that did (empty if dbt never ran)."""

    def __init__(self, message: str, failed_nodes: Sequence[str] = (), result: DbtResult | None = None):
        super().__init__(message)
        self.failed_nodes = list(failed_nodes)
        self.result = result


@dataclass(frozen=True)
class NodeResult:
    unique_id: str
    status: str
    message: str | None = None
    failures: int | None = None


@dataclass(frozen=True)
class DbtResult:
    """What a dbt invocation did: like dbt's `dbtRunnerResult` (`success`), plus the node results."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    results: list[NodeResult] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return self.returncode == 0

    @property
    def failed(self) -> list[NodeResult]:
        return [r for r in self.results if r.status in _FAILED_STATUSES]

    @property
    def warned(self) -> list[NodeResult]:
        return [r for r in self.results if r.status == "warn"]

    def status_of(self, name: str) -> str | None:
        """Status of the node named `name` (model, test, unit test or source table), None if it did not run."""
        for r in self.results:
            if r.unique_id == name or name in r.unique_id.split("."):
                return r.status
        return None


def dbt_log_path(paths: StatePaths) -> Path:
    return paths.dbt_target.parent / "logs"


def dbt_env(paths: StatePaths, cfg: Config | None = None) -> dict[str, str]:
    """The environment variables the committed profile and project need for this state directory.

    Callers merge these into their own environment (cosmos `env`, a subprocess, a pod spec).
    """
    return {
        "CLOSEDLOOP_WAREHOUSE": str(paths.warehouse),
        "DBT_TARGET_PATH": str(paths.dbt_target),
        "DBT_LOG_PATH": str(dbt_log_path(paths)),
        "DBT_PROFILES_DIR": str(PROFILES_DIR),
        "DBT_PROJECT_DIR": str(project_dir(cfg)),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_VERSION_CHECK": "false",
        "DBT_USE_COLORS": "false",
    }


#: The first day an incremental run rebuilds (macros/incremental.sql reads it while executing). An
#: environment value, not a `--vars` entry: vars that change every day make dbt re-parse the whole
#: project on every run (about 2 CPU s of each build), a value read at run time keeps partial parsing.
REBUILD_FROM_ENV = "CLOSEDLOOP_DBT_REBUILD_FROM"


def rebuild_from_env(day: dt.date | str | None) -> dict[str, str]:
    """The environment that makes a dbt run rebuild `day` and the later partitions (None or "": every
    partition). Always set, so a value inherited from the caller's environment never narrows a rebuild."""
    return {REBUILD_FROM_ENV: day.isoformat() if isinstance(day, dt.date) else (day or "")}


def dbt_vars(cfg: Config | None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`--vars` for the project: the config's label maturity plus any explicit extras (e.g. as_of)."""
    out: dict[str, Any] = {}
    if cfg is not None:
        out["label_maturity_days"] = cfg.windows.label_maturity_days
    out.update(extra or {})
    return out


def run_dbt(
    args: Sequence[str],
    paths: StatePaths,
    cfg: Config | None,
    target: Target | None = None,
    *,
    extra_vars: Mapping[str, Any] | None = None,
    rebuild_from: dt.date | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float | None = 900,
) -> DbtResult:
    """Run `dbt <args>` in a child process against this state directory's warehouse.

    Raises `DbtError` naming the failing nodes when dbt exits non-zero and `check` is true.
    `rebuild_from`: the first day whose incremental partitions the run rebuilds (None: all of them).
    `env` adds variables (e.g. CLOSEDLOOP_PG_DBNAME for the postgres target).
    """
    target = target or default_target()
    if target not in TARGETS:
        raise ValueError(f"unknown dbt target {target!r}: use one of {', '.join(TARGETS)}")
    if not args:
        raise ValueError("run_dbt needs a dbt command, e.g. ['build']")
    paths.dbt_target.mkdir(parents=True, exist_ok=True)
    dbt_log_path(paths).mkdir(parents=True, exist_ok=True)
    if target == "duckdb":
        paths.warehouse.parent.mkdir(parents=True, exist_ok=True)

    dbt_dir = project_dir(cfg)
    full_args = [
        *args,
        "--project-dir",
        str(dbt_dir),
        "--profiles-dir",
        str(PROFILES_DIR),
        "--target",
        target,
        "--target-path",
        str(paths.dbt_target),
        "--log-path",
        str(dbt_log_path(paths)),
    ]
    variables = dbt_vars(cfg, extra_vars)
    if variables and args[0] not in ("deps", "clean", "debug"):
        full_args += ["--vars", json.dumps(variables)]

    child_env = {**os.environ, **dbt_env(paths, cfg), **rebuild_from_env(rebuild_from), **(env or {})}
    # `source freshness` writes sources.json, every other command run_results.json; clear both so
    # a failure is never explained with a previous invocation's results.
    result_files = [paths.dbt_target / "run_results.json", paths.dbt_target / "sources.json"]
    for stale in result_files:
        stale.unlink(missing_ok=True)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _DBT_MAIN, *full_args],
            cwd=str(paths.root),
            env=child_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DbtError(f"dbt {' '.join(args)} timed out after {timeout}s") from exc

    result = DbtResult(
        args=list(full_args),
        returncode=proc.returncode,
        stdout=proc.stdout,
        stderr=proc.stderr,
        results=[r for f in result_files for r in _read_run_results(f)],
    )
    if check and not result.success:
        failed = [r.unique_id for r in result.failed]
        detail = "\n".join(
            f"  - {r.unique_id}: {r.status}: {(r.message or '').strip()[:1000]}" for r in result.failed
        ) or _tail(proc.stdout + proc.stderr)
        raise DbtError(
            f"dbt {' '.join(args)} (target {target}) failed with exit code {proc.returncode}:\n{detail}\n"
            f"Full log: {dbt_log_path(paths) / 'dbt.log'}",
            failed_nodes=failed,
            result=result,
        )
    return result


def default_target() -> Target:
    """The dbt target of the warehouse the stages use (`CLOSEDLOOP_DBT_TARGET`): one switch for both."""
    return settings().dbt_target


def parse_manifest(paths: StatePaths, cfg: Config | None = None, target: Target | None = None) -> Path:
    """Run `dbt parse` and return the manifest.json path in the state dir (for cosmos DBT_MANIFEST)."""
    run_dbt(["parse"], paths, cfg, target)
    manifest = paths.dbt_target / "manifest.json"
    if not manifest.is_file():
        raise DbtError(f"dbt parse succeeded but wrote no manifest at {manifest}")
    return manifest


def _read_run_results(path: Path) -> list[NodeResult]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [
        NodeResult(
            unique_id=str(r.get("unique_id")),
            status=str(r.get("status")),
            message=r.get("message"),
            failures=r.get("failures"),
        )
        for r in data.get("results", [])
    ]


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
