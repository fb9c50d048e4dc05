"""Faults, each with real processes against real MLflow (SQLite store) and the real ledger:

a. the train worker SIGKILLed mid-run, then the same request retried;
b. MLflow (or the ledger) failing in the middle of a promotion, then the promotion re-run;
c. `train` + `evaluate` of two DAG runs at once;
d. `rollback` twice at once (the same request twice, and two requests);
e. `train` of the same request twice at once (a retried task beside its zombie).

After each: exactly one `@champion`, the audit log replays to the alias (`champion_stack[-1]`),
no action is recorded twice, and every registered version carries its lineage.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from training.model import registry, tracking
from training.model.evaluate import evaluate_challenger
from training.model.train import TrainRequest, train_model
from training.paths import StatePaths

ROOT = Path(__file__).resolve().parents[2]

#: A worker that imports everything first, then waits for a "go" file and runs one CLI stage:
#: processes started together then hit the registry within milliseconds of each other.
WORKER = """
import os, sys, time
import mlflow, sklearn, xgboost  # noqa: F401 - the slow imports, before the barrier
from training import cli
from training.model import evaluate, registry, train
go = sys.argv[1]
open(f"{go}.{os.getpid()}.ready", "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def world(module_state: StatePaths, train_cfg, training_frame, synth, tmp_path_factory):
    """A state dir with two published data versions (a weak and a full one) and a config file."""
    cut = synth.holdout_start(training_frame, train_cfg)
    weak = synth.publish(
        module_state, synth.permute(training_frame, ["is_new_device", "is_new_country"], cut), "w"
    )
    full = synth.publish(module_state, training_frame, "full")
    # Create MLflow's schema once, as a deployment does: two processes creating it at the same
    # moment race in MLflow's own migrations (not what these tests are about).
    tracking.ensure_experiment(module_state, train_cfg)
    cfg_file = tmp_path_factory.mktemp("cfg") / "closedloop.yaml"
    cfg_file.write_text(yaml.safe_dump(train_cfg.model_dump(mode="json")))
    worker = cfg_file.parent / "worker.py"
    worker.write_text(WORKER)
    return {"paths": module_state, "cfg": train_cfg, "weak": weak, "full": full, "cfg_file": cfg_file,
            "worker": worker}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CLOSEDLOOP_OPS_DB_URL"}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.pop("PYTEST_CURRENT_TEST", None)  # MLflow turns on test-only checks when it sees this
    return env


def _cli_args(world, *stage: str) -> list[str]:
    return ["--config", str(world["cfg_file"]), "--home", str(world["paths"].root), *stage]


def _cli(world, *stage: str) -> subprocess.CompletedProcess:
    """One `python -m training <stage>` process, as a pod or a local task runs it."""
    return subprocess.run(
        [sys.executable, "-m", "training", *_cli_args(world, *stage)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=_env(),
    )


def _together(world, tmp_path: Path, *stages: list[str]) -> list[subprocess.CompletedProcess]:
    """Start one worker per stage, release them at the same instant, wait for all."""
    go = tmp_path / f"go-{time.monotonic_ns()}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(world["worker"]), str(go), *_cli_args(world, *stage)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_env(),
        )
        for stage in stages
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob(f"{go.name}.*.ready"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # all imported: release them together
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def _json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _audit(world) -> list[dict]:
    """Oldest-first audit rows of the model."""
    return list(reversed(registry.audit_log(world["paths"], world["cfg"].model.name, limit=10_000)))


def _champion(world) -> str | None:
    return registry.current_champion(world["paths"], world["cfg"])


def assert_consistent(world) -> list[dict]:
    """The invariants every fault must leave intact; returns the audit rows (oldest first)."""
    paths, name = world["paths"], world["cfg"].model.name
    rows = _audit(world)
    mc = tracking.client(paths)
    versions = mc.search_model_versions(f"name = '{name}'")
    holders = [str(mv.version) for mv in versions if tracking.CHAMPION in (mv.aliases or [])]
    assert len(holders) <= 1, f"@champion on several versions: {holders}"
    assert registry.champion_stack(paths, name)[-1] == _champion(world), "audit log does not replay to the alias"
    keys = [r["idempotency_key"] for r in rows]
    assert len(keys) == len(set(keys))
    # Each move starts from the champion the previous move left: no two moves from the same state.
    moves = [r for r in rows if r["action"] in (*registry.PROMOTING, "rollback")]
    for before, after in zip(moves, moves[1:], strict=False):
        assert after["from_version"] == before["to_version"], (before, after)
    for mv in versions:
        missing = [t for t in tracking.LINEAGE_TAGS if not mv.tags.get(t)]
        assert not missing, f"version {mv.version} lacks lineage {missing}"
        assert mc.get_run(mv.run_id).info.status == "FINISHED"
    return rows


# --- a. the worker killed mid-train ----------------------------------------------------------


def test_a_worker_sigkilled_mid_train_then_retried(world):
    paths, cfg = world["paths"], world["cfg"]
    name = cfg.model.name
    train = ["train", "--data-version", world["weak"], "--reason", "first",
             "--airflow-dag-id", "train_model", "--airflow-run-id", "manual__killed"]
    key = "train_model/manual__killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "training", *_cli_args(world, *train)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_env(),
    )
    mc = tracking.client(paths)
    killed_run = None
    deadline = time.monotonic() + 300
    try:
        while killed_run is None and proc.poll() is None and time.monotonic() < deadline:
            exp = mc.get_experiment_by_name(tracking.experiment_name(cfg))
            if exp is not None:
                running = mc.search_runs(
                    [exp.experiment_id],
                    filter_string=f"tags.idempotency_key = '{key}' and attributes.status = 'RUNNING'",
                )
                if running:
                    killed_run = running[0].info.run_id
                    break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)  # the marker (its MLflow run is open) was seen: kill it mid-run
        proc.wait(timeout=30)
    assert killed_run is not None, f"never saw the training run open (rc={proc.returncode}): {proc.stderr.read()}"
    assert proc.returncode == -signal.SIGKILL
    assert mc.get_run(killed_run).info.status == "RUNNING"  # a dead worker never ends its run
    assert not tracking.versions_with_tag(mc, name, tracking.IDEMPOTENCY_TAG, key)

    # The task is retried: the same request (same Airflow run id), then evaluate, then a retry of that.
    retried = _json(_cli(world, *train))
    assert retried["reused"] is False
    decided = _json(_cli(world, "evaluate", "--version", retried["version"],
                         "--airflow-run-id", "manual__killed"))
    assert decided["action"] == "first_promote", decided
    # ... and retried once more after success (in-process: the same library calls, faster)
    again = train_model(paths, cfg, TrainRequest(reason="first", data_version=world["weak"],
                                                 airflow_dag_id="train_model", airflow_run_id="manual__killed"))
    assert again.reused and again.version == retried["version"]
    assert evaluate_challenger(paths, cfg, version=again.version).reused

    versions = tracking.versions_with_tag(mc, name, tracking.IDEMPOTENCY_TAG, key)
    assert [str(mv.version) for mv in versions] == [retried["version"]], "the retry registered a second version"
    assert versions[0].run_id != killed_run
    killed = mc.get_run(killed_run)
    assert killed.info.status == "KILLED" and "registered_version" not in killed.data.tags
    assert _champion(world) == retried["version"]
    rows = assert_consistent(world)
    assert [(r["action"], r["to_version"], r["idempotency_key"]) for r in rows] == [
        ("first_promote", retried["version"], f"{key}#decision")
    ]


# --- b. MLflow unavailable in the middle of a promotion -----------------------------------------

FAULTS = {
    # MLflow's store refuses the first write of the promotion (a version tag) ...
    "mlflow_tags": ("mlflow", "model_version_tags"),
    # ... or the alias move itself, the promotion's last MLflow call ...
    "mlflow_alias": ("mlflow", "registered_model_aliases"),
    # ... or the ledger refuses the audit row (old order: the alias had moved already).
    "ledger_audit": ("ledger", "registry_audit"),
}


def _db(world, which: str) -> Path:
    paths = world["paths"]
    return paths.mlflow_db if which == "mlflow" else paths.root / "ops.db"


def _break(world, fault: str) -> None:
    """Make a store refuse writes to one table (a real SQLite error, raised inside the store)."""
    which, table = FAULTS[fault]
    with sqlite3.connect(_db(world, which)) as con:
        for op in ("INSERT", "UPDATE"):
            con.execute(
                f"CREATE TRIGGER fault_{op.lower()}_{table} BEFORE {op} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'injected fault: {which} unavailable'); END"
            )


def _repair(world, fault: str) -> None:
    which, table = FAULTS[fault]
    with sqlite3.connect(_db(world, which)) as con:
        for op in ("insert", "update"):
            con.execute(f"DROP TRIGGER fault_{op}_{table}")


def test_b_mlflow_unavailable_during_promotion_leaves_no_half_moved_alias(world):
    paths, cfg = world["paths"], world["cfg"]
    champion = _champion(world)
    assert champion is not None
    trained = train_model(paths, cfg, TrainRequest(reason="drift", data_version=world["full"],
                                                   airflow_dag_id="train_model", airflow_run_id="b"))
    dry = evaluate_challenger(paths, cfg, version=trained.version, act=False)
    assert dry.promote, dry.failed_gates
    promote = ["promote", "--version", trained.version, "--idempotency-key", "promote-b"]
    audit_before = _audit(world)
    for fault in FAULTS:
        _break(world, fault)
        try:
            failed = _cli(world, *promote)
        finally:
            _repair(world, fault)
        assert failed.returncode != 0, f"{fault}: the promotion did not fail"
        assert "injected fault" in failed.stderr, failed.stderr[-2000:]
        assert _champion(world) == champion, f"{fault}: the alias moved although the promotion failed"
        assert _audit(world) == audit_before, f"{fault}: an audit row was written for a failed promotion"
        assert_consistent(world)

    # The same task retried with MLflow back: it converges, once.
    done = _json(_cli(world, *promote))
    assert (done["action"], done["from_version"], done["to_version"]) == ("promote", champion, trained.version)
    assert _json(_cli(world, *promote))["id"] == done["id"]
    rows = assert_consistent(world)
    assert [r["idempotency_key"] for r in rows].count("promote-b") == 1
    assert _champion(world) == trained.version


def test_b_a_promotion_that_moved_the_alias_but_lost_its_audit_row_is_repaired_by_its_rerun(world):
    """The one window the ordering cannot close: alias moved, then the ledger commit failed. The
    state it leaves (tags written, alias moved, no audit row) is rebuilt here by hand; the re-run
    of the same promotion must record it once, with the right previous champion."""
    paths, cfg = world["paths"], world["cfg"]
    name = cfg.model.name
    champion = _champion(world)
    trained = train_model(paths, cfg, TrainRequest(reason="repair", data_version=world["full"], seed=7,
                                                   airflow_dag_id="train_model", airflow_run_id="b2"))
    mc = tracking.client(paths)
    mc.set_model_version_tag(name, trained.version, registry.GATE_DECISION_TAG, "promote")
    mc.set_model_version_tag(name, trained.version, "previous_champion", champion)
    mc.set_registered_model_alias(name, tracking.CHAMPION, trained.version)
    with pytest.raises(AssertionError, match="replay"):
        assert_consistent(world)
    done = _json(_cli(world, "promote", "--version", trained.version, "--idempotency-key", "promote-b2"))
    assert (done["action"], done["from_version"], done["to_version"]) == ("promote", champion, trained.version)
    assert_consistent(world)


# --- c. train_model triggered twice at once ------------------------------------------------------


def test_c_two_train_runs_at_once_leave_one_consistent_champion(world, tmp_path):
    paths, cfg = world["paths"], world["cfg"]
    weak_champion = train_model(paths, cfg, TrainRequest(reason="c-base", data_version=world["weak"], seed=3))
    registry.force_promote(paths, cfg, weak_champion.version, "fault drill c: a weak champion to beat")
    before = len(_audit(world))
    runs = ["scheduled__c1", "scheduled__c2"]
    trained = [
        _json(p)
        for p in _together(world, tmp_path, *[
            ["train", "--data-version", world["full"], "--reason", "features", "--seed", str(11 + i),
             "--airflow-dag-id", "train_model", "--airflow-run-id", run]
            for i, run in enumerate(runs)
        ])
    ]
    assert len({t["version"] for t in trained}) == 2
    evaluate = [["evaluate", "--version", t["version"], "--airflow-run-id", run] for t, run in zip(trained, runs, strict=True)]
    decided = []
    for stage, proc in zip(evaluate, _together(world, tmp_path, *evaluate), strict=True):
        if proc.returncode != 0:
            # Gated against the champion the other run has just replaced: the task fails, its
            # retry gates against the new champion.
            assert "ChampionMoved" in proc.stderr, proc.stderr[-3000:]
            assert_consistent(world)
            proc = _cli(world, *stage)
        decided.append(_json(proc))
    rows = assert_consistent(world)
    new = rows[before:]
    assert len(new) == 2, new  # one decision per run, none doubled
    assert {r["idempotency_key"] for r in new} == {f"train_model/{run}#decision" for run in runs}
    promoted = [r for r in new if r["action"] in registry.PROMOTING]
    assert promoted, [d["failed_gates"] for d in decided]
    assert _champion(world) == promoted[-1]["to_version"]


# --- d. rollback_champion twice at once ----------------------------------------------------------


def _deepen(world) -> list[str]:
    """Force-promote alternately so the champion stack is deep enough for two rollbacks."""
    paths, cfg = world["paths"], world["cfg"]
    mc = tracking.client(paths)
    versions = sorted(
        (str(mv.version) for mv in mc.search_model_versions(f"name = '{cfg.model.name}'")), key=int
    )
    for v in (versions[0], versions[1], versions[0]):
        if _champion(world) != v:
            registry.force_promote(paths, cfg, v, "fault drill d: build a champion history")
    return registry.champion_stack(paths, cfg.model.name)


def test_d_the_same_rollback_twice_at_once_moves_the_alias_once(world, tmp_path):
    stack = _deepen(world)
    before = len(_audit(world))
    rb = ["rollback", "--reason", "drill d: precision collapsed", "--airflow-run-id", "manual__rb_same"]
    outs = [_json(p) for p in _together(world, tmp_path, rb, rb)]
    assert outs[0]["id"] == outs[1]["id"]
    rows = assert_consistent(world)
    new = rows[before:]
    assert [(r["action"], r["from_version"], r["to_version"]) for r in new] == [
        ("rollback", stack[-1], stack[-2])
    ]
    assert _champion(world) == stack[-2]


def test_d_two_rollbacks_at_once_roll_back_two_steps_never_twice_from_one_champion(world, tmp_path):
    stack = _deepen(world)
    assert len(stack) >= 3
    before = len(_audit(world))
    outs = [
        _json(p)
        for p in _together(world, tmp_path, *[
            ["rollback", "--reason", f"drill d: request {i}", "--airflow-run-id", f"manual__rb_{i}"]
            for i in (1, 2)
        ])
    ]
    rows = assert_consistent(world)
    new = rows[before:]
    assert {r["id"] for r in new} == {o["id"] for o in outs}
    assert [(r["from_version"], r["to_version"]) for r in new] == [(stack[-1], stack[-2]), (stack[-2], stack[-3])]
    assert _champion(world) == stack[-3]


# --- e. the same training request twice at once -------------------------------------------------


def test_e_the_same_train_request_twice_at_once_registers_one_version(world, tmp_path):
    """One process trains; the other is refused at once, naming the run that holds the request. The
    refused task's retry returns the version, and the version's gate decision is audited once."""
    paths, cfg = world["paths"], world["cfg"]
    name = cfg.model.name
    run, key = "manual__e_twice", "train_model/manual__e_twice"
    train = ["train", "--data-version", world["full"], "--reason", "drill e", "--seed", "21",
             "--airflow-dag-id", "train_model", "--airflow-run-id", run]
    procs = _together(world, tmp_path, train, train)
    ok = [p for p in procs if p.returncode == 0]
    refused = [p for p in procs if p.returncode != 0]
    assert len(ok) == 1 and len(refused) == 1, [(p.returncode, p.stderr[-1500:]) for p in procs]
    won = _json(ok[0])
    assert won["reused"] is False
    message = refused[0].stderr.strip().splitlines()[-1]
    assert message.startswith("error: TrainingInProgress: ") and key in message, message
    assert f"MLflow run {won['run_id']}" in message, message

    mc = tracking.client(paths)
    versions = tracking.versions_with_tag(mc, name, tracking.IDEMPOTENCY_TAG, key)
    assert [str(mv.version) for mv in versions] == [won["version"]]
    runs = mc.search_runs([mc.get_experiment_by_name(tracking.experiment_name(cfg)).experiment_id],
                          filter_string=f"tags.idempotency_key = '{key}'")
    assert [r.info.run_id for r in runs] == [won["run_id"]]  # the refused process opened no run

    retried = _json(_cli(world, *train))  # Airflow retries the refused task
    assert retried["reused"] is True and retried["version"] == won["version"]
    before = len(_audit(world))
    decided = _json(_cli(world, "evaluate", "--version", won["version"], "--airflow-run-id", run))
    rows = assert_consistent(world)
    assert [r["idempotency_key"] for r in rows[before:]] == [f"{key}#decision"]
    assert rows[-1]["to_version"] == won["version"] and rows[-1]["action"] == decided["action"]


# --- the lock itself, on both ledger backends ----------------------------------------------------

LOCK_CHILD = """
import sys, time
from pathlib import Path
from training.model import registry
from training.paths import StatePaths
Path(sys.argv[2]).touch()
with registry._locked(StatePaths(Path(sys.argv[1])), "lock-probe"):
    print(time.time())
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path: Path):
    """The ledger on SQLite (embedded profile) or on a fresh PostgreSQL database (services)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ops.db'}"
        return
    psycopg2 = pytest.importorskip("psycopg2")
    pg = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=3, **pg)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    admin.autocommit = True
    name = f"closedloop_lock_{os.getpid()}_{time.monotonic_ns()}"
    with admin.cursor() as cur:
        cur.execute(f'create database "{name}"')
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        from training.storage import ledger

        ledger._engine_for(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}").dispose()
        with admin.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
        admin.close()


def test_the_registry_lock_makes_another_process_wait(ledger_url, tmp_path, monkeypatch):
    monkeypatch.setenv("CLOSEDLOOP_OPS_DB_URL", ledger_url)
    paths = StatePaths(tmp_path / "state")
    trying = tmp_path / "trying"
    with registry._locked(paths, "lock-probe"):
        child = subprocess.Popen(
            [sys.executable, "-c", LOCK_CHILD, str(paths.root), str(trying)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "CLOSEDLOOP_OPS_DB_URL": ledger_url},
        )
        deadline = time.monotonic() + 120
        while not trying.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.5)  # the child is blocked on the lock meanwhile
        released = time.time()
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err[-2000:]
    assert float(out.strip()) >= released, "the second process entered while the lock was held"


LEASE_CHILD = """
import sys, time
from pathlib import Path
from training.config import load_config
from training.model import registry
from training.paths import StatePaths
registry.HOLDER_RUN_WAIT_S = 0
paths, cfg = StatePaths(Path(sys.argv[1])), load_config()
try:
    with registry.training_lease(paths, cfg, "lease-probe"):
        print("held", flush=True)
        if sys.argv[2] == "hold":
            time.sleep(600)
except registry.TrainingInProgress as exc:
    print(f"refused: {exc}", flush=True)
"""


def _lease_child(paths: StatePaths, mode: str, ledger_url: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", LEASE_CHILD, str(paths.root), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**_env(), "CLOSEDLOOP_OPS_DB_URL": ledger_url},
    )


def test_the_training_lease_refuses_a_second_holder_and_dies_with_its_holder(
    ledger_url, tmp_path, monkeypatch, train_cfg
):
    """Held by one process, the lease refuses another at once; a SIGKILLed holder leaves it free."""
    monkeypatch.setenv("CLOSEDLOOP_OPS_DB_URL", ledger_url)
    paths = StatePaths(tmp_path / "state")
    holder = _lease_child(paths, "hold", ledger_url)
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()[-2000:]
        other = _lease_child(paths, "once", ledger_url)
        out, err = other.communicate(timeout=120)
        assert out.startswith("refused: training request 'lease-probe'"), (out, err[-2000:])
    finally:
        holder.send_signal(signal.SIGKILL)  # a worker killed mid-train: no cleanup of its own
        holder.wait(timeout=30)
    again = _lease_child(paths, "once", ledger_url)
    out, err = again.communicate(timeout=120)
    assert out.strip() == "held", (out, err[-2000:])
