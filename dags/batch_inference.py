"""
### batch_inference — score the day's features with `@champion` (and `@challenger` in shadow)

Scheduled on the `closedloop_features` Asset (one run per published interval) and triggerable with
`conf={"batch_date": "YYYY-MM-DD"}`. Writes `published.predictions`, replacing the interval's
partition per alias (re-running a day never duplicates), and emits the `closedloop_predictions`
Asset for the drift monitor. Champion rows are what production acts on; challenger rows are shadow.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task
from closedloop.assets import FEATURES, PREDICTIONS
from closedloop.runtime import WAREHOUSE_POOL, event_extras, load_runtime


@dag(
    dag_id="batch_inference",
    schedule=[FEATURES],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["closedloop", "ml"],
    doc_md=__doc__,
    params={"batch_date": Param(None, type=["null", "string"], description="day to score (default: the Asset event's)")},
    default_args={"retries": 1},
)
def batch_inference():
    @task(outlets=[PREDICTIONS], pool=WAREHOUSE_POOL)
    def score(**context) -> dict:
        """Score every interval this run was triggered for (events queued together are all scored)."""
        from training.inference import score_interval

        cfg, paths = load_runtime()
        days = (
            [context["params"]["batch_date"]]
            if context["params"].get("batch_date")
            else sorted({x["batch_date"] for x in event_extras(context) if x.get("batch_date")})
        )
        if not days:
            raise ValueError(
                "no batch_date: trigger with conf {\"batch_date\": \"YYYY-MM-DD\"} or let the features Asset trigger"
            )
        results = [score_interval(paths, cfg, dt.date.fromisoformat(day)) for day in days]
        for result in results:
            print(result)
        extra = {"batch_date": days[-1], "batch_dates": days, "results": results}
        context["outlet_events"][PREDICTIONS].extra = extra
        return extra

    score()


batch_inference()
