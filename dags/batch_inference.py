"""
### batch_inference — score the day's features with `@champion` (and `@challenger` in shadow)

Scheduled on the `closedloop_features` Asset (one run per published interval) and triggerable with
`conf={"batch_date": "YYYY-MM-DD"}`. Writes `published.predictions`, replacing the interval's
partition per alias (re-running a day never duplicates), and emits the `closedloop_predictions`
Asset for the drift monitor. Champion rows are what production acts on; challenger rows are shadow.

With `execution.mode: kubernetes` and `infer` in `execution.stages`, the scoring runs as a pod
(`python -m training infer --dates ...`): `days` resolves the intervals, `score` is the pod, and
`announce` emits the Asset with the same extra the in-process `score` task emits.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task
from closedloop.assets import FEATURES, PREDICTIONS
from closedloop.runtime import (
    MAX_ACTIVE_WRITER_RUNS,
    WAREHOUSE_POOL,
    batch_dates,
    default_args,
    load_runtime,
    parse_config,
)

CONFIG = parse_config()
EXECUTION = CONFIG.execution


@dag(
    dag_id="batch_inference",
    schedule=[FEATURES],
    start_date=dt.datetime.combine(CONFIG.start_date, dt.time(), tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=MAX_ACTIVE_WRITER_RUNS,  # each run replaces its own day's partitions
    tags=["closedloop", "ml"],
    doc_md=__doc__,
    params={"batch_date": Param(None, type=["null", "string"], description="day to score (default: the Asset event's)")},
    # scoring replaces the interval's partition per alias: a retry after a service fault is safe
    default_args=default_args(),
)
def batch_inference():
    if EXECUTION.in_pod("infer"):
        from closedloop.pods import stage_pod

        @task
        def days(**context) -> list[str]:
            """The intervals to score (Airflow context only: the pod gets them as arguments)."""
            return [d.isoformat() for d in batch_dates(context, "features")]

        pod = stage_pod(EXECUTION, "score", "infer", [
            "--dates={{ ti.xcom_pull(task_ids='days') | join(',') }}",
        ], pool=WAREHOUSE_POOL)

        @task(outlets=[PREDICTIONS])
        def announce(extra: dict, **context) -> dict:
            context["outlet_events"][PREDICTIONS].extra = extra
            return extra

        days() >> pod
        announce(pod.output)
        return

    @task(outlets=[PREDICTIONS], pool=WAREHOUSE_POOL)
    def score(**context) -> dict:
        """Score every interval this run was triggered for (events queued together are all scored)."""
        from training.serving.inference import score_interval

        cfg, paths = load_runtime()
        days = batch_dates(context, "features")
        results = [score_interval(paths, cfg, day) for day in days]
        for result in results:
            print(result)
        extra = {"batch_date": days[-1].isoformat(), "batch_dates": [d.isoformat() for d in days], "results": results}
        context["outlet_events"][PREDICTIONS].extra = extra
        return extra

    score()


batch_inference()
