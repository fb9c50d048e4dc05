"""Expectation suites: the JSON files are the source of truth, synced into GX without duplication."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.data import suites
from training.paths import StatePaths


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    return StatePaths(tmp_path / "state").ensure()


def test_suites_sync_idempotently_from_json(paths: StatePaths) -> None:
    context = suites.get_context(paths)
    for _ in range(2):
        suites.sync_suites(context)
    stored = {s.name: s for s in context.suites.all()}
    assert set(stored) == set(suites.suite_names()) >= {"raw_transactions", "ml_transaction_features"}
    for name, suite in stored.items():
        assert len(suite.expectations) == len(suites.load_suite_file(name)["expectations"])
        assert all(e.meta.get("guards") for e in suite.expectations)


def test_invalid_suite_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(suites.SuiteError, match="broken.json is not valid JSON"):
        suites.load_suite_file("broken", tmp_path)
    (tmp_path / "unguarded.json").write_text(json.dumps(
        {"name": "unguarded", "expectations": [{"type": "expect_column_to_exist", "kwargs": {"column": "a"}}]}
    ))
    with pytest.raises(suites.SuiteError, match="no meta.guards"):
        suites.load_suite_file("unguarded", tmp_path)
    with pytest.raises(suites.SuiteError, match="available: broken, unguarded"):
        suites.load_suite_file("missing", tmp_path)
