"""Heavy stages as Kubernetes pods, chosen per config (`execution`), checked without a cluster.

The DAG files are parsed with `execution.mode: kubernetes`; the heavy tasks must then be
KubernetesPodOperators running the CLI stage. Real `dag.test()` runs execute the light local tasks
(decide, days, wait_for_window, ...) for real, render each pod's templated arguments from the run's
own XComs and conf, and fail only where the pod would be created (no cluster here); the rendered
arguments are read back from Airflow's rendered-fields table and the pod is built from them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from training.config import load_config, with_overrides

pytestmark = pytest.mark.timeout(600)
DAGS = Path(__file__).parents[2] / "dags"
IMAGE = "registry.example/closedloop:1.2"
FORWARDED = {
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "CLOSEDLOOP_OPS_DB_URL": "postgresql://closedloop@pg:5432/closedloop",
    "CLOSEDLOOP_DBT_TARGET": "postgres",
    "CLOSEDLOOP_PG_HOST": "pg",
    "CLOSEDLOOP_PG_PORT": "5432",
    "CLOSEDLOOP_PG_USER": "closedloop",
    "CLOSEDLOOP_PG_DBNAME": "closedloop",
}


def _use_config(tmp_path: Path, monkeypatch, **execution) -> Path:
    from tests.synthetic import TEST_OVERRIDES

    cfg = with_overrides(load_config(), **TEST_OVERRIDES, execution=execution)
    cfg_file = tmp_path / "closedloop.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    monkeypatch.setenv("CLOSEDLOOP_CONFIG", str(cfg_file))
    monkeypatch.setenv("CLOSEDLOOP_HOME", str(tmp_path / "state"))
    return cfg_file


@pytest.fixture
def kubernetes_mode(tmp_path, monkeypatch, airflow_db):
    """Every heavy stage as a pod; the services' settings in the environment the DAGs are parsed in."""
    for key, value in FORWARDED.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CLOSEDLOOP_PG_PASSWORD", "not-for-the-pod-spec")
    _use_config(tmp_path, monkeypatch, mode="kubernetes", image=IMAGE,
                resources={"train": {"cpu": "3", "memory": "6Gi", "memory_limit": "7Gi"}})
    return tmp_path


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / f"{dag_id}.py"), safe_mode=True)
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


def _types(dag) -> dict[str, str]:
    return {t.task_id: type(t).__name__ for t in dag.tasks}


def _rendered(run, task_id: str) -> dict:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(RenderedTaskInstanceFields).filter_by(
            dag_id=run.dag_id, run_id=run.run_id, task_id=task_id).one()
        return dict(row.rendered_fields)


def _run_until_the_pod(dag, pod_task_id: str, monkeypatch, **test_kwargs):
    """dag.test() up to the pod: local tasks run for real; the pod task fails creating the pod.

    The services' settings were captured into the pods when the DAG was parsed; the local tasks of
    this run use the test's own stores (the state dir), as on a machine without those services.
    """
    for key in FORWARDED:
        monkeypatch.delenv(key, raising=False)
    dag.get_task(pod_task_id).retries = 0  # no cluster here: the failure is expected, don't wait on retries
    run = dag.test(**test_kwargs)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states[pod_task_id] == "failed", states
    return run, states


def _pod_from(dag, task_id: str, rendered: dict):
    """The pod the operator would create from the run's rendered fields (no cluster needed)."""
    from kubernetes.client import models as k8s

    op = dag.get_task(task_id)
    op.arguments = rendered["arguments"]
    op.env_vars = [k8s.V1EnvVar(name=e["name"], value=e["value"]) for e in rendered["env_vars"]]
    op.container_resources = k8s.V1ResourceRequirements(**{
        k: v for k, v in rendered["container_resources"].items() if k in ("limits", "requests")})
    return op.build_pod_request_obj(dry_run=True)


def _assert_pod_basics(pod, stage: str, requests: dict[str, str]) -> list[str]:
    container = pod.spec.containers[0]
    assert container.image == IMAGE
    assert container.command == ["python", "-m", "training"]
    assert container.args[0] == stage
    assert container.args[-2:] == ["--xcom-json", "/airflow/xcom/return.json"]
    env = {e.name: e.value for e in container.env}
    for key, value in FORWARDED.items():
        assert env[key] == value, key
    assert "CLOSEDLOOP_PG_PASSWORD" not in env
    assert container.resources.requests == requests
    assert "airflow-xcom-sidecar" in [c.name for c in pod.spec.containers]
    return container.args


def test_kubernetes_mode_turns_the_heavy_stages_into_pods(kubernetes_mode):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    train = _dag("train_model")
    assert isinstance(train.get_task("train"), KubernetesPodOperator)
    assert isinstance(train.get_task("evaluate"), KubernetesPodOperator)
    assert not isinstance(train.get_task("decide"), KubernetesPodOperator)  # light, needs Airflow's context
    assert train.get_task("train").upstream_task_ids == {"decide"}
    assert train.get_task("evaluate").upstream_task_ids == {"train"}
    assert train.get_task("route").upstream_task_ids == {"evaluate"}
    assert "--hold" in train.get_task("evaluate").arguments  # a passing challenger waits for `promote`
    assert train.get_task("approve_promotion").upstream_task_ids == {"route"}
    assert train.get_task("promote").upstream_task_ids == {"route", "approve_promotion"}
    assert train.get_task("outcome").upstream_task_ids == {"promote"}
    assert train.get_task("challenger_rejected").upstream_task_ids == {"route", "outcome"}
    res = train.get_task("train").build_pod_request_obj(dry_run=True).spec.containers[0].resources
    assert res.requests == {"cpu": "3", "memory": "6Gi"} and res.limits == {"memory": "7Gi"}

    infer = _dag("batch_inference")
    assert isinstance(infer.get_task("score"), KubernetesPodOperator)
    assert infer.get_task("score").pool == "duckdb_writer"
    assert [o.name for o in infer.get_task("announce").outlets] == ["closedloop_predictions"]
    assert infer.get_task("announce").upstream_task_ids == {"score"}

    drift = _dag("drift_monitor")
    assert isinstance(drift.get_task("evaluate"), KubernetesPodOperator)
    assert drift.get_task("evaluate").upstream_task_ids == {"wait_for_window", "retrain_in_flight"}
    assert drift.get_task("breached").upstream_task_ids == {"evaluate"}


def test_only_the_listed_stages_become_pods(tmp_path, monkeypatch, airflow_db):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    _use_config(tmp_path, monkeypatch, mode="kubernetes", stages=["evaluate"])
    dag = _dag("train_model")
    assert isinstance(dag.get_task("evaluate"), KubernetesPodOperator)
    assert not isinstance(dag.get_task("train"), KubernetesPodOperator)
    assert _types(_dag("batch_inference")) == {"score": "_PythonDecoratedOperator"}


def test_local_mode_keeps_the_in_process_tasks(tmp_path, monkeypatch, airflow_db):
    _use_config(tmp_path, monkeypatch)  # default execution: local
    assert _types(_dag("train_model")) == {
        "decide": "_ShortCircuitDecoratedOperator", "train": "_PythonDecoratedOperator",
        "evaluate": "_PythonDecoratedOperator", "route": "_BranchPythonDecoratedOperator",
        "approve_promotion": "PromotionApproval", "promote": "_PythonDecoratedOperator",
        "outcome": "_BranchPythonDecoratedOperator",
        "announce_champion": "_PythonDecoratedOperator", "challenger_rejected": "_PythonDecoratedOperator",
        "first_champion_scores_its_day": "_ShortCircuitDecoratedOperator",
        "score_first_champion_day": "TriggerDagRunOperator",
    }
    assert _types(_dag("batch_inference")) == {"score": "_PythonDecoratedOperator"}
    drift = _types(_dag("drift_monitor"))
    assert drift["evaluate"] == "_PythonDecoratedOperator" and "retrain_in_flight" not in drift


def test_batch_inference_pod_scores_the_runs_day(kubernetes_mode, monkeypatch):
    dag = _dag("batch_inference")
    run, states = _run_until_the_pod(dag, "score", monkeypatch, run_conf={"batch_date": "2026-01-05"})
    assert states["days"] == "success" and states["announce"] == "upstream_failed"
    args = _assert_pod_basics(_pod_from(dag, "score", _rendered(run, "score")), "infer",
                              {"cpu": "1", "memory": "4Gi"})
    assert args[1] == "--dates=2026-01-05"


def test_drift_pod_gets_the_windows_and_the_in_flight_flag(kubernetes_mode, monkeypatch):
    dag = _dag("drift_monitor")
    run, states = _run_until_the_pod(dag, "evaluate", monkeypatch, run_conf={"batch_date": "2026-01-07"})
    assert states["wait_for_window"] == "success" and states["retrain_in_flight"] == "success", states
    args = _assert_pod_basics(_pod_from(dag, "evaluate", _rendered(run, "evaluate")), "drift",
                              {"cpu": "1", "memory": "4Gi"})
    assert args[1:3] == ["--dates=2026-01-07", "--retrain-in-flight=False"]
    # and the CLI accepts exactly what was rendered
    from training.cli import build_parser

    ns = build_parser().parse_args(args)
    assert [d.isoformat() for d in ns.dates] == ["2026-01-07"] and ns.retrain_in_flight is False


def test_train_pod_gets_the_reason_evidence_data_version_and_run_id(kubernetes_mode, monkeypatch):
    from tests.synthetic import make_training_set, publish
    from training.cli import build_parser
    from training.paths import StatePaths

    dag = _dag("train_model")  # parsed with the services' settings: they go into the pods
    for key in FORWARDED:
        monkeypatch.delenv(key)  # the test's own data lives in the state dir
    paths = StatePaths(kubernetes_mode / "state").ensure()
    data_version = publish(paths, make_training_set(), "training_set")
    evidence = {"signal": "performance", "windows": ["2026-01-30"], "value": 0.21}
    run, states = _run_until_the_pod(dag, "train", monkeypatch,
                                     run_conf={"reason": "drift_monitor:performance", "evidence": evidence})
    assert states["decide"] == "success" and states["evaluate"] == "upstream_failed", states
    args = _assert_pod_basics(_pod_from(dag, "train", _rendered(run, "train")), "train",
                              {"cpu": "3", "memory": "6Gi"})
    ns = build_parser().parse_args(args)
    assert ns.reason == "drift_monitor:performance"
    assert ns.evidence == evidence
    assert ns.data_version == data_version
    assert ns.airflow_dag_id == "train_model" and ns.airflow_run_id == run.run_id
    assert json.loads(json.dumps(ns.evidence)) == evidence


def test_train_pod_runs_the_same_cli_with_the_dask_engine_its_config_selects(tmp_path, monkeypatch):
    """`training.engine: dask` asks nothing of the pod: it runs the same `python -m training train` as
    the CLI, and the config it is pointed at (forwarded CLOSEDLOOP_CONFIG) selects the Dask cluster."""
    from closedloop.pods import stage_pod

    from tests.synthetic import TEST_OVERRIDES
    from training.cli import build_parser

    scheduler = "tcp://dask-scheduler.closedloop:8786"
    cfg = with_overrides(
        load_config(), **{**TEST_OVERRIDES, "execution": {"mode": "kubernetes", "image": IMAGE}},
    )
    cfg = with_overrides(cfg, training={"engine": "dask", "dask_scheduler": scheduler, "candidates": ["xgboost"]},
                         gates={"recovery": {"baseline_family": "xgboost"}})
    cfg_file = tmp_path / "closedloop.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    monkeypatch.setenv("CLOSEDLOOP_CONFIG", str(cfg_file))

    pod = stage_pod(cfg.execution, "train", "train", ["--reason", "drift"]).build_pod_request_obj(dry_run=True)
    container = pod.spec.containers[0]
    assert [*container.command, *container.args] == [
        "python", "-m", "training", "train", "--reason", "drift", "--xcom-json", "/airflow/xcom/return.json"]
    assert build_parser().parse_args(container.args).command == "train"
    env = {e.name: e.value for e in container.env}
    training = load_config(env["CLOSEDLOOP_CONFIG"]).training
    assert (training.engine, training.dask_scheduler) == ("dask", scheduler)
