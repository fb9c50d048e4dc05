"""The dbt project rendered by cosmos as Airflow tasks.

Parsing reads a precompiled manifest (`LoadMode.DBT_MANIFEST`) so the DAG processor never runs dbt;
`python -m training dbt-parse` (run by `make env`/the demo/the test session) writes it into the state
directory. Until it exists (a fresh clone) the group is one placeholder task, `dbt.manifest_missing`:
the DAG still imports and shows where dbt goes, and a run fails at that task naming the command to
run - never an import error that hides the whole DAG. The warehouse location reaches dbt through the
task's environment at run time (`CLOSEDLOOP_HOME`), never through values frozen into the DAG at parse
time. Tasks run dbt in a subprocess (`InvocationMode.SUBPROCESS`): cosmos's in-process runner
leaves DuckDB connections open, and a later read-only connection in the same process fails.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, SourceRenderingBehavior, TestBehavior

from training.config import load_config
from training.data.dbt import PROFILES_DIR
from training.paths import StatePaths
from training.settings import MANIFEST_ENV_VAR, settings

if TYPE_CHECKING:
    from airflow.sdk import TaskGroup

    from training.config import Config


class DbtManifestMissing(FileNotFoundError):
    """The precompiled manifest cosmos renders from does not exist yet."""


def manifest_path(model: str | None = None) -> Path:
    """The manifest cosmos renders from: `$CLOSEDLOOP_DBT_MANIFEST` (one-model deployments), else the
    state directory's dbt target (the model's own in a several-model deployment)."""
    if model:
        return StatePaths.for_model(model).dbt_target / "manifest.json"
    return settings().dbt_manifest or StatePaths.from_env().dbt_target / "manifest.json"


def missing_manifest_message(manifest: Path) -> str:
    return (
        f"dbt manifest not found at {manifest}: run `python -m training dbt-parse` "
        f"(make demo / make up do it) or set {MANIFEST_ENV_VAR}; the dbt models appear as tasks at the "
        "next parse of the DAG file"
    )


def _placeholder_group(group_id: str, manifest: Path) -> TaskGroup:
    """The dbt group before a manifest exists: one task that fails at run time saying what to run."""
    from airflow.sdk import TaskGroup, task

    with TaskGroup(group_id=group_id, tooltip="dbt models render once the manifest exists") as group:

        # no retry: the manifest does not appear by waiting
        @task(task_id="manifest_missing", retries=0)
        def manifest_missing() -> None:
            if manifest.is_file():
                raise DbtManifestMissing(
                    f"dbt manifest {manifest} exists now, but this run was created from a parse without it: "
                    "re-run the day once the DAG has been re-parsed (the dbt models are tasks then)"
                )
            raise DbtManifestMissing(missing_manifest_message(manifest))

        manifest_missing()
    return group


def dbt_task_group(group_id: str = "dbt", pool: str | None = None, cfg: Config | None = None,
                   retries: int = 0, model: str | None = None,
                   extra_vars: dict[str, Any] | None = None,
                   rebuild_from: str | None = None) -> DbtTaskGroup | TaskGroup:
    """The dbt project as tasks: one `dbt build` (models and data tests), then a task per model
    (watcher mode, the default); or a `dbt build` per model task (`CLOSEDLOOP_DBT_EXECUTION_MODE=local`).

    `extra_vars` join the config's `--vars`; values may be Airflow templates (cosmos renders `vars`).
    `rebuild_from` (a template, e.g. the run's day): the incremental marts rebuild that day and the
    later ones. It reaches dbt through the task's environment (cosmos renders `env`), not `--vars`, so
    the vars stay the same every day and dbt keeps its partial parse.

    `retries` defaults to 0: the `dbt build` runs the data tests, and a failing test fails again the
    same way; the run stops before anything is published, so clearing the task is safe.
    """
    manifest = manifest_path(model)
    if not manifest.is_file():
        return _placeholder_group(group_id, manifest)
    from training.data.dbt import dbt_vars, rebuild_from_env

    cfg = cfg or load_config()
    # `watcher` (default): one `dbt build` per day in a producer task, then a task per model reading
    # its node's status. `local`: one `dbt build` per model task (a dbt start-up per model).
    mode = ExecutionMode(settings().dbt_execution_mode)
    operator_args: dict[str, Any] = {"install_deps": False, "append_env": True, "retries": retries}
    if model:  # a several-model deployment: dbt builds this model's project into this model's warehouse
        from training.data.dbt import dbt_env
        from training.settings import MODEL_ENV_VAR

        operator_args["env"] = {MODEL_ENV_VAR: model, **dbt_env(StatePaths.for_model(model), cfg)}
    operator_args["env"] = {**operator_args.get("env", {}), **rebuild_from_env(rebuild_from)}
    if pool and mode != ExecutionMode.WATCHER:
        operator_args["pool"] = pool
    project_config = ProjectConfig(
        dbt_project_path=cfg.project.dbt_path,
        manifest_path=manifest,
        dbt_vars=dbt_vars(cfg, extra_vars),
        install_dbt_deps=False,
    )
    # Cosmos wraps the path in an ObjectStoragePath, whose first read loads every Airflow plugin (the
    # hook-lineage collector) - FastAPI and all - inside each DAG-parse child: ~0.3 s per parse. The
    # manifest is a local file, and cosmos reads it the same way through a plain Path.
    project_config.manifest_path = manifest
    group = DbtTaskGroup(
        group_id=group_id,
        project_config=project_config,
        profile_config=ProfileConfig(
            profile_name="closedloop",
            target_name=settings().dbt_target,
            profiles_yml_filepath=PROFILES_DIR / "profiles.yml",
        ),
        execution_config=ExecutionConfig(
            execution_mode=mode,
            invocation_mode=InvocationMode.SUBPROCESS,
            dbt_executable_path=str(Path(sys.executable).parent / "dbt"),
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            # Watcher mode: the producer's `dbt build` runs the data tests (see _one_build_then_models),
            # so they are not tasks of their own; local mode: each model task builds it with its tests.
            test_behavior=TestBehavior.NONE if mode == ExecutionMode.WATCHER else TestBehavior.BUILD,
            source_rendering_behavior=SourceRenderingBehavior.WITH_TESTS_OR_FRESHNESS,
            # Local mode: tests over several models (relationships, cross-model asserts) run as their
            # own tasks once all their parents are built, not inside whichever parent builds first.
            # Watcher mode: the producer's single `dbt build` orders them itself.
            should_detach_multiple_parents_tests=mode != ExecutionMode.WATCHER,
        ),
        operator_args=operator_args,
    )
    if mode == ExecutionMode.WATCHER:
        _one_build_then_models(group, pool)
    return group


def _one_build_then_models(group: DbtTaskGroup, pool: str | None) -> None:
    """Shape the watcher group as one `dbt build` (models and data tests) followed by a task per model.

    Why: a task instance costs about as much CPU to start as a small dbt node takes to build, so a day
    under the scheduler pays for every task. Cosmos's default watcher shape is a sensor per model and
    per model's tests, all waiting beside the producer; here the data tests run inside the producer's
    build (a failing test stops the models downstream of it and fails the producer, exactly as `dbt
    build` does), and the model tasks start once the producer has finished, each reading its node's
    status once. That also lets `dag.test()` run this mode: a sensor never waits on a producer that has
    not started. A cleared producer skips (cosmos never runs a second build), and the model tasks then
    fall back to `dbt build --select <model>`, the model with its tests.
    """
    from airflow.sdk.bases.sensor import BaseSensorOperator
    from cosmos.operators.watcher import DbtProducerWatcherOperator, DbtRunWatcherOperator

    tasks = list(group)
    producer = next(t for t in tasks if isinstance(t, DbtProducerWatcherOperator))
    # cosmos limits a TestBehavior.NONE producer to models/seeds/snapshots; the data tests go back in
    producer.dbt_cmd_flags = [*producer.dbt_cmd_flags, "--resource-type", "test"]
    in_group = {t.task_id for t in tasks}
    for task in tasks:
        if not isinstance(task, BaseSensorOperator):
            task.retries = producer.retries  # also cosmos's gate after the producer, made without our args
            if pool:  # the producer takes the warehouse slot; the model tasks only read XCom
                task.pool = pool
            continue
        # Poke, don't defer: the status is in XCom when the task starts, and a trigger that fires before
        # the executor has reported the deferral races the scheduler into failing the task (Airflow 3.3,
        # LocalExecutor).
        task.deferrable = False
        task.poke_interval = 2
        if isinstance(task, DbtRunWatcherOperator):
            task.base_cmd = ["build"]  # the fallback after a cleared producer runs the model's tests too
        if not task.upstream_task_ids & in_group:
            producer >> task
            task.trigger_rule = "none_failed"  # after a build, or after a cleared (skipped) producer
