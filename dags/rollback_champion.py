"""
### rollback_champion — restore the previous champion, audited

Manual only: `airflow dags trigger rollback_champion --conf '{"reason": "bad precision in prod"}'`.
Moves `@champion` back to the version that preceded the current one (as the audit log records
it) and appends a `rollback` row to the registry audit log. A reason is required.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task
from closedloop.assets import assets_for
from closedloop.runtime import (
    dag_id,
    default_args,
    deployment_models,
    load_runtime,
)


def build(model: str | None) -> None:
    """The DAG of one model (`model` None: the one model of a one-model deployment)."""
    assets = assets_for(model)

    @dag(
        dag_id=dag_id(model, "rollback_champion"),
        schedule=None,
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        # two rollbacks at once would both read the same "previous champion" from the audit log
        max_active_runs=1,
        tags=["closedloop", "ml", "ops"],
        doc_md=__doc__,
        params={"reason": Param("", type="string", minLength=1, description="why roll back (required, audited)")},
        # Manual and watched: a failed rollback (e.g. no previous champion) fails the same way again, so
        # it is not retried; the operator reads why and re-triggers. (The rollback is idempotent per run,
        # keyed on the run id, so clearing the task after a service fault is safe.)
        default_args=default_args(retries=0),
    )
    def rollback_champion():
        @task(outlets=[assets.champion])
        def rollback(**context) -> dict:
            from training.model.registry import rollback as rollback_alias

            cfg, paths = load_runtime(model)
            record = rollback_alias(paths, cfg, context["params"]["reason"], airflow_run_id=context["run_id"])
            extra = record.to_dict()
            context["outlet_events"][assets.champion].extra = {
                "model_name": cfg.model.name,
                "champion_version": extra.get("to_version"),
                "previous_champion": extra.get("from_version"),
                "action": "rollback",
            }
            return extra

        rollback()

    rollback_champion()


for _model in deployment_models():
    build(_model)
