"""Where the library finds MLflow (`MLFLOW_TRACKING_URI` or the state dir's SQLite store) and how it
keeps what it writes into MLflow portable. Real MLflow on SQLite; the server case is in
test_mlflow_server.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from training.model import tracking
from training.paths import StatePaths


def test_tracking_uri_is_read_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = StatePaths(tmp_path / "state")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    assert tracking.tracking_uri(paths) == paths.mlflow_tracking_uri == tracking.registry_uri(paths)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.tracking_uri(paths) == "http://mlflow.example:5000" == tracking.registry_uri(paths)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "http://registry.example:5000")
    assert tracking.registry_uri(paths) == "http://registry.example:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "  ")  # blank = unset
    assert tracking.tracking_uri(paths) == paths.mlflow_tracking_uri


@pytest.mark.parametrize(
    ("uri", "direct"),
    [
        ("sqlite:////tmp/x/mlflow.db", True),
        ("postgresql+psycopg2://u@h/mlflow", True),
        ("file:///tmp/mlruns", True),
        ("/tmp/mlruns", True),
        ("http://127.0.0.1:5000", False),
        ("https://mlflow.example", False),
        ("databricks", False),
    ],
)
def test_only_a_server_decides_the_artifact_root(uri: str, direct: bool) -> None:
    assert tracking.is_direct_store(uri) is direct


def test_client_does_not_leak_the_embedded_uri_into_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlflow.set_tracking_uri` exports MLFLOW_TRACKING_URI; if it stayed, the next state dir (or
    a child process with another CLOSEDLOOP_HOME) would write into this one's store."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    first, second = StatePaths(tmp_path / "a"), StatePaths(tmp_path / "b")
    tracking.client(first).search_experiments()
    assert mlflow.get_tracking_uri() == first.mlflow_tracking_uri
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    mc = tracking.client(second)
    assert mc.tracking_uri == second.mlflow_tracking_uri == mlflow.get_tracking_uri() == mlflow.get_registry_uri()
    assert second.mlflow_db.is_file()


def test_embedded_experiment_keeps_artifacts_in_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_config
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = StatePaths(tmp_path / "state")
    exp_id = tracking.ensure_experiment(paths, base_config, "monitoring")
    exp = tracking.client(paths).get_experiment(exp_id)
    assert exp.name == f"closedloop/{base_config.model.name}/monitoring"
    assert exp.artifact_location == (paths.mlflow_artifacts / "monitoring").as_uri()
    assert tracking.ensure_experiment(paths, base_config, "monitoring") == exp_id  # idempotent


def test_run_artifact_uris_round_trip() -> None:
    uri = tracking.run_artifact_uri("abc123", "/decision/decision_report.md")
    assert uri == "runs:/abc123/decision/decision_report.md"
    assert tracking.parse_run_artifact_uri(uri) == ("abc123", "decision/decision_report.md")
    assert tracking.parse_run_artifact_uri("file:///tmp/x/decision_report.md") is None
    assert tracking.parse_run_artifact_uri("runs:/abc123") is None
    assert tracking.ui_artifact_route("4", "abc123", "model_card.md") == (
        "#/experiments/4/runs/abc123/artifacts/model_card.md?workflowType=machine_learning"
    )


def test_ui_routes_open_the_classic_view() -> None:
    """MLflow 3.x's UI shows GenAI pages (no Model registry) unless the route asks for model training."""
    assert tracking.ui_experiment_route("4") == "#/experiments/4/runs?workflowType=machine_learning"
    assert tracking.ui_model_route("card_fraud") == "#/models/card_fraud?workflowType=machine_learning"
    assert tracking.ui_model_route("card_fraud", 3) == "#/models/card_fraud/versions/3?workflowType=machine_learning"


def test_experiments_are_created_and_kept_as_classic_ml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_config
) -> None:
    """The experiment kind tag: set on creation; an older experiment (or one the UI guessed a kind
    for) is re-tagged the next time the library uses it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = StatePaths(tmp_path / "state")
    mc = tracking.client(paths)
    exp_id = tracking.ensure_experiment(paths, base_config)
    assert mc.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"

    older = mc.create_experiment(f"closedloop/{base_config.model.name}/monitoring")
    mc.set_experiment_tag(older, "mlflow.experimentKind", "genai_development_inferred")
    assert tracking.ensure_experiment(paths, base_config, "monitoring") == older
    assert mc.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"


def test_portable_makes_state_dir_paths_relative(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "state")
    root = str(paths.root)
    evidence = {
        "report": f"{root}/reports/drift/w.html",
        "uri": f"{paths.root.as_uri()}/holdouts/h.parquet",
        "windows": [f"see {root}/reports/a.html", 3, None],
        "root": root,
        "sibling": f"{root}2/x",  # another directory that merely starts alike stays as it is
    }
    out = tracking.portable(evidence, paths)
    assert out == {
        "report": "reports/drift/w.html",
        "uri": "holdouts/h.parquet",
        "windows": ["see reports/a.html", 3, None],
        "root": ".",
        "sibling": f"{root}2/x",
    }
    assert (paths.root / out["report"]) == paths.reports / "drift" / "w.html"  # how a reader resolves it
