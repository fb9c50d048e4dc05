"""A risky promotion asks a person, and the person answers through Airflow's REST API.

One embedded stack (api-server, scheduler, dag-processor, triggerer) on a prepared state: a
published synthetic data version and no champion. The test triggers `train_model` through the REST
API; its first passing challenger is a risky promotion (first champion), so the run parks
`approve_promotion` in Airflow's `awaiting_input` state. The test then acts as the person: it reads
the question (its body is the decision report) from the HITL REST endpoint, checks that the
model-health page lists it as pending, and answers `Approve` with a comment through
`PATCH /api/v2/dags/train_model/dagRuns/<run>/taskInstances/approve_promotion/-1/hitlDetails`.
It asserts the run ends in `announce_champion`, the alias moved, and the audit row names the
approver, the comment and the time; the decision report carries the answer.

Measured: 3.6 min (stack setup included) on 2 cores shared with other test runs.
"""

from __future__ import annotations

import dataclasses
import os
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from devstack.airflow_api import _request, get_json, get_token, trigger_via_rest
from devstack.demo import BURST_AIRFLOW_ENV
from devstack.environment import Ports, free_port
from devstack.services import RUNTIME_SERVICES
from devstack.supervisor import start_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
COMMENT = "first champion checked against the report: ship it"


def _wait(what: str, probe, timeout_s: float, stack) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stack.check_alive()
        found = probe()
        if found:
            return found
        time.sleep(3)
    pytest.fail(f"waited {timeout_s:.0f}s for {what}; logs in {stack.log_dir}")


def test_a_risky_promotion_waits_for_a_person_who_answers_through_the_rest_api(tmp_path, monkeypatch):
    from tests.synthetic import TEST_OVERRIDES, make_training_set, publish
    from training.config import load_config, with_overrides
    from training.paths import StatePaths

    for key in list(os.environ):
        if key.startswith(("CLOSEDLOOP_", "AIRFLOW", "MLFLOW_")):
            monkeypatch.delenv(key)
    state = tmp_path / "state"
    cfg = with_overrides(load_config(), **{**TEST_OVERRIDES, "approval": {"mode": "risky", "timeout_hours": 2}})
    cfg_file = tmp_path / "closedloop.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    monkeypatch.setenv("CLOSEDLOOP_HOME", str(state))
    monkeypatch.setenv("CLOSEDLOOP_CONFIG", str(cfg_file))
    paths = StatePaths(state).ensure()
    ports = dataclasses.replace(Ports.free(), airflow=free_port())
    stack = start_stack(paths, ports, services=RUNTIME_SERVICES["embedded"], extra_env={
        "CLOSEDLOOP_CONFIG": str(cfg_file),
        # this checkout's code in every service (a git worktree beside the venv's editable install)
        "PYTHONPATH": str(ROOT),
        **BURST_AIRFLOW_ENV,  # short runs, DAG files that do not change
    })
    try:
        stack.wait_healthy(timeout_s=300)
        stack.wait_for_dags(["train_model"], timeout_s=300)
        publish(paths, make_training_set(), "training_set")  # the prepared state: one data version
        stack.airflow("dags", "unpause", "train_model")
        run_id = trigger_via_rest(stack.url, stack.user, stack.password, "train_model",
                                  {"reason": "manual", "actor": "api:e2e"})
        token = get_token(stack.url, stack.user, stack.password)
        hitl_url = (f"{stack.url}/api/v2/dags/train_model/dagRuns/{urllib.parse.quote(run_id, safe='')}"
                    "/taskInstances/approve_promotion/-1/hitlDetails")

        def asked():
            try:
                return get_json(hitl_url, token)
            except Exception:  # 404 until the task has asked
                return None

        question = _wait("approve_promotion to ask", asked, 900, stack)
        assert question["options"] == ["Approve", "Reject"] and question["defaults"] == ["Reject"]
        assert question["responded_at"] is None
        assert "first_champion" in question["subject"] and "first champion" in question["subject"]
        assert "A person must approve this promotion" in question["body"]  # the decision report
        assert "Gate decision" in question["body"] or "PROMOTE" in question["body"]
        assert "comment" in question["params"]
        # the model-health page of the real api-server lists it
        health = get_json(f"{stack.url}/model-health/api/status", token)
        pending = health["approvals"]["data"]
        assert [p["run_id"] for p in pending] == [run_id], health["approvals"]
        assert pending[0]["deadline"] and pending[0]["href"].endswith("/tasks/approve_promotion/required_actions?map_index=-1")
        from training.model import registry

        assert registry.audit_log(paths, cfg.model.name) == []  # nothing promoted while it waits

        # the person answers through the REST API
        answer = _request("PATCH", hitl_url, {"chosen_options": ["Approve"], "params_input": {"comment": COMMENT}},
                          token=token)
        assert answer["chosen_options"] == ["Approve"] and answer["responded_by"]["name"] == stack.user

        def finished():
            runs = get_json(f"{stack.url}/api/v2/dags/train_model/dagRuns/{urllib.parse.quote(run_id, safe='')}", token)
            return runs if runs["state"] in ("success", "failed") else None

        run = _wait("the train_model run to finish", finished, 600, stack)
        tis = get_json(f"{stack.url}/api/v2/dags/train_model/dagRuns/{urllib.parse.quote(run_id, safe='')}"
                       "/taskInstances", token)["task_instances"]
        states = {t["task_id"]: t["state"] for t in tis}
        health = get_json(f"{stack.url}/model-health/api/status", token)
    finally:
        stack.stop()
    print({"run": run_id, "states": states})
    assert run["state"] == "success", states
    assert states["approve_promotion"] == "success" and states["promote"] == "success"
    assert states["announce_champion"] == "success" and states["challenger_rejected"] == "skipped"
    assert health["approvals"]["data"] == []

    from training.model import registry, tracking

    (row,) = registry.audit_log(paths, cfg.model.name)
    print({k: row[k] for k in ("action", "actor", "reason", "trigger_reason", "airflow_run_id")})
    assert (row["action"], row["actor"], row["airflow_run_id"]) == ("first_promote", f"user:{stack.user}", run_id)
    assert row["trigger_reason"] == "manual"
    assert f"approved by user:{stack.user} at " in row["reason"] and COMMENT in row["reason"]
    given = row["metrics"]["approval"]
    assert [r["kind"] for r in given["risks"]] == ["first_champion"] and given["asked"]
    assert given["answer"]["comment"] == COMMENT and not given["answer"]["timed_out"] and given["answer"]["at"]
    mc = tracking.client(paths)
    champion = mc.get_model_version_by_alias(cfg.model.name, "champion")
    assert str(champion.version) == row["to_version"]
    assert champion.tags["approval"].startswith(f"approved by user:{stack.user}")
    import mlflow.artifacts

    report = mlflow.artifacts.load_text(row["report_uri"])
    assert "## Approval answer" in report and COMMENT in report
