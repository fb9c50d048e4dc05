"""DAG hygiene: owners, stated retry policy, one rollback at a time, a fresh clone imports, parsing
is cheap, and a train_model run with nothing to train on skips with the reason."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
#: Tasks where a retry is wrong, each for a reason stated next to it in the DAG / plugin code.
NO_RETRY = {
    ("data_pipeline", "raw_gate"),         # a failed gate is a verdict on the data, not a fault
    ("data_pipeline", "feature_gate"),
    ("data_pipeline", "verify_published"),  # reports this run's states: a retry reads the same
    ("drift_monitor", "trigger_retrain"),   # a retry after a trigger that landed starts a 2nd retrain
    ("rollback_champion", "rollback"),      # manual and watched: fails the same way again
    ("train_model", "approve_promotion"),   # a retry would ask the person a second time
}


@pytest.fixture(scope="module")
def dagbag(dbt_manifest, airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS), safe_mode=True)
    assert not bag.import_errors, bag.import_errors
    return bag


def test_every_task_has_an_owner_and_a_stated_retry_policy(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.default_args.get("owner") == "ml-platform", dag_id
        for task in dag.tasks:
            assert task.owner == "ml-platform", (dag_id, task.task_id)
            if (dag_id, task.task_id) in NO_RETRY or task.task_id.startswith("dbt."):
                # dbt: each task's `dbt build` runs the model's tests; a failing test fails again
                assert task.retries == 0, (dag_id, task.task_id)
            else:
                assert task.retries == 2, (dag_id, task.task_id)
                assert task.retry_delay.total_seconds() == 60, (dag_id, task.task_id)


def test_one_run_at_a_time(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.max_active_runs == 1, dag_id  # rollback_champion was 16 (Airflow's default)


def test_data_pipeline_imports_before_the_dbt_manifest_exists(tmp_path, monkeypatch, airflow_db):
    """A fresh clone: no manifest yet. The DAG imports; its dbt step says what to run."""
    from airflow.dag_processing.dagbag import DagBag

    missing = tmp_path / "fresh-clone" / "manifest.json"
    monkeypatch.setenv("CLOSEDLOOP_DBT_MANIFEST", str(missing))
    monkeypatch.setenv("CLOSEDLOOP_HOME", str(tmp_path / "state"))
    bag = DagBag(dag_folder=str(DAGS / "data_pipeline.py"), safe_mode=True)
    assert bag.import_errors == {}
    dag = bag.get_dag("data_pipeline")
    placeholder = dag.get_task("dbt.manifest_missing")
    assert placeholder.retries == 0
    assert placeholder.upstream_task_ids == {"load_raw"}
    assert placeholder.downstream_task_ids == {"feature_gate"}
    with pytest.raises(FileNotFoundError, match=r"python -m training dbt-parse") as err:
        placeholder.python_callable()
    assert str(missing) in str(err.value)


def test_data_pipeline_imports_on_a_fresh_clone_in_a_clean_process(tmp_path):
    """The same through the benchmark's DAG-processor-like child: no env var, an empty state dir."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.dag_parse import measure

    env = {k: v for k, v in os.environ.items() if k != "CLOSEDLOOP_DBT_MANIFEST"}
    env["CLOSEDLOOP_HOME"] = str(tmp_path / "empty-state")
    result = measure([DAGS / "data_pipeline.py"], runs=1, env=env)["data_pipeline.py"]
    assert result["errors"] == {} and result["dags"] == ["data_pipeline"]
    assert result["tasks"] == 7  # land, raw_gate, load_raw, dbt.manifest_missing, feature_gate, publish, verify


def test_every_dag_file_parses_well_under_a_second(dbt_manifest):
    """Loose CI bound (shared machines vary); `benchmarks/dag_parse.py` shows the 0.2 s goal."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.dag_parse import measure

    results = measure(sorted(DAGS.glob("*.py")), runs=1)
    for name, r in results.items():
        assert r["errors"] == {}, (name, r["errors"])
        assert r["median_cpu_s"] < 1.0, (name, r)
    assert results["data_pipeline.py"]["tasks"] > 10  # rendered from the manifest, not the placeholder


def test_train_model_with_no_data_skips_and_says_why(tmp_path, monkeypatch, airflow_db, capfd):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("CLOSEDLOOP_HOME", str(tmp_path / "empty-state"))  # nothing published
    dag = DagBag(dag_folder=str(DAGS / "train_model.py"), safe_mode=True).get_dag("train_model")
    run = dag.test()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states  # not red
    assert states["decide"] == "skipped" and states["train"] == "skipped", states
    assert "nothing to train on: no published data version" in capfd.readouterr().out


def test_train_model_with_an_unknown_pinned_version_fails_clearly(tmp_path, monkeypatch, airflow_db):
    """A pinned version that was never published is a mistake in the request: red, not skipped."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("CLOSEDLOOP_HOME", str(tmp_path / "empty-state"))
    dag = DagBag(dag_folder=str(DAGS / "train_model.py"), safe_mode=True).get_dag("train_model")
    dag.get_task("decide").retries = 0
    run = dag.test(run_conf={"data_version": "0123456789abcdef0123456789abcdef"})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed" and states["decide"] == "failed", states
