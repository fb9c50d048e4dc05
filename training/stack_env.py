"""What the dev stack recorded about a state dir: which config and which backends its tasks use.

On the services profile the ledger, the registry and the warehouse of a state dir live on
PostgreSQL and the MLflow server, not in the directory; after `make demo` the config is the demo's
merged file in the directory, not `config/closedloop.yaml`. The stack's init step writes both to
`<state>/devstack/stack_env.json` (passwords left out), so `python -m training ...` with only
`CLOSEDLOOP_HOME` set reads the same ledger and config the stack's tasks use, instead of an empty
local one. The file is a record, not a setting: variables the caller sets always win.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from training.paths import StatePaths
from training.settings import CONFIG_ENV_VAR, DBT_TARGET_ENV_VAR, OPS_DB_ENV_VAR, TRACKING_URI_ENV_VAR

#: Variables that choose the backends (the services profile sets them together).
BACKEND_VARS = (
    TRACKING_URI_ENV_VAR, OPS_DB_ENV_VAR, DBT_TARGET_ENV_VAR,
    "CLOSEDLOOP_PG_HOST", "CLOSEDLOOP_PG_PORT", "CLOSEDLOOP_PG_USER", "CLOSEDLOOP_PG_DBNAME",
    "CLOSEDLOOP_DBT_POOL", "CLOSEDLOOP_MAX_ACTIVE_WRITER_RUNS", "CLOSEDLOOP_REDIS_URL",
)
PASSWORD_VAR = "CLOSEDLOOP_PG_PASSWORD"


def record_file(paths: StatePaths) -> Path:
    return paths.shared / "devstack" / "stack_env.json"  # the deployment's, whichever model acts


def record(paths: StatePaths, profile: str, environ: Mapping[str, str]) -> Path:
    """Write what a CLI needs to reach this stack's state: the profile, the config, the backends (no password)."""
    from training.outages import safe_url

    env = {k: safe_url(environ[k]) for k in BACKEND_VARS if environ.get(k)}
    if environ.get(CONFIG_ENV_VAR):
        env[CONFIG_ENV_VAR] = str(Path(environ[CONFIG_ENV_VAR]).resolve())
    file = record_file(paths)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"profile": profile, "env": env, "pg_password": bool(environ.get(PASSWORD_VAR))}, indent=2))
    return file


def recorded(paths: StatePaths) -> dict[str, Any] | None:
    """The record of the state dir's stack, or None (never started by the dev stack, or unreadable)."""
    try:
        data = json.loads(record_file(paths).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("env"), dict) else None


def looks_like_services(paths: StatePaths) -> bool:
    """The state dir's stack ran on the services profile (its record, or the profile file of older stacks)."""
    rec = recorded(paths)
    if rec is not None:
        return rec.get("profile") == "services"
    try:
        return (paths.shared / "devstack" / "profile").read_text().strip() == "services"
    except OSError:
        return False


def apply(paths: StatePaths, environ: MutableMapping[str, str], *, config_given: bool = False) -> list[str]:
    """Put the recorded variables into `environ` where the caller set none; returns the variables applied.

    The backends go in only together, and only if the caller chose none of them (a caller pointing at
    another ledger or server is respected). The password is never recorded: `CLOSEDLOOP_PG_PASSWORD`
    from `environ` goes into the ledger URL when the stack used one.
    """
    rec = recorded(paths)
    if rec is None:
        return []
    env: dict[str, str] = {str(k): str(v) for k, v in rec["env"].items()}
    applied: list[str] = []
    if env.get(CONFIG_ENV_VAR) and not config_given and not environ.get(CONFIG_ENV_VAR):
        environ[CONFIG_ENV_VAR] = env[CONFIG_ENV_VAR]
        applied.append(CONFIG_ENV_VAR)
    backends = {k: v for k, v in env.items() if k in BACKEND_VARS}
    if backends and not any(environ.get(k) for k in (TRACKING_URI_ENV_VAR, OPS_DB_ENV_VAR, DBT_TARGET_ENV_VAR)):
        password = environ.get(PASSWORD_VAR)
        if password and backends.get(OPS_DB_ENV_VAR, "").startswith("postgresql"):
            from sqlalchemy.engine import make_url

            backends[OPS_DB_ENV_VAR] = make_url(backends[OPS_DB_ENV_VAR]).set(password=password).render_as_string(
                hide_password=False)
        for k, v in backends.items():
            if not environ.get(k):
                environ[k] = v
                applied.append(k)
    return applied
