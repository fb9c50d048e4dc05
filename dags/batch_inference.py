"""
### batch_inference — score the day's features with `@champion` (and `@challenger` in shadow)

Scheduled on the `closedloop_features` Asset (one run per published interval) and triggerable with
`conf={"batch_date": "YYYY-MM-DD"}`. Writes `published.predictions`, replacing the interval's
partition per alias (re-running a day never duplicates), and emits the `closedloop_predictions`
Asset for the drift monitor. Champion rows are what production acts on; challenger rows are shadow,
and so, after a promotion, are the previous champion's (alias `previous_champion`), which the drift
monitor's `shadow` task compares with the new champion to roll it back if it does significantly worse.

With `execution.mode: kubernetes` and `infer` in `execution.stages`, the scoring runs as a pod
(`python -m training infer --dates ...`): `days` resolves the intervals, `score` is the pod, and
`announce` emits the Asset with the same extra the in-process `score` task emits.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task
from closedloop.assets import assets_for
from closedloop.runtime import (
    MAX_ACTIVE_WRITER_RUNS,
    WAREHOUSE_POOL,
    batch_dates,
    dag_id,
    deadline_alerts,
    default_args,
    deployment_models,
    load_runtime,
    parse_config,
    pool_for,
    rescore_dates,
)


def build(model: str | None) -> None:
    """The DAG of one model (`model` None: the one model of a one-model deployment)."""
    config = parse_config(model)
    execution = config.execution
    assets = assets_for(model)

    @dag(
        dag_id=dag_id(model, "batch_inference"),
        schedule=[assets.features],
        start_date=dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=MAX_ACTIVE_WRITER_RUNS,  # each run replaces its own day's partitions
        tags=["closedloop", "ml"],
        doc_md=__doc__,
        params={"batch_date": Param(None, type=["null", "string"], description="day to score (default: the Asset event's)")},
        # scoring replaces the interval's partition per alias: a retry after a service fault is safe
        default_args=default_args(model),
        # the day not scored within deadlines.scored_within_hours of its features: told (none configured: none)
        deadline=deadline_alerts(model, config, "batch_inference"),
    )
    def batch_inference():
        if execution.in_pod("infer"):
            from closedloop.pods import stage_pod

            @task
            def days(**context) -> list[str]:
                """The intervals to score (Airflow context only: the pod gets them as arguments)."""
                return [d.isoformat() for d in sorted({*batch_dates(context, "features"), *rescore_dates(context)})]

            pod = stage_pod(execution, "score", "infer", [
                "--dates={{ ti.xcom_pull(task_ids='days') | join(',') }}",
            ], pool=pool_for(model, WAREHOUSE_POOL), model=model)

            @task(outlets=[assets.predictions])
            def announce(extra: dict, **context) -> dict:
                context["outlet_events"][assets.predictions].extra = extra
                return extra

            days() >> pod
            announce(pod.output)
            return

        @task(outlets=[assets.predictions], pool=pool_for(model, WAREHOUSE_POOL))
        def score(**context) -> dict:
            """Score every interval this run was triggered for (events queued together are all scored), and
            re-score the later days a backfill re-published: their predictions were made from features
            the rebuilt mart no longer has. The monitor is told only of the triggering days; its past
            decisions on the re-scored days stand."""
            from closedloop import lineage

            from training.serving.inference import PREDICTIONS_TABLE, score_interval

            cfg, paths = load_runtime(model)
            days = batch_dates(context, "features")
            for day in sorted(set(rescore_dates(context)) - set(days)):
                print("re-scored after a backfill:", score_interval(paths, cfg, day))
            results = [score_interval(paths, cfg, day) for day in days]
            used = {v for r in results for v in r["versions"].values()}
            lineage.record(context, inputs=[lineage.warehouse_table(paths, cfg.contract.marts.published),
                                            *(lineage.model_version(cfg.model.name, v) for v in sorted(used))],
                           outputs=[lineage.warehouse_table(paths, PREDICTIONS_TABLE)])
            for result in results:
                print(result)
            extra = {"batch_date": days[-1].isoformat(), "batch_dates": [d.isoformat() for d in days], "results": results}
            context["outlet_events"][assets.predictions].extra = extra
            return extra

        score()

    batch_inference()


for _model in deployment_models():
    build(_model)
