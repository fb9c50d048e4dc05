"""An unanswered approval takes the configured default and says so (`dag.test()`, real MLflow).

train_model's first champion is a risky promotion: `approve_promotion` parks the run in Airflow's
`awaiting_input` state. Nobody answers; once its deadline (`approval.timeout_hours`, a few seconds
here) has passed, Airflow's own scheduler sweep (`SchedulerJobRunner.check_awaiting_input_timeouts`,
called here from a helper thread, as the scheduler loop does) applies the default, `Reject`. The
run ends in `challenger_rejected`, no champion, and the audit row's actor is `timeout:reject` with
a reason saying the default was taken. (An answer by a person through the REST API: tests/e2e.)
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.synthetic import TEST_OVERRIDES, make_training_set, publish
from training.config import load_config, with_overrides
from training.paths import StatePaths

pytestmark = pytest.mark.timeout(900)
DAGS = Path(__file__).parents[2] / "dags"


@pytest.fixture(scope="module")
def env(tmp_path_factory, airflow_db):
    root = tmp_path_factory.mktemp("approval_dag")
    approval = {"mode": "risky", "timeout_hours": 0.001, "on_timeout": "reject"}  # 3.6 s
    cfg = with_overrides(load_config(), **{**TEST_OVERRIDES, "approval": approval})
    cfg_file = root / "closedloop.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    saved = {k: os.environ.get(k) for k in ("CLOSEDLOOP_HOME", "CLOSEDLOOP_CONFIG", "MLFLOW_TRACKING_URI")}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["CLOSEDLOOP_HOME"] = str(root / "state")
    os.environ["CLOSEDLOOP_CONFIG"] = str(cfg_file)
    paths = StatePaths(root / "state").ensure()
    publish(paths, make_training_set(), "training_set")
    yield paths, cfg
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _sweep_timeouts(stop: threading.Event, swept: list[int]) -> None:
    """What the scheduler loop does every few seconds: resolve awaiting_input tasks past their deadline."""
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    runner = SchedulerJobRunner(job=Job())
    while not stop.is_set():
        with create_session() as session:
            waiting = session.query(TaskInstance).filter(
                TaskInstance.state == TaskInstanceState.AWAITING_INPUT).count()
        if waiting:
            swept.append(waiting)
            runner.check_awaiting_input_timeouts()
        time.sleep(2)


def test_an_unanswered_risky_promotion_takes_the_default_and_says_so(env):
    from airflow.dag_processing.dagbag import DagBag

    from training.model import registry, tracking

    paths, cfg = env
    dag = DagBag(dag_folder=str(DAGS / "train_model.py"), safe_mode=True).get_dag("train_model")
    stop, swept = threading.Event(), []
    sweeper = threading.Thread(target=_sweep_timeouts, args=(stop, swept), daemon=True)
    sweeper.start()
    try:
        run = dag.test(run_conf={"reason": "manual", "actor": "api:test"})
    finally:
        stop.set()
        sweeper.join(timeout=30)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert swept, "approve_promotion never waited for input"
    assert run.state == "success", states
    assert states["approve_promotion"] == "success" and states["promote"] == "success"
    assert states["challenger_rejected"] == "success" and states["announce_champion"] == "skipped"
    assert tracking.alias_version(tracking.client(paths), cfg.model.name, "champion") is None
    (row,) = registry.audit_log(paths, cfg.model.name)
    assert (row["action"], row["actor"], row["trigger_reason"]) == ("reject", "timeout:reject", "manual")
    assert "rejected by default: no answer by" in row["reason"]
    answer = row["metrics"]["approval"]["answer"]
    assert answer["timed_out"] and not answer["approved"] and answer["actor"] == "timeout:reject"
    assert [r["kind"] for r in row["metrics"]["approval"]["risks"]] == ["first_champion"]
