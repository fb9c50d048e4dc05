"""The library against a real MLflow tracking server (the services profile's MLflow).

One `mlflow server --serve-artifacts` subprocess per module (SQLite backend and artifact store in a
temporary folder, a free port on 127.0.0.1). With `MLFLOW_TRACKING_URI` pointing at it, train,
register, evaluate and promote run for real, and a drift window is logged; then the server - not the
state directory - must hold the runs, the model version, `@champion`, the decision report and the
Evidently HTML, served through the server's artifact proxy (`mlflow-artifacts:/`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from training.config import Config, with_overrides
from training.model import tracking
from training.paths import StatePaths

SERVER_START_TIMEOUT_S = 60


@dataclass(frozen=True)
class Server:
    url: str
    backend: Path
    artifacts: Path
    proc: subprocess.Popen
    log: Path

    def wait_healthy(self) -> Server:
        """Block until `/health` answers (the server starts while the test prepares its data)."""
        _wait_healthy(self.url, self.proc, self.log)
        return self


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"mlflow server not healthy after {SERVER_START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real `mlflow server --serve-artifacts` on a free local port, stopped after the module.

    Not waited for here: it boots (tens of seconds on a busy machine) while the data is published."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    backend, artifacts, log = root / "mlflow.db", root / "artifacts", root / "server.log"
    argv = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{backend}",
        "--serve-artifacts", "--artifacts-destination", str(artifacts),
    ]
    # no job runner: it starts 7 huey consumer processes (GenAI jobs, trace rollups) nothing here uses
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("w") as out:
        # own process group: the CLI starts the web server as a child; both are stopped below
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield Server(url, backend, artifacts, proc, log)
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the server's own process group: politely, then for sure (the web server may outlive the CLI)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:  # uvicorn waits for idle keep-alive clients; its store is thrown away
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def server_state(tmp_path_factory: pytest.TempPathFactory, server: Server) -> Iterator[StatePaths]:
    """A state directory whose stages talk to the MLflow server (the services profile's setting)."""
    root = tmp_path_factory.mktemp("state-with-server")
    mp = pytest.MonkeyPatch()
    mp.setenv("CLOSEDLOOP_HOME", str(root))
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    mp.setenv("MLFLOW_TRACKING_URI", server.url)
    mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mp.delenv("CLOSEDLOOP_OPS_DB_URL", raising=False)
    yield StatePaths(root).ensure()
    mp.undo()


@pytest.fixture(scope="module")
def cfg(train_cfg: Config) -> Config:
    # one cheap family: what is checked here is where things land, not which model wins
    return with_overrides(train_cfg, model={"name": "fraud_on_server"}, training={"candidates": ["logistic_regression"]})


@pytest.fixture(scope="module")
def promoted(server, server_state, cfg, training_frame, synth):
    """Train + register + evaluate + promote (the first champion), all against the server. The
    trigger evidence names a report in the state dir, as a drift monitor's evidence may."""
    from training.model.evaluate import evaluate_challenger
    from training.model.train import TrainRequest, train_model

    data_version = synth.publish(server_state, training_frame, "full")
    server.wait_healthy()
    evidence = {"report": str(server_state.reports / "drift" / "v0" / "w.html"), "uri": server_state.root.as_uri()}
    trained = train_model(
        server_state, cfg, TrainRequest(reason="first on server", evidence=evidence, data_version=data_version)
    )
    evaluated = evaluate_challenger(server_state, cfg, version=trained.version)
    assert evaluated.action == "first_promote", evaluated.failed_gates
    return trained, evaluated


@pytest.fixture(scope="module")
def drift_run(server_state, cfg, promoted) -> tuple[str, Path]:
    """One drift-monitor window logged to MLflow, with an Evidently-like HTML report from the state dir."""
    from training.monitoring import drift_job, retrain_trigger

    trained, _ = promoted
    report = server_state.reports / "drift" / "window.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("<html><body>evidently report</body></html>")
    window = retrain_trigger.WindowEvidence(
        window_start=dt.date(2026, 2, 1), window_end=dt.date(2026, 2, 7), champion_version=trained.version,
        scored_by_versions=(trained.version,), rows=100, matured_rows=0, positives=0, signals={},
        report_path=str(report),
    )
    decision = retrain_trigger.Decision(False, "no_breach", {}, "No signal breached.")
    return drift_job.log_to_mlflow(server_state, cfg, window, decision), report


def _server_client(server: Server):
    from mlflow import MlflowClient

    server.wait_healthy()
    return MlflowClient(tracking_uri=server.url, registry_uri=server.url)


def test_tracking_uri_follows_the_environment_at_call_time(server, server_state, monkeypatch):
    # no server call here: the decision is made from the environment alone
    assert tracking.tracking_uri(server_state) == server.url
    assert tracking.artifact_location(server_state, "x") is None  # the server decides
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri(server_state) == server_state.mlflow_tracking_uri
    assert tracking.artifact_location(server_state, "x") == (server_state.mlflow_artifacts / "x").as_uri()


def test_server_holds_run_version_and_champion(server, promoted, cfg):
    trained, evaluated = promoted
    mc = _server_client(server)
    run = mc.get_run(trained.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
    assert run.data.metrics["holdout_pr_auc"] == pytest.approx(trained.holdout_metrics["pr_auc"])
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"training", "holdout"}
    champion = mc.get_model_version_by_alias(cfg.model.name, "champion")
    assert str(champion.version) == trained.version == evaluated.challenger_version
    assert champion.tags["gate_decision"] == "promote"
    assert champion.tags["decision_report"] == f"runs:/{trained.run_id}/decision/decision_report.md"
    # a state-dir path in the trigger evidence is kept relative to the state dir (resolvable there)
    assert json.loads(champion.tags["trigger_evidence"]) == {"report": "reports/drift/v0/w.html", "uri": "."}
    assert json.loads(run.data.tags["trigger_evidence"]) == json.loads(champion.tags["trigger_evidence"])
    artifacts = {f.path for f in mc.list_artifacts(trained.run_id)}
    assert {"model_card.md", "decision", "plots", "search"} <= artifacts


def test_decision_report_and_model_are_served_through_the_proxy(server, promoted, tmp_path):
    import mlflow.artifacts

    trained, evaluated = promoted
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=evaluated.report_uri, dst_path=str(tmp_path), tracking_uri=server.url
    )
    text = Path(local).read_text()
    assert "PROMOTE" in text and trained.holdout_hash in text
    # ... and it is stored where the server keeps artifacts, not in the state directory
    stored = list(server.artifacts.rglob("decision_report.md"))
    assert len(stored) == 1 and stored[0].read_text() == text
    assert list(server.artifacts.rglob("MLmodel")), "the model was not uploaded to the server"


def test_drift_window_and_evidently_html_land_on_the_server(server, cfg, drift_run):
    import mlflow.artifacts

    run_id, report = drift_run
    mc = _server_client(server)
    run = mc.get_run(run_id)
    experiment = mc.get_experiment(run.info.experiment_id)
    assert experiment.name == f"closedloop/{cfg.model.name}/monitoring"
    assert experiment.artifact_location.startswith("mlflow-artifacts:/"), experiment.artifact_location
    assert run.data.tags["decision"] == "no_trigger" and run.data.metrics["rows"] == 100
    html = mlflow.artifacts.load_text(f"runs:/{run_id}/evidently/{report.name}")
    assert html == report.read_text()


def test_state_dir_holds_no_mlflow_store_or_artifacts(server_state, promoted, drift_run):
    assert not server_state.mlflow_db.exists()
    written = [p for p in (server_state.root / "mlflow").rglob("*") if p.is_file()]
    assert written == []
    assert not list(server_state.root.rglob("mlflow.db")) and not list(server_state.root.rglob("MLmodel"))
    assert not list(server_state.root.rglob("mlruns"))


def test_no_tag_or_description_names_a_local_file(server, server_state, promoted, drift_run, cfg):
    from tests.mlflow_portability import local_references

    found = local_references(_server_client(server), cfg.model.name, server_state)
    assert found == []
