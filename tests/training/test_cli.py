"""The `python -m training` stages as a pod or script runs them: failures are loud, output is the result."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training", "--home", str(home), *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "CLOSEDLOOP_DBT_TARGET"}, **env},
    )


def test_a_failing_model_exits_non_zero_and_names_the_node(tmp_path):
    # a fresh warehouse has no raw tables: the staging model over raw.transactions cannot build
    out = _cli(tmp_path / "state", "dbt", "--", "run", "--select", "stg_raw__transactions")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "model.closedloop.stg_raw__transactions" in out.stderr
    assert "failed" in out.stderr and "Full log:" in out.stderr


def test_an_unknown_target_is_refused_before_dbt_runs(tmp_path):
    out = _cli(tmp_path / "state", "dbt", "--", "debug", CLOSEDLOOP_DBT_TARGET="snowflake")
    assert out.returncode != 0
    assert "unknown dbt target 'snowflake'" in out.stderr and "duckdb" in out.stderr


def test_drift_decides_each_given_window_and_prints_the_last_decision(tmp_path):
    # no champion yet: each window is decided (and logged) as nothing to monitor, none triggers
    out = _cli(tmp_path / "state", "drift", "--dates", "2026-01-05,2026-01-06")
    assert out.returncode == 0, out.stderr
    assert "2026-01-05: no_champion" in out.stderr and "2026-01-06: no_champion" in out.stderr
    assert '"window_end": "2026-01-06"' in out.stdout and '"trigger": false' in out.stdout


def test_home_and_config_are_what_every_stage_reads_a_drop_url_included(tmp_path):
    from examples.loans import generate

    home = tmp_path / "state"
    generate.generate(home / "drops" / "loans", dt.date(2026, 1, 1), 1, rows_per_day=60)
    env = {k: v for k, v in os.environ.items() if k not in ("CLOSEDLOOP_HOME", "CLOSEDLOOP_CONFIG", "CLOSEDLOOP_DBT_TARGET",
                                                               "CLOSEDLOOP_MODELS_DIR", "CLOSEDLOOP_MODEL")}
    out = subprocess.run(
        [sys.executable, "-m", "training", "--home", str(home), "--config", str(ROOT / "config/models/loans.yaml"),
         "ingest", "--date", "2026-01-01"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )
    # ${CLOSEDLOOP_HOME}/drops/loans is read from --home, and the front door and load_raw use --config's contract
    assert out.returncode == 0, out.stdout + out.stderr
    assert '"applications": 6' in out.stdout, out.stdout


def test_drift_needs_exactly_one_of_date_and_dates(tmp_path):
    out = _cli(tmp_path / "state", "drift")
    assert out.returncode == 1
    assert "give exactly one of --date" in out.stderr


# --- a server that does not answer: one `error:` line, bounded in time, no traceback ---------------------


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed_cli(home: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    import time

    base = {k: v for k, v in os.environ.items()
            if k not in ("CLOSEDLOOP_DBT_TARGET", "MLFLOW_TRACKING_URI", "CLOSEDLOOP_OPS_DB_URL", "CLOSEDLOOP_SERVICE_WAIT_S")}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "training", "--home", str(home), *args],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env={**base, **env})
    return out, time.monotonic() - t0


def _single_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_train_with_the_mlflow_server_down_ends_in_one_line_within_the_default_bound(tmp_path):
    port = _closed_port()
    out, elapsed = _timed_cli(tmp_path / "state", "train", MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
    assert out.returncode == 3, out.stdout + out.stderr
    line = _single_error_line(out.stderr)
    assert f"MLflow tracking server at http://127.0.0.1:{port} does not answer (connection refused" in line
    assert "make up PROFILE=services" in line and "MLFLOW_TRACKING_URI" in line
    # the default budget is 30 s (MLflow's own retries alone took ~5 minutes); plus interpreter start-up
    assert 20 <= elapsed < 45, elapsed
    assert out.stdout == ""


def test_status_with_postgresql_on_a_wrong_port_names_it_without_the_password(tmp_path):
    port = _closed_port()
    url = f"postgresql+psycopg2://postgres:s3cret@127.0.0.1:{port}/closedloop_ops"
    out, elapsed = _timed_cli(tmp_path / "state", "status", CLOSEDLOOP_OPS_DB_URL=url, CLOSEDLOOP_SERVICE_WAIT_S="2")
    assert out.returncode == 3, out.stdout + out.stderr
    line = _single_error_line(out.stderr)
    assert f"PostgreSQL (the operations ledger) at postgresql+psycopg2://postgres@127.0.0.1:{port}/closedloop_ops" in line
    assert "s3cret" not in out.stderr
    assert "pg_ctlcluster" in line and "CLOSEDLOOP_OPS_DB_URL" in line
    assert elapsed < 15, elapsed


def test_a_bad_wait_budget_is_a_configuration_error(tmp_path):
    out, _ = _timed_cli(tmp_path / "state", "status", CLOSEDLOOP_SERVICE_WAIT_S="soon")
    assert out.returncode == 2 and "CLOSEDLOOP_SERVICE_WAIT_S='soon'" in out.stderr


def test_an_mlflow_failure_mid_stage_is_translated_to_the_server_it_failed_to_reach(monkeypatch):
    """A server that goes away after the pre-flight check: MLflow's own exception names no remedy."""
    import mlflow

    from training.outages import ServiceUnavailable, translate

    port = _closed_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    try:
        mlflow.MlflowClient(f"http://127.0.0.1:{port}").search_experiments()
    except Exception as exc:  # noqa: BLE001 - whatever MLflow raises is what the CLI sees
        down = translate(exc)
    else:
        raise AssertionError("a closed port answered")
    assert isinstance(down, ServiceUnavailable)
    assert f"http://127.0.0.1:{port}" in str(down) and "make up PROFILE=services" in str(down)
    assert translate(ValueError("not an outage")) is None


# --- a state dir the dev stack ran: the CLI reads the same ledger and config ---------------------------


def test_audit_with_only_the_state_dir_reads_the_services_stacks_ledger(tmp_path, pg_database_factory, monkeypatch):
    import datetime as dt

    import sqlalchemy as sa

    from tests.conftest import PG_SERVER
    from training import stack_env
    from training.config import load_config
    from training.model import registry
    from training.paths import StatePaths

    paths = StatePaths(tmp_path / "state").ensure()
    db = pg_database_factory("closedloop_ops")
    auth = PG_SERVER["user"] + (f":{PG_SERVER['password']}" if PG_SERVER["password"] else "")
    url = f"postgresql+psycopg2://{auth}@{PG_SERVER['host']}:{PG_SERVER['port']}/{db}"
    monkeypatch.setenv("CLOSEDLOOP_OPS_DB_URL", url)
    with registry._engine(paths).begin() as conn:  # what a promotion on the stack's workers wrote
        conn.execute(sa.insert(registry.registry_audit).values(
            at=dt.datetime(2026, 1, 5), model_name=load_config().model.name, action="promote", to_version="3",
            reason="gates passed", metrics="{}", idempotency_key="k-1"))
    monkeypatch.delenv("CLOSEDLOOP_OPS_DB_URL")
    # as init records it; the MLflow server is down (the stack is stopped): audit does not need it
    stack_env.record(paths, "services", {"CLOSEDLOOP_OPS_DB_URL": url, "CLOSEDLOOP_DBT_TARGET": "postgres",
                                         "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_closed_port()}"})
    out, _ = _timed_cli(paths.root, "audit", CLOSEDLOOP_PG_PASSWORD=PG_SERVER["password"])
    assert out.returncode == 0, out.stderr
    assert '"reason": "gates passed"' in out.stdout and '"to_version": "3"' in out.stdout
    assert "note: using what the dev stack" in out.stderr and "CLOSEDLOOP_OPS_DB_URL" in out.stderr
    assert (PG_SERVER["password"] or "\0") not in (paths.root / "devstack" / "stack_env.json").read_text()


def test_an_empty_audit_of_a_services_state_read_locally_warns_how_to_point_at_it(tmp_path):
    home = tmp_path / "state"
    (home / "devstack").mkdir(parents=True)
    (home / "devstack" / "profile").write_text("services")  # a stack from before the record existed
    out, _ = _timed_cli(home, "audit")
    assert out.returncode == 0 and out.stdout.strip() == "[]"
    assert "warning: no audit rows" in out.stderr and "sqlite:///" in out.stderr
    assert 'eval "$(python scripts/dev_stack.py env)"' in out.stderr and "services-profile" in out.stderr
