"""OpenLineage on the stack: off by default, a file in the state dir on request, a namespace always."""

from __future__ import annotations

import json

import pytest

from devstack.environment import LINEAGE_ENV_VAR, Ports, airflow_env, lineage_env
from training.paths import StatePaths


def test_lineage_is_off_by_default_with_the_deployment_namespace(tmp_path):
    env = airflow_env(StatePaths(tmp_path / "state"), Ports(), environ={})
    assert env["AIRFLOW__OPENLINEAGE__NAMESPACE"] == "closedloop"
    assert env["AIRFLOW__OPENLINEAGE__EXTRACTORS"] == "closedloop.lineage.ClosedloopTaskExtractor"
    assert "AIRFLOW__OPENLINEAGE__TRANSPORT" not in env


def test_file_lineage_goes_into_the_state_dir(tmp_path):
    paths = StatePaths(tmp_path / "state")
    env = lineage_env(paths, {LINEAGE_ENV_VAR: "file", "OPENLINEAGE_NAMESPACE": "fraud-prod"})
    assert env["AIRFLOW__OPENLINEAGE__NAMESPACE"] == "fraud-prod"
    transport = json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert transport == {"type": "file", "log_file_path": str(paths.root / "openlineage" / "events.jsonl"),
                         "append": True}
    assert (paths.root / "openlineage").is_dir()


def test_an_unknown_lineage_mode_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"CLOSEDLOOP_LINEAGE='http'.*'file'.*OPENLINEAGE_URL"):
        lineage_env(StatePaths(tmp_path / "state"), {LINEAGE_ENV_VAR: "http"})
