"""Fixtures for the train / evaluate / registry / inference tests (data helpers: tests/synthetic.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from tests.synthetic import (  # noqa: F401 - re-exported for the tests of this folder
    CATEGORIES,
    COUNTRIES,
    N_DAYS,
    ROWS_PER_DAY,
    START,
    TEST_OVERRIDES,
    holdout_start,
    make_training_set,
    permute_features,
    publish,
    train_and_evaluate,
)
from training.config import Config, with_overrides
from training.paths import StatePaths


@pytest.fixture(scope="module")
def module_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StatePaths]:
    """One state directory (MLflow DB, DVC repo, ledger, warehouse) shared by a test module."""
    root = tmp_path_factory.mktemp("state")
    mp = pytest.MonkeyPatch()
    mp.setenv("CLOSEDLOOP_HOME", str(root))
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    mp.delenv("CLOSEDLOOP_OPS_DB_URL", raising=False)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # the embedded store of this state dir
    mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
    yield StatePaths(Path(os.fspath(root))).ensure()
    mp.undo()


@pytest.fixture(scope="module")
def train_cfg(base_config: Config) -> Config:
    return with_overrides(base_config, **TEST_OVERRIDES)


@pytest.fixture(scope="session")
def training_frame() -> pd.DataFrame:
    return make_training_set()


@pytest.fixture(scope="session")
def synth() -> SimpleNamespace:
    """The synthetic-data helpers above, for tests (conftest modules are not importable by name)."""
    return SimpleNamespace(
        make=make_training_set,
        holdout_start=holdout_start,
        permute=permute_features,
        publish=publish,
        overrides=TEST_OVERRIDES,
    )


@pytest.fixture(scope="session")
def train_eval():
    return train_and_evaluate
