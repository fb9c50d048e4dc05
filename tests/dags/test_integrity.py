"""DAG integrity: every DAG file imports cleanly, has the expected shape, and touches no DB at parse time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from closedloop.runtime import BATCH_DATE_TEMPLATE

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
EXPECTED_DAG_IDS = {p.stem for p in DAGS.glob("*.py") if not p.name.startswith("_")}


def _dbt_models(manifest: Path) -> dict[str, dict]:
    """The manifest's models by node id (each with its `fqn` layer and `depends_on`)."""
    nodes = json.loads(manifest.read_text())["nodes"]
    return {node_id: node for node_id, node in nodes.items() if node["resource_type"] == "model"}


def _layer(model: dict) -> str:
    return model["fqn"][1]  # [project, layer, ...]: staging, intermediate or marts


def _staging_parents(models: dict[str, dict], node_id: str) -> set[str]:
    """The staging models `node_id` reads, directly or through intermediate models."""
    found: set[str] = set()
    for parent in models[node_id]["depends_on"]["nodes"]:
        if parent in models:  # sources are not models
            if _layer(models[parent]) == "staging":
                found.add(parent)
            found |= _staging_parents(models, parent)
    return found


def _cosmos_task_id(model: dict) -> str:
    return f"dbt.{model['name']}_run"  # cosmos watcher mode: a task per model reading the one build's status


@pytest.fixture(scope="module")
def dagbag(dbt_manifest, airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS), safe_mode=True)


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, "\n".join(f"{k}: {v}" for k, v in dagbag.import_errors.items())


def test_one_dag_per_file_named_after_it(dagbag):
    assert set(dagbag.dag_ids) == EXPECTED_DAG_IDS
    for dag_id, dag in dagbag.dags.items():
        assert Path(dag.fileloc).stem == dag_id


def test_dag_conventions(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags and "closedloop" in dag.tags, dag_id
        assert dag.doc_md, f"{dag_id} has no doc_md (module docstring)"
        assert not dag.catchup, dag_id
        assert dag.start_date.tzinfo is not None and dag.start_date.utcoffset().total_seconds() == 0, dag_id


def test_dags_take_their_start_and_table_names_from_the_contract(dagbag):
    """The first data interval is `contract.start_date`; the feature gate reads the contract's feature
    mart with the suite named after it; the features Asset names the published table."""
    from closedloop.assets import FEATURES

    from training.config import load_config

    cfg = load_config()
    for dag_id in ("data_pipeline", "batch_inference", "train_model", "drift_monitor"):
        assert dagbag.get_dag(dag_id).start_date.date() == cfg.start_date, dag_id
    gate = dagbag.get_dag("data_pipeline").get_task("feature_gate")
    schema, mart = cfg.contract.marts.features.split(".")
    assert (gate.suite_name, gate.loader_kwargs) == (mart, {"table": f"{schema}.{mart}"})
    assert FEATURES.uri == "closedloop://warehouse/" + cfg.contract.marts.published.replace(".", "/")


def test_data_pipeline_graph(dagbag, dbt_manifest):
    dag = dagbag.get_dag("data_pipeline")
    ids = set(dag.task_ids)
    assert {"land", "raw_gate", "load_raw", "feature_gate", "publish"} <= ids
    dbt_tasks = {t for t in ids if t.startswith("dbt.")}
    # every mart is a cosmos task, and the marts run after staging
    models = _dbt_models(dbt_manifest)
    marts = {node_id: m for node_id, m in models.items() if _layer(m) == "marts"}
    assert {m["name"] for m in marts.values()} >= {"ml_transaction_features", "ml_training_set"}
    for node_id, mart in marts.items():
        task_id = _cosmos_task_id(mart)
        assert task_id in dbt_tasks
        staging = {_cosmos_task_id(models[s]) for s in _staging_parents(models, node_id)}
        assert staging, f"{task_id} reads no staging model"
        upstream = dag.get_task(task_id).get_flat_relative_ids(upstream=True)
        assert staging <= upstream, f"{task_id} does not run after {sorted(staging - upstream)}"
    assert dag.get_task("raw_gate").upstream_task_ids == {"land"}
    assert dag.get_task("load_raw").upstream_task_ids == {"raw_gate"}
    assert "feature_gate" in dag.get_task("publish").upstream_task_ids
    feature_gate_up = dag.get_task("feature_gate").upstream_task_ids
    assert feature_gate_up and all(t.startswith("dbt.") for t in feature_gate_up)
    assert dag.get_task("verify_published").trigger_rule == "all_done"
    publish = dag.get_task("publish")
    assert [o.name for o in publish.outlets] == ["closedloop_features"]
    # the run's day reaches dbt in the environment, not in --vars: the vars stay the same every day,
    # so dbt keeps its partial parse (tests/dbt/test_build.py), and the marts rebuild from that day
    # one `dbt build` (models and data tests) in the producer, then the model tasks; no test tasks
    producer = dag.get_task("dbt.dbt_producer_watcher")
    assert producer.upstream_task_ids == {"load_raw"}
    assert producer.dbt_cmd_flags[-2:] == ["--resource-type", "test"], producer.dbt_cmd_flags
    assert not [t for t in dbt_tasks if "test" in t.rsplit(".", 1)[-1]], sorted(dbt_tasks)
    model_tasks = [dag.get_task(t) for t in dbt_tasks if t.endswith("_run")]
    assert len(model_tasks) == len(models)
    for task in model_tasks:
        assert task.upstream_task_ids  # after the producer or after the models it reads
        assert task.base_cmd == ["build"]  # a cleared producer: the model is built with its tests
        if task.upstream_task_ids == {producer.task_id}:
            assert task.trigger_rule == "none_failed"
    runs_dbt = [dag.get_task(t) for t in dbt_tasks if hasattr(dag.get_task(t), "env")]
    assert runs_dbt, "no dbt task carries an environment"
    for task in runs_dbt:
        assert task.env["CLOSEDLOOP_DBT_REBUILD_FROM"] == BATCH_DATE_TEMPLATE, task.env
        assert "rebuild_from" not in (task.vars or {}), task.vars


def test_parsing_touches_no_database(dbt_manifest, tmp_path):
    """Parse every DAG with an unusable metadata DB: any DB, Variable or Connection access fails."""
    env = os.environ.copy()
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{tmp_path}/does/not/exist/airflow.db"
    env["AIRFLOW_HOME"] = str(tmp_path)
    code = textwrap.dedent(
        f"""
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(DAGS)!r}, safe_mode=True)
        assert not bag.import_errors, bag.import_errors
        print(sorted(bag.dag_ids))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "data_pipeline" in out.stdout
