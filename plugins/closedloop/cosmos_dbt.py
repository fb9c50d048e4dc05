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
    """Every dbt model as a task running `dbt build` for that model (its tests run right after it).

    `extra_vars` join the config's `--vars`; values may be Airflow templates (cosmos renders `vars`).
    `rebuild_from` (a template, e.g. the run's day): the incremental marts rebuild that day and the
    later ones. It reaches dbt through the task's environment (cosmos renders `env`), not `--vars`, so
    the vars stay the same every day and dbt keeps its partial parse.

    `retries` defaults to 0: each task's `dbt build` runs the model's tests, and a failing test fails
    again the same way; the run stops before anything is published, so clearing the task is safe.
    """
    manifest = manifest_path(model)
    if not manifest.is_file():
        return _placeholder_group(group_id, manifest)
    from training.data.dbt import dbt_vars, rebuild_from_env

    cfg = cfg or load_config()
    # `local` (default): one `dbt build` per model task. `watcher`: one `dbt build` in a producer task
    # while every model/test task watches its node's status (one dbt start-up per day; needs a real
    # scheduler and triggerer, so `dag.test()` runs use `local`).
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
            test_behavior=TestBehavior.AFTER_EACH if mode == ExecutionMode.WATCHER else TestBehavior.BUILD,
            source_rendering_behavior=SourceRenderingBehavior.WITH_TESTS_OR_FRESHNESS,
            # Local mode: tests over several models (relationships, cross-model asserts) run as their
            # own tasks once all their parents are built, not inside whichever parent builds first.
            # Watcher mode: the producer's single `dbt build` orders them itself.
            should_detach_multiple_parents_tests=mode != ExecutionMode.WATCHER,
        ),
        operator_args=operator_args,
    )
    if pool and mode == ExecutionMode.WATCHER:
        # Tasks that run dbt (the producer, source freshness) take the warehouse slot; the sensors
        # that only watch the producer's node statuses must not, or they would starve it.
        from airflow.sdk.bases.sensor import BaseSensorOperator

        for task in group:
            if not isinstance(task, BaseSensorOperator):
                task.pool = pool
    if mode == ExecutionMode.WATCHER:
        # Poke, don't defer: a watched node is usually done within a second of the sensor starting,
        # and a trigger that fires before the executor has reported the deferral races the
        # scheduler into marking the task failed (seen with Airflow 3.3 on the LocalExecutor).
        from airflow.sdk.bases.sensor import BaseSensorOperator

        for task in group:
            if isinstance(task, BaseSensorOperator):
                task.deferrable = False
                task.poke_interval = 2
    return group
