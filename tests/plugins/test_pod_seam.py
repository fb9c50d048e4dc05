"""The scale-out seam: a KubernetesPodOperator renders the same CLI stage a local task runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from closedloop.pods import XCOM_RETURN_PATH, stage_pod, training_pod

from training.cli import build_parser
from training.config import load_config, with_overrides


def test_pod_runs_the_training_cli_stage(monkeypatch):
    monkeypatch.setenv("CLOSEDLOOP_HOME", "/state")
    monkeypatch.setenv("CLOSEDLOOP_OPS_DB_URL", "postgresql://closedloop@pg/closedloop")
    monkeypatch.setenv("CLOSEDLOOP_PG_PASSWORD", "s3cret")
    op = training_pod("train", "train", ["--reason", "drift_monitor:performance"], image="closedloop:test")
    pod = op.build_pod_request_obj(dry_run=True)  # renders without a cluster
    container = pod.spec.containers[0]
    assert container.image == "closedloop:test"
    assert container.command == ["python", "-m", "training"]
    assert container.args == ["train", "--reason", "drift_monitor:performance", "--xcom-json", XCOM_RETURN_PATH]
    env = {e.name: e.value for e in container.env}
    assert env["CLOSEDLOOP_HOME"] == "/state"
    assert env["CLOSEDLOOP_OPS_DB_URL"].startswith("postgresql://")
    assert "CLOSEDLOOP_PG_PASSWORD" not in env  # secrets come from a Secret, never the scheduler's env
    assert container.resources.requests == {"cpu": "2", "memory": "8Gi"}
    # the XCom sidecar reads what the CLI writes to /airflow/xcom/return.json
    names = [c.name for c in pod.spec.containers]
    assert "airflow-xcom-sidecar" in names
    assert any(m.mount_path == "/airflow/xcom" for m in container.volume_mounts)


def test_stage_pod_takes_image_resources_secret_and_state_claim_from_config(monkeypatch):
    monkeypatch.setenv("CLOSEDLOOP_HOME", "/mnt/closedloop")
    execution = with_overrides(load_config(), execution={
        "mode": "kubernetes", "image": "registry.local/closedloop:7", "namespace": "ml",
        "service_account": "closedloop-runner", "env_from_secret": "closedloop-db",
        "state_volume_claim": "closedloop-state",
        "resources": {"drift": {"cpu": "500m", "memory": "3Gi", "memory_limit": "4Gi"}},
    }).execution
    pod = stage_pod(execution, "evaluate", "drift", ["--date=2026-01-05"]).build_pod_request_obj(dry_run=True)
    container = pod.spec.containers[0]
    assert pod.metadata.namespace == "ml"
    assert pod.spec.service_account_name == "closedloop-runner"
    assert container.image == "registry.local/closedloop:7"
    assert container.args[:2] == ["drift", "--date=2026-01-05"]
    assert container.resources.requests == {"cpu": "500m", "memory": "3Gi"}
    assert container.resources.limits == {"memory": "4Gi"}
    assert [e.secret_ref.name for e in container.env_from] == ["closedloop-db"]
    state = [m for m in container.volume_mounts if m.mount_path == "/mnt/closedloop"]
    assert len(state) == 1
    claims = {v.name: v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim}
    assert claims[state[0].name] == "closedloop-state"
    # a stage the YAML does not list keeps its default requests
    train = stage_pod(execution, "train", "train").build_pod_request_obj(dry_run=True).spec.containers[0]
    assert train.resources.requests == {"cpu": "2", "memory": "8Gi"}


def test_a_state_claim_without_a_state_path_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("CLOSEDLOOP_HOME", raising=False)
    execution = with_overrides(load_config(), execution={"state_volume_claim": "closedloop-state"}).execution
    with pytest.raises(ValueError, match="CLOSEDLOOP_HOME"):
        stage_pod(execution, "train", "train")


def test_the_rendered_stages_exist_in_the_cli():
    out = subprocess.run([sys.executable, "-m", "training", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--reason" in out.stdout and "--xcom-json" in out.stdout
    parser = build_parser()
    ns = parser.parse_args(["drift", "--dates=2026-01-06,2026-01-05,2026-01-06", "--retrain-in-flight=False"])
    assert [d.isoformat() for d in ns.dates] == ["2026-01-05", "2026-01-06"] and ns.retrain_in_flight is False
    assert parser.parse_args(["drift", "--date=2026-01-05", "--retrain-in-flight"]).retrain_in_flight is True
    assert parser.parse_args(["drift", "--date=2026-01-05", "--retrain-in-flight=true"]).retrain_in_flight is True
    with pytest.raises(SystemExit):
        parser.parse_args(["drift", "--date=2026-01-05", "--retrain-in-flight=maybe"])
    ns = parser.parse_args(["infer", "--dates=2026-01-05", "--xcom-json", "/tmp/x.json"])
    assert [d.isoformat() for d in ns.dates] == ["2026-01-05"] and str(ns.xcom_json) == "/tmp/x.json"


def test_cli_writes_its_result_for_the_xcom_sidecar(tmp_path, base_config):
    """What the sidecar reads is exactly the JSON the stage printed."""
    cfg = with_overrides(base_config, simulator={"transactions_per_day": 200, "n_customers": 50, "n_merchants": 10})
    cfg_file = tmp_path / "closedloop.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    xcom = tmp_path / "airflow" / "xcom" / "return.json"
    out = subprocess.run(
        [sys.executable, "-m", "training", "--config", str(cfg_file), "--home", str(tmp_path / "state"),
         "simulate", "--date", "2026-01-05", "--xcom-json", str(xcom)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    written = json.loads(xcom.read_text())
    assert written == json.loads(out.stdout)
    assert written["date"] == "2026-01-05" and written["transactions"] > 0


def test_cli_rejects_date_and_dates_together(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "training", "--home", str(tmp_path), "drift", "--date", "2026-01-05",
         "--dates", "2026-01-05", "--xcom-json", str(tmp_path / "x.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1
    assert "exactly one of --date" in out.stderr
    assert not (tmp_path / "x.json").exists()  # a failed stage hands nothing over


def test_infer_over_several_days_hands_over_what_batch_inference_emits(tmp_path):
    """`infer --dates` returns the Asset extra the in-process `score` task builds (here: no champion yet)."""
    xcom = tmp_path / "return.json"
    out = subprocess.run(
        [sys.executable, "-m", "training", "--home", str(tmp_path / "state"), "infer",
         "--dates", "2026-01-06,2026-01-05", "--xcom-json", str(xcom)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    extra = json.loads(xcom.read_text())
    assert extra == json.loads(out.stdout)
    assert extra["batch_date"] == "2026-01-06" and extra["batch_dates"] == ["2026-01-05", "2026-01-06"]
    assert [r["status"] for r in extra["results"]] == ["skipped_no_champion"] * 2
