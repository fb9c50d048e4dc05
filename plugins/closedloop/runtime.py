"""Small helpers shared by DAG files: config and state resolved at task run time, never at parse time."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from training.settings import settings

if TYPE_CHECKING:
    from training.config import Config
    from training.paths import StatePaths

#: Who answers for the DAGs (shown in the UI, used for alert routing).
OWNER = "ml-platform"
#: Retry policy for tasks that talk to services (MLflow, PostgreSQL, the DVC remote, a pod's node):
#: their work is idempotent per run (partitions replaced, registry and audit rows keyed on the run
#: id), so a retry after a transient fault is safe. Tasks where a retry is wrong (a failed data gate
#: re-validates the same bytes; a decision must not be taken twice) set `retries=0` and say why.
SERVICE_RETRIES = 2
SERVICE_RETRY_DELAY = dt.timedelta(minutes=1)


def default_args(model: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Every closedloop DAG's `default_args`: the owner, the service retry policy, and the failure
    notification (`closedloop.notifiers`: sent only if the model's config routes it somewhere)."""
    return {"owner": OWNER, "retries": SERVICE_RETRIES, "retry_delay": SERVICE_RETRY_DELAY,
            "on_failure_callback": failure_notifier(model), **overrides}


def deadline_alerts(model: str | None, config: Config, dag: str) -> list[Any] | None:
    """The Deadline Alerts of `data_pipeline` (day published by its start + `published_within_hours`)
    or `batch_inference` (scored within `scored_within_hours` of being queued); None when not configured.

    The callback (`closedloop.notifiers.deadline_missed`) runs in the executor when Airflow's scheduler
    finds the run unfinished at its deadline, and tells the model's notification routes.
    """
    from airflow.sdk.definitions.callback import SyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    spec = config.deadlines
    if dag == "data_pipeline":
        hours, reference, what = spec.published_within_hours, DeadlineReference.DAGRUN_LOGICAL_DATE, "published"
    elif dag == "batch_inference":
        hours, reference, what = spec.scored_within_hours, DeadlineReference.DAGRUN_QUEUED_AT, "scored"
    else:
        raise ValueError(f"no deadline alert is defined for {dag!r} (data_pipeline, batch_inference)")
    if hours is None:
        return None
    return [DeadlineAlert(
        reference=reference, interval=dt.timedelta(hours=hours), name=f"day_{what}",
        callback=SyncCallback("closedloop.notifiers.deadline_missed", kwargs={"model": model, "what": what}),
    )]


def parse_config(model: str | None = None) -> Config:
    """The validated config for a DAG file's *structure* (schedules, `execution` mode), read at parse time.

    `model`: one of a several-model deployment's models (`training.deployment`), else the one config.
    Task bodies call `load_runtime(model)` instead, so what they act on is read when they run.
    """
    from training.config import load_config, model_config_path

    return load_config(model_config_path(model) if model else None)


def dag_id(model: str | None, name: str) -> str:
    """The DAG id of `name` for `model`: plain in a one-model deployment, `<model>__<name>` otherwise."""
    from training.deployment import dag_id as model_dag_id

    return model_dag_id(model, name)


def pool_for(model: str | None, pool: str) -> str:
    """The pool `pool` of `model` (each model's DuckDB warehouse has its own single writer)."""
    from training.deployment import pool_name

    return pool_name(model, pool)


def deployment_models() -> list[str | None]:
    """The models whose DAGs each DAG file builds (`[None]`: one model, plain DAG ids)."""
    from training.deployment import deployment_models as models

    return models()


#: DuckDB allows one writer at a time: every task that writes the warehouse takes this pool's only slot.
WAREHOUSE_POOL = settings().warehouse_pool
#: dbt rebuilds whole mart tables: two builds at once would collide on any warehouse (on PostgreSQL
#: on dbt's `__dbt_tmp` relations), so dbt gets a pool of its own with one slot. On DuckDB the
#: single-writer pool already serialises it (the default); the services profile sets `dbt_build`.
DBT_POOL = settings().dbt_pool
#: Runs at once of a DAG that only replaces its own interval's partitions (batch_inference): 1 on
#: DuckDB (one writer anyway), more on PostgreSQL. data_pipeline stays at 1 on every profile: a
#: day's point-in-time features need the earlier days' raw rows loaded first.
MAX_ACTIVE_WRITER_RUNS = settings().max_active_writer_runs


def load_runtime(model: str | None = None) -> tuple[Config, StatePaths]:
    """(Config, StatePaths) for the running task; imported lazily so DAG parsing stays light.

    The servers the task's settings name (MLflow server, PostgreSQL) must answer within
    `CLOSEDLOOP_SERVICE_WAIT_S`: otherwise the task fails with the CLI's one-line message (which
    server, its URL, how to start it) and Airflow's retry policy applies.
    """
    from training import outages
    from training.config import load_config
    from training.deployment import use_model
    from training.paths import StatePaths

    use_model(model)  # the task acts for this model from here on (config, state, dbt, ledger)
    outages.bound_mlflow_retries()
    outages.wait_for(outages.endpoints(), outages.wait_budget_s())
    return load_config(), StatePaths.from_env().ensure()


#: Jinja for the same day in templated operator fields (conf `batch_date` wins over the interval).
BATCH_DATE_TEMPLATE = "{{ params.batch_date or data_interval_start | ds }}"
BATCH_START_TEMPLATE = "{{ params.batch_date or data_interval_start | ds }}T00:00:00"
BATCH_END_TEMPLATE = "{{ macros.ds_add(params.batch_date or data_interval_start | ds, 1) }}T00:00:00"


def batch_date_of(context: dict[str, Any]) -> dt.date:
    """The business day a run processes: `conf.batch_date` if given, else its data interval's start.

    Scheduled and backfill runs carry the day in their data interval; a manual run (`airflow dags
    trigger`) gets an interval inferred from *now*, so re-running a given day passes it in conf.
    """
    given = (context.get("params") or {}).get("batch_date")
    if given:
        return dt.date.fromisoformat(str(given)[:10])
    start = context["data_interval_start"]
    return dt.date(start.year, start.month, start.day)


def batch_dates(context: dict[str, Any], asset: str) -> list[dt.date]:
    """Every business day a run of an Asset-scheduled DAG handles, oldest first: `conf.batch_date` if
    given, else each day named by the triggering `asset` events (`batch_dates`, else `batch_date`).

    Events queued while a run was busy arrive together, so a run handles each of their days.
    """
    given = (context.get("params") or {}).get("batch_date")
    if given:
        return [dt.date.fromisoformat(given)]
    days = _event_days(context)
    if not days:
        raise ValueError(
            f'no batch_date: trigger with conf {{"batch_date": "YYYY-MM-DD"}} or let the {asset} Asset trigger'
        )
    return days


def _event_days(context: dict[str, Any]) -> list[dt.date]:
    """The days the triggering Asset events name (`batch_dates`, else `batch_date`), oldest first."""
    days = {d for x in event_extras(context) for d in (x.get("batch_dates") or [x.get("batch_date")]) if d}
    return sorted(dt.date.fromisoformat(d) for d in days)


def rescore_dates(context: dict[str, Any]) -> list[dt.date]:
    """The published days a backfill re-published, as the triggering features events name them
    (`republished`): their predictions must be made again from the rebuilt features."""
    return sorted({dt.date.fromisoformat(r["batch_date"]) for x in event_extras(context)
                   for r in x.get("republished") or []})


def first_champion_day(result: dict[str, Any], context: dict[str, Any]) -> dt.date | None:
    """The day to score again once the first champion exists: the newest day of the features events
    that started this training run (None for any other promotion, or a run not started by them).

    `batch_inference` and `train_model` both start on the same features event; that day's inference
    finds no champion yet and scores nothing, where the CLI's `replay` trains first, then scores.
    """
    if result.get("action") != "first_promote":
        return None
    days = _event_days(context)
    return days[-1] if days else None


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def event_extras(context: dict[str, Any]) -> list[dict[str, Any]]:
    """The extras of the Asset events that triggered this run, oldest first (empty for other runs).

    Events queued while a run was busy arrive together, so a consumer handles every one of them.
    """
    events = context.get("triggering_asset_events") or {}
    # an event reached through an alias is listed under the alias too: count it once
    unique = {id(e): e for evs in events.values() for e in evs if e.extra}
    return [dict(e.extra) for e in sorted(unique.values(), key=lambda e: e.timestamp)]


def actor_of(context: dict[str, Any]) -> str:
    """Who a run acts for, for the audit log: `conf.actor` if given, else the person or API user who
    triggered it (`triggering_user_name`), else `scheduler` for scheduled/Asset/backfill runs."""
    given = (context.get("params") or {}).get("actor") or ((getattr(context.get("dag_run"), "conf", None) or {}).get("actor"))
    if given:
        return str(given)
    run = context.get("dag_run")
    user = getattr(run, "triggering_user_name", None)
    run_type = str(getattr(run, "run_type", "") or "").lower().split(".")[-1]
    if user:
        return f"user:{user}"
    if run_type in ("scheduled", "asset_triggered", "backfill"):
        return "scheduler"
    return f"airflow:{run_type or 'unknown'}"


def failure_notifier(model: str | None) -> Any:
    """Every task's `on_failure_callback`: one message per failed run (a refused day or a failure)."""
    from closedloop.notifiers import ClosedloopNotifier

    return ClosedloopNotifier(model, "failure")
