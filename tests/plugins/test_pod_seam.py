"""The scale-out seam: a KubernetesPodOperator renders the same CLI stage a local task runs."""

from __future__ import annotations

import subprocess
import sys

from closedloop.pods import training_pod


def test_pod_runs_the_training_cli_stage(monkeypatch):
    monkeypatch.setenv("CLOSEDLOOP_HOME", "/state")
    monkeypatch.setenv("CLOSEDLOOP_OPS_DB_URL", "postgresql://closedloop@pg/closedloop")
    op = training_pod("train", "train", ["--reason", "drift_monitor:performance"], image="closedloop:test")
    pod = op.build_pod_request_obj(dry_run=True)  # renders without a cluster
    container = pod.spec.containers[0]
    assert container.image == "closedloop:test"
    assert container.command == ["python", "-m", "training"]
    assert container.args == ["train", "--reason", "drift_monitor:performance"]
    env = {e.name: e.value for e in container.env}
    assert env["CLOSEDLOOP_HOME"] == "/state"
    assert env["CLOSEDLOOP_OPS_DB_URL"].startswith("postgresql://")
    assert container.resources.requests == {"cpu": "2", "memory": "8Gi"}


def test_the_rendered_stage_exists_in_the_cli():
    out = subprocess.run([sys.executable, "-m", "training", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--reason" in out.stdout
