"""Shared fixtures: every test gets its own state directory and a small, fast configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Airflow and its libraries read these at import time; set them before anything imports airflow.
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from training.config import Config, load_config, with_overrides  # noqa: E402
from training.paths import StatePaths  # noqa: E402

SMALL_SIMULATOR = {
    "transactions_per_day": 3000,
    "n_customers": 800,
    "n_merchants": 120,
    "fraud_rate": 0.015,
}


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StatePaths:
    """A fresh state directory, exported as $CLOSEDLOOP_HOME for code that reads the environment."""
    root = tmp_path / "state"
    monkeypatch.setenv("CLOSEDLOOP_HOME", str(root))
    return StatePaths(root).ensure()


@pytest.fixture(scope="session")
def base_config() -> Config:
    return load_config()


@pytest.fixture
def small_config(base_config: Config) -> Config:
    """The project config with a small simulated source, so a day takes well under a second."""
    return with_overrides(base_config, simulator=SMALL_SIMULATOR)
