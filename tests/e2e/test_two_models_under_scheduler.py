"""Both examples in one deployment under the real Airflow scheduler (`make up MODELS=config/models`,
shortened), card fraud's whole loop closing beside loans' first one, with OpenLineage on.

One embedded stack (api-server, scheduler, dag-processor, triggerer) runs a folder of two model
configs, card fraud (the simulator source, the demo's story: fraud moves to a new mechanism on day 8)
and loans (the file-drop source, other ids, both-class outcomes, decline / approve): every DAG file
builds its DAG once per model (`<model>__data_pipeline`, ...). The test is only the source systems'
clock: it delivers days to each model's `<model>__data_pipeline` through the REST API; Assets and the
drift monitor do the rest. Card fraud gets days until its loop closes (the drift monitor - not the
test - triggered a retrain whose challenger was promoted, `make demo --until closed`), loans a fixed
number. For each model it asserts: its days published, its own `<model>__train_model` promoted a
first champion (audit log + registry alias), its own `<model>__batch_inference` scored with it, its
warehouse holds only its own tables, and the model-health API of the real api-server reports it.
Loans in its own words: a champion above its floors that declines and approves, predictions that
name published applications, and the delivered outcome as its target.

OpenLineage runs as `CLOSEDLOOP_LINEAGE=file` sets it up (the real provider under the real
scheduler, dbt in the stack's watcher mode): the events read back as one graph must connect card
fraud's raw batch through its warehouse, the dbt marts, a DVC data version, an MLflow model version
and the predictions to that day's monitoring decision, and never reach a loans node.

Card fraud runs the demo's windows (5 training days, labels mature after 2); loans short windows
(3 training days, outcomes mature after 4), so its first champion comes after 9 days.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.airflow_api import get_json, get_token, trigger_via_rest
from devstack.demo import (
    BURST_AIRFLOW_ENV,
    Progress,
    demo_config_file,
    finished_tasks,
    pipeline_idle,
    run_counts,
    waiting_for,
)
from devstack.environment import Ports, free_port
from devstack.services import RUNTIME_SERVICES
from devstack.supervisor import Stack, start_stack
from tests.synthetic import LOOP_SOURCE_OVERRIDES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

#: At most this many days per model: card fraud until its loop closes (it closes around day 15), loans
#: enough for a first champion and a day scored by it (3 + 1 + 1 matured days after 4 maturity days).
DAYS = {"card_fraud": 20, "loans": 9}
#: The loans example's windows, shortened like the demo's (config/models/loans.yaml keeps the real ones).
LOANS_OVERRIDES = {
    "windows": {"training_days": 3, "validation_days": 1, "holdout_days": 1},
    "training": {"min_training_days": 2, "search_budget": 1},
    "gates": {"non_regression": {"n_bootstrap": 100}},
    "approval": {"mode": "never"},  # nobody answers here (the demo's choice too); approvals: test_approval_under_scheduler
}
DAG_NAMES = ("data_pipeline", "train_model", "batch_inference", "drift_monitor", "rollback_champion")
#: No Airflow task finished for this long: the loop is stuck, not slow (the test says what it waits for).
STALL_S = 15 * 60
#: Everything delivered and no run queued or running for this long: the Assets have nothing left to trigger.
QUIET_S = 20


def _example_configs(tmp_path: Path, models: Path, state: Path) -> dict[str, dict[str, Any]]:
    """Card fraud as the demo runs it and loans with short windows, each schedule ending at its last day."""
    from examples.loans import generate
    from training.config import DEFAULT_CONFIG_PATH, _deep_merge, parse_config
    from training.paths import StatePaths

    scratch = tmp_path / "configs"
    scratch.mkdir()
    overrides = scratch / "small.yaml"
    overrides.write_text(LOOP_SOURCE_OVERRIDES)
    merged, _ = demo_config_file(StatePaths(scratch), DAYS["card_fraud"], overrides)
    fraud = yaml.safe_load(merged.read_text())

    loans_file = DEFAULT_CONFIG_PATH.parent / "models" / "loans.yaml"
    loans = _deep_merge(yaml.safe_load(loans_file.read_text()), LOANS_OVERRIDES)
    start = dt.date.fromisoformat(str(loans["contract"]["start_date"]))
    # the schedule stops at the last delivered day: unpausing never creates a run for "today"
    loans["schedules"]["data_pipeline_end_date"] = (start + dt.timedelta(days=DAYS["loans"])).isoformat()
    parse_config(loans, str(loans_file))
    # the source system's side: the drops the loans config's contract.source.url points at
    generate.generate(state / "drops" / "loans", start, DAYS["loans"], rows_per_day=3000, seed=1)
    for name, data in (("card_fraud", fraud), ("loans", loans)):
        (models / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return {"card_fraud": fraud, "loans": loans}


def test_both_examples_close_their_first_loop_in_one_deployment(tmp_path, monkeypatch):
    t0 = time.monotonic()
    for key in list(os.environ):
        if key.startswith(("CLOSEDLOOP_", "AIRFLOW", "MLFLOW_")):
            monkeypatch.delenv(key)
    state, models = tmp_path / "state", tmp_path / "models"
    models.mkdir()
    configs = _example_configs(tmp_path, models, state)
    monkeypatch.setenv("CLOSEDLOOP_HOME", str(state))
    monkeypatch.setenv("CLOSEDLOOP_MODELS_DIR", str(models))
    monkeypatch.setenv("CLOSEDLOOP_LINEAGE", "file")  # README "OpenLineage": <state>/openlineage/events.jsonl
    from training.config import load_config, model_config_path
    from training.deployment import dag_id
    from training.monitoring.loop_history import loop_verdict
    from training.paths import StatePaths

    names = sorted(configs)
    cfgs = {m: load_config(model_config_path(m)) for m in names}
    paths = StatePaths.from_env()
    ports = dataclasses.replace(Ports.free(), airflow=free_port())
    stack = start_stack(paths, ports, services=RUNTIME_SERVICES["embedded"], extra_env={
        "CLOSEDLOOP_MODELS_DIR": str(models),
        # the schedules end at the last delivered day: unpaused DAGs create no run of their own
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        **BURST_AIRFLOW_ENV,  # a burst of short runs, as the demo
    })
    try:
        stack.wait_healthy(timeout_s=300)
        stack.wait_for_dags([dag_id(m, d) for m in names for d in DAG_NAMES], timeout_s=300)
        setup_s = time.monotonic() - t0
        closed = {"card_fraud": lambda: loop_verdict(StatePaths.for_model("card_fraud"), cfgs["card_fraud"]).closed}
        delivered = _deliver_days(stack, {m: cfgs[m].start_date for m in names}, closed)
        loop_s = time.monotonic() - t0 - setup_s
        health = _model_health(stack, names)
        counts = run_counts(stack)
    finally:
        stack.stop()
    print(f"two models, {delivered} days: setup {setup_s:.0f}s, loop {loop_s:.0f}s, total {time.monotonic() - t0:.0f}s")
    print({d: c for d, c in sorted(counts.items())})

    for m in names:
        for name in ("data_pipeline", "train_model", "batch_inference", "drift_monitor"):
            runs = counts.get(dag_id(m, name), {})
            assert runs.get("success", 0) >= 1 and not runs.get("failed"), (dag_id(m, name), runs)
        assert counts[dag_id(m, "data_pipeline")]["success"] == delivered[m]
        _check_model(stack, m, cfgs[m], StatePaths.for_model(m), health[m], delivered[m],
                     others=[cfgs[o] for o in names if o != m])
    assert len({StatePaths.for_model(m).warehouse for m in names}) == len(names)
    _check_loans_decisions(StatePaths.for_model("loans"), cfgs["loans"])
    fraud = StatePaths.for_model("card_fraud")
    verdict = loop_verdict(fraud, cfgs["card_fraud"])
    assert verdict.closed, f"card fraud's loop did not close in {delivered['card_fraud']} days: {verdict.why}"
    _check_lineage_graph(paths, "card_fraud", fraud, cfgs["card_fraud"], others=[StatePaths.for_model("loans")])


def _deliver_days(stack: Stack, first_days: dict[str, dt.date],
                  done: dict[str, Callable[[], bool]]) -> dict[str, int]:
    """Each model's next day as soon as its previous day's pipeline run is over, until every day ran (or
    the model's `done()` says so before its next day) and the Assets have nothing left to trigger; fails
    naming what it waits for if the loop stops moving. Returns the days delivered per model."""
    from training.deployment import dag_id

    delivered = dict.fromkeys(first_days, 0)
    budget = dict(DAYS)
    progress = Progress(STALL_S)
    quiet_since: float | None = None
    last_line, t0 = "", time.monotonic()
    while True:
        now = time.monotonic()
        for m, first in first_days.items():
            pipeline = dag_id(m, "data_pipeline")
            if delivered[m] < budget[m] and pipeline_idle(stack, pipeline):
                if m in done and delivered[m] > 0 and done[m]():
                    budget[m] = delivered[m]
                    print(f"[{now - t0:5.0f}s] {m}: done after {delivered[m]} days", flush=True)
                    continue
                day = first + dt.timedelta(days=delivered[m])
                trigger_via_rest(stack.url, stack.user, stack.password, pipeline, {"batch_date": day.isoformat()},
                                 run_id=f"day__{day.isoformat()}", logical_date=f"{day + dt.timedelta(days=1)}T00:00:00Z")
                delivered[m] += 1
        counts = run_counts(stack)
        line = " | ".join(f"{d}: {c}" for d, c in sorted(counts.items()))
        if line != last_line:
            print(f"[{now - t0:5.0f}s] delivered {delivered} | {line}", flush=True)
            last_line = line
        progress.update(finished_tasks(stack), now)
        active = sum(c.get("running", 0) + c.get("queued", 0) for c in counts.values())
        if all(n == budget[m] for m, n in delivered.items()) and active == 0:
            quiet_since = quiet_since or now
            if now - quiet_since >= QUIET_S:
                return delivered
        else:
            quiet_since = None
        if progress.stalled(now):
            pytest.fail(f"no Airflow task finished for {STALL_S / 60:.0f} min; delivered {delivered}; waiting for "
                        f"{waiting_for(stack) or 'nothing queued or running'}; logs in {stack.log_dir}")
        time.sleep(2)


def _model_health(stack: Stack, names: list[str]) -> dict[str, dict[str, Any]]:
    """`/model-health/api/status?model=<m>` of the real api-server, with a token (the page needs a login)."""
    token = get_token(stack.url, stack.user, stack.password)
    return {m: get_json(f"{stack.url}/model-health/api/status?model={m}", token) for m in names}


def _check_model(stack: Stack, model: str, cfg: Any, paths: Any, health: dict[str, Any], days_delivered: int,
                 others: list[Any]) -> None:
    import duckdb

    from training.deployment import dag_id
    from training.model import registry

    name = cfg.model.name
    # its own train_model run promoted the first champion (audited), and the registry alias says so
    audit = registry.audit_log(paths, name)
    first = [a for a in audit if a["action"] == "first_promote"]
    assert len(first) == 1, audit
    champion = registry.model_status(paths, cfg)["champion"]
    moved = [a for a in audit if a["action"] in ("first_promote", "promote", "rollback")]  # newest first
    assert champion is not None and champion["version"] == moved[0]["to_version"], (champion, audit)
    train_runs = stack_runs(stack, dag_id(model, "train_model"))
    assert train_runs.get(first[0]["airflow_run_id"]) == "success", (first[0], train_runs)
    # the model-health API of the running api-server reports it, for this model
    assert health["model_name"] == name and health["status"]["data"]["champion"]["version"] == champion["version"]
    assert sorted(health["models"]) == sorted([name, *[o.model.name for o in others]])

    published = cfg.contract.marts.published
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        tables = {f"{s}.{t}" for s, t in con.execute("select table_schema, table_name from information_schema.tables").fetchall()}
        days = con.execute(f"select count(distinct batch_date) from {published}").fetchone()[0]
        scored = con.execute(
            "select model_name, model_version, count(distinct batch_date) from published.predictions "
            "where alias = 'champion' group by 1, 2").fetchall()
    assert days == days_delivered, (model, days)
    # batch_inference scored days with the first champion, under this model's name only
    assert (name, first[0]["to_version"]) in {(n, v) for n, v, _ in scored}, scored
    assert {n for n, _, _ in scored} == {name}, scored
    # each model's warehouse holds only its own tables
    assert published in tables and cfg.contract.events.raw_table in tables, tables
    for other in others:
        mine = {published, cfg.contract.events.raw_table}
        foreign = {other.contract.marts.published, other.contract.events.raw_table} - mine
        assert not foreign & tables, (model, foreign & tables)


def _check_loans_decisions(paths: Any, cfg: Any) -> None:
    """Loans is not card fraud in its own words: its champion scores above its floors, declines and
    approves, every prediction names a published application, and its target is the delivered outcome."""
    import duckdb

    from training.model import registry

    champion = registry.model_status(paths, cfg)["champion"]
    floors = cfg.gates.floors
    assert champion["holdout_metrics"]["pr_auc"] >= floors["pr_auc"], champion  # chance: the default rate, ~0.07
    assert champion["holdout_metrics"]["roc_auc"] >= floors["roc_auc"], champion
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        predictions = con.execute(
            "select p.decision, p.score, p.threshold, f.application_id from published.predictions p "
            "left join published.application_features f on f.application_id = p.entity_id "
            "and f.batch_date = p.batch_date where p.alias = 'champion'").df()
        pairs = set(con.execute(f"select distinct {cfg.model.target}, outcome from {cfg.contract.marts.training_set}").fetchall())
    assert predictions["application_id"].notna().all(), "every prediction names a published application"
    assert set(predictions["decision"]) == {"decline", "approve"}, predictions["decision"].value_counts()
    assert ((predictions["decision"] == "decline") == (predictions["score"] >= predictions["threshold"])).all()
    assert {(int(t), o) for t, o in pairs} == {(1, "defaulted"), (0, "repaid")}, pairs


def stack_runs(stack: Stack, dag: str) -> dict[str, str]:
    """run_id -> state of one DAG's runs, from the metadata DB."""
    con = stack.metadata_connection()
    try:
        rows = con.execute("select run_id, state from dag_run where dag_id = ?", (dag,)).fetchall()
    finally:
        con.close()
    return dict(rows)


def _check_lineage_graph(deployment: Any, model: str, paths: Any, cfg: Any, others: list[Any]) -> None:
    """The provider's events, read back as jobs and datasets, connect one of `model`'s raw batches to that
    day's monitoring decision through every hop of the loop, and never reach another model's nodes."""
    import json

    events_file = deployment.root / "openlineage" / "events.jsonl"
    assert events_file.is_file(), f"no OpenLineage events were written to {events_file}"
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    nodes: set[str] = set()
    edges: set[tuple[str, str]] = set()
    for event in events:  # dataset -> job -> dataset, from COMPLETE events
        if event.get("eventType") != "COMPLETE":
            continue
        job = f"job:{event['job']['namespace']}/{event['job']['name']}"
        nodes.add(job)
        for ds in event.get("inputs", []):
            nodes.add(f"ds:{ds['namespace']}/{ds['name']}")
            edges.add((f"ds:{ds['namespace']}/{ds['name']}", job))
        for ds in event.get("outputs", []):
            nodes.add(f"ds:{ds['namespace']}/{ds['name']}")
            edges.add((job, f"ds:{ds['namespace']}/{ds['name']}"))
    print(f"OpenLineage graph: {len(events)} events, {len(nodes)} nodes "
          f"({sum(n.startswith('job:') for n in nodes)} jobs), {len(edges)} edges")

    name = cfg.model.name
    decisions = sorted(n for n in nodes if n.startswith("ds:closedloop://") and f"/{name}/monitoring_decisions/" in n)
    assert decisions, sorted(nodes)
    day = decisions[-1].rsplit("/", 1)[-1]  # the last monitored window's end: that day's own raw batch
    land_job = f"/{model}__data_pipeline.land"
    raw_batches = [b for a, b in edges if a.endswith(land_job) and b.startswith("ds:file/") and day in b]
    assert raw_batches, (day, sorted(b for a, b in edges if a.endswith(land_job)))
    downstream = _reachable(raw_batches[0], edges)
    warehouse = f"ds:duckdb://{paths.warehouse}/"
    hops = {
        "warehouse raw table": lambda n: n.startswith(warehouse) and ".raw." in n,
        "dbt mart": lambda n: n.startswith(warehouse) and ".ml." in n,
        "dbt job (cosmos)": lambda n: n.startswith("job:") and ".dbt" in n,
        "DVC data version": lambda n: n.startswith("ds:dvc://") and f"/{name}/" in n,
        "MLflow model version": lambda n: n.startswith("ds:mlflow://") and f"/{name}/" in n,
        "predictions": lambda n: n.startswith(warehouse) and n.endswith(".published.predictions"),
        f"the {day} monitoring decision": lambda n: n == decisions[-1],
    }
    missing = [hop for hop, is_hop in hops.items() if not any(is_hop(n) for n in downstream)]
    assert not missing, (missing, raw_batches[0], sorted(downstream))
    foreign = [n for n in downstream for other in others if str(other.root) in n or str(other.warehouse) in n]
    assert not foreign, foreign  # several models never share a node


def _reachable(start: str, edges: set[tuple[str, str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        here = todo.pop()
        for a, b in edges:
            if a == here and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen
