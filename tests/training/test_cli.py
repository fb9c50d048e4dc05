"""The `python -m training` stages as a pod or script runs them: failures are loud, output is the result."""

from __future__ import annotations

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
