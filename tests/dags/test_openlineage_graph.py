"""OpenLineage from `dag.test()` runs with the real provider, a file transport and cosmos's dbt events.

One day goes through the loop: data_pipeline lands, gates, loads and dbt-builds it and publishes a
DVC data version; train_model trains on exactly that version and promotes the first champion;
batch_inference scores the day; drift_monitor decides its window. The events the provider wrote
are read back as a graph of jobs and datasets, which must connect the day's raw batch (its landed
events file) to the monitor's decision record.

The raw tables are first given earlier days by the domain code (`land` + `load_raw`, no DAG, no
dbt), so the day's dbt build yields a training-set version with enough matured days to train on.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
import yaml

from tests.synthetic import TEST_OVERRIDES
from training.config import load_config, with_overrides
from training.paths import StatePaths

pytestmark = pytest.mark.timeout(1800)  # ~10 min under load, history setup included
DAGS = Path(__file__).parents[2] / "dags"
DAY = dt.date(2026, 2, 2)
#: raw days loaded before DAY, so DAY's training-set version has enough matured days to train on
HISTORY_DAYS = 22
NAMESPACE = "closedloop-lineage-test"
OL_ENV = {
    "AIRFLOW__OPENLINEAGE__NAMESPACE": NAMESPACE,
    "AIRFLOW__OPENLINEAGE__EXTRACTORS": "closedloop.lineage.ClosedloopTaskExtractor",
}


def _dag(name: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / f"{name}.py"), safe_mode=True)
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(name)


def _ensure_listener() -> None:
    """The provider's plugin registers its listener when Airflow loads plugins; if this test session
    loaded them before the transport was configured (the plugin then registers nothing), register the
    same listener the same way the plugin would."""
    from airflow.listeners.listener import get_listener_manager
    from airflow.providers.openlineage.plugins.listener import OpenLineageListener, get_openlineage_listener

    manager = get_listener_manager()
    if not any(isinstance(p, OpenLineageListener) for p in manager.pm.get_plugins()):
        manager.add_listener(get_openlineage_listener())


@pytest.fixture(scope="module")
def lineage_run(tmp_path_factory, airflow_db, dbt_manifest):
    root = tmp_path_factory.mktemp("lineage")
    events_file = root / "openlineage.jsonl"
    cfg = with_overrides(load_config(), **TEST_OVERRIDES, admission={"day_order": "allow_gaps"},
                         simulator={"transactions_per_day": 1500, "n_customers": 400, "n_merchants": 80})
    cfg_file = root / "closedloop.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = OL_ENV | {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}),
        "CLOSEDLOOP_HOME": str(root / "state"),
        "CLOSEDLOOP_CONFIG": str(cfg_file),
    }
    saved = {k: os.environ.get(k) for k in [*env, "MLFLOW_TRACKING_URI"]}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.update(env)
    paths = StatePaths(root / "state").ensure()
    from training.data.ingest import land, load_raw

    for n in range(HISTORY_DAYS, 0, -1):  # the history, landed and loaded by the domain code (no DAG)
        load_raw(paths, land(paths, cfg, DAY - dt.timedelta(days=n)), contract=cfg.contract)
    _ensure_listener()
    runs = {}
    try:
        runs["data_pipeline"] = _dag("data_pipeline").test(
            logical_date=dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC))
        from training.storage import versioning

        version = versioning.latest_data_version(paths).data_version
        runs["train_model"] = _dag("train_model").test(run_conf={"reason": "manual", "data_version": version})
        runs["batch_inference"] = _dag("batch_inference").test(run_conf={"batch_date": DAY.isoformat()})
        runs["drift_monitor"] = _dag("drift_monitor").test(run_conf={"batch_date": DAY.isoformat()})
        yield paths, cfg, runs, events_file, version
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _events(events_file: Path) -> list[dict]:
    assert events_file.is_file(), f"no OpenLineage events were written to {events_file}"
    return [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]


def _graph(events: list[dict]) -> tuple[set[str], set[tuple[str, str]]]:
    """Jobs and datasets as nodes, read/write as edges (dataset -> job -> dataset), from COMPLETE events."""
    nodes: set[str] = set()
    edges: set[tuple[str, str]] = set()
    for event in events:
        if event.get("eventType") != "COMPLETE":
            continue
        job = f"job:{event['job']['namespace']}/{event['job']['name']}"
        nodes.add(job)
        for ds in event.get("inputs", []):
            node = f"ds:{ds['namespace']}/{ds['name']}"
            nodes.add(node)
            edges.add((node, job))
        for ds in event.get("outputs", []):
            node = f"ds:{ds['namespace']}/{ds['name']}"
            nodes.add(node)
            edges.add((job, node))
    return nodes, edges


def _reachable(start: str, edges: set[tuple[str, str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        here = todo.pop()
        for a, b in edges:
            if a == here and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


def test_the_dags_ran(lineage_run):
    _, _, runs, _, _ = lineage_run
    for name, run in runs.items():
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert run.state == "success", (name, states)


def test_one_graph_connects_the_raw_batch_to_the_monitoring_decision(lineage_run):
    from closedloop import lineage

    paths, cfg, runs, events_file, version = lineage_run
    events = _events(events_file)
    nodes, edges = _graph(events)
    print(f"OpenLineage graph: {len(events)} events, {len(nodes)} nodes "
          f"({sum(n.startswith('job:') for n in nodes)} jobs), {len(edges)} edges")

    landed = runs["data_pipeline"].get_task_instance("land").xcom_pull(task_ids="land")
    raw_batch = f"ds:file/{landed['events']['path']}"
    decision = lineage.monitoring_decision(cfg, DAY.isoformat())
    decision_node = f"ds:{decision.namespace}/{decision.name}"
    assert raw_batch in nodes and decision_node in nodes, sorted(nodes)
    downstream = _reachable(raw_batch, edges)
    # every hop of the loop lies on a path from the raw batch
    dvc = lineage.data_version(cfg, version)
    raw_table = lineage.warehouse_table(paths, cfg.contract.feeds["transactions"].raw_table)
    mart = lineage.warehouse_table(paths, cfg.contract.marts.training_set)
    predictions = lineage.warehouse_table(paths, "published.predictions")
    for ds in (raw_table, mart, dvc, predictions):
        assert f"ds:{ds.namespace}/{ds.name}" in downstream, (ds, sorted(downstream))
    assert any(n.startswith(f"ds:mlflow://{NAMESPACE}/{cfg.model.name}/") for n in downstream)
    assert decision_node in downstream
    # dbt's own events (cosmos) carry the mart: the warehouse names agree with ours
    dbt_jobs = {b for a, b in edges if a == f"ds:{mart.namespace}/{mart.name}"} | {
        a for a, b in edges if b == f"ds:{mart.namespace}/{mart.name}"}
    assert any(".dbt." in j for j in dbt_jobs), dbt_jobs
