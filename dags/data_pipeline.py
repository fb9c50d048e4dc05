"""
### data_pipeline — one day of source data, from the source system to published features

`land` → **raw gate** → `load_raw` → dbt (sources, staging, intermediate, marts/ml via cosmos) →
**feature gate** → `publish` (emits the `closedloop_features` Asset).

* Partitions are keyed on the data interval: re-running a day replaces that day, never duplicates it.
* Days in order (`admission.day_order: strict`): a day whose previous day was never published is
  refused at `land`, naming the missing day and the command to run it. A backfill (a missing or
  corrected older day) loads the labels held for its events and re-publishes the later days whose
  point-in-time features it changed, so serving reads what training reads.
  Scheduled and backfill runs take the day from their data interval; to (re)process a given day by
  hand: `airflow dags trigger data_pipeline --conf '{"batch_date": "2026-01-05"}'`.
* Every landed feed and every published training set is a DVC version; the `data_version` rides on
  the Asset event's extra to `train_model`.
* A failing Great Expectations gate fails the run with the failed expectations named, quarantines
  the batch (`quarantine.rejected_batches` / `rejected_rows`) and publishes nothing: the previously
  published features and models are untouched.
* The dbt models are rendered from the manifest `python -m training dbt-parse` writes. On a fresh
  clone, before it has run, the DAG still imports: the dbt step is one `dbt.manifest_missing` task
  that fails naming that command; the models appear as tasks at the next parse after it ran.
* A refused or quarantined day (a failed `land`, gate or `verify_published`) is told to the
  model's notification routes once per run, with the error and the command to re-run the day.
* Retries: tasks that write partitions retry service faults (2 × 1 min; each replaces the day, so a
  retry is safe); the gates, the dbt model tasks and `verify_published` do not (see each one's note).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, Param, chain, dag, task
from closedloop.assets import assets_for
from closedloop.cosmos_dbt import dbt_task_group
from closedloop.operators.gx_validate import GXValidateCheckpointOperator
from closedloop.runtime import (
    BATCH_DATE_TEMPLATE,
    BATCH_END_TEMPLATE,
    BATCH_START_TEMPLATE,
    DBT_POOL,
    WAREHOUSE_POOL,
    batch_date_of,
    dag_id,
    day_bounds,
    deadline_alerts,
    default_args,
    deployment_models,
    load_runtime,
    parse_config,
    pool_for,
)

#: A failed Great Expectations gate is a verdict on the data, not a fault: a retry re-validates the
#: same bytes (and quarantines the batch again). The run stops, the day is fixed, then re-run.
NO_RETRY_GATE = 0


def build(model: str | None) -> None:
    """The pipeline of one model (`model` None: the one model of a one-model deployment)."""
    config = parse_config(model)
    warehouse_pool = pool_for(model, WAREHOUSE_POOL)
    features_asset = assets_for(model).features
    #: The feature gate's suite is named after the contract's feature mart (`ml.<mart>` -> `<mart>`).
    feature_suite = config.contract.marts.split(config.contract.marts.features)[1]

    @dag(
        dag_id=dag_id(model, "data_pipeline"),
        schedule=CronDataIntervalTimetable(config.schedules.data_pipeline or "@daily", timezone="UTC"),
        start_date=dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC),
        end_date=(
            dt.datetime.combine(config.schedules.data_pipeline_end_date, dt.time(), tzinfo=dt.UTC)
            if config.schedules.data_pipeline_end_date
            else None
        ),
        catchup=False,
        # days in order on every profile: a day's point-in-time features read the earlier days' raw rows
        max_active_runs=1,
        tags=["closedloop", "data"],
        doc_md=__doc__,
        params={
            "batch_date": Param(
                None, type=["null", "string"], format="date",
                description="process this day (YYYY-MM-DD) instead of the run's data interval, e.g. to re-run it",
            )
        },
        # land/load_raw/publish replace the day's partition and DVC version: retry service faults
        default_args=default_args(model),
        # the day not published by its start + deadlines.published_within_hours: told (none configured: none)
        deadline=deadline_alerts(model, config, "data_pipeline"),
    )
    def data_pipeline():
        @task(pool=warehouse_pool)
        def land(**context) -> dict:
            """Land the interval's event and label feeds (the contract's) as DVC-versioned Parquet, after the day-order check."""
            from airflow.sdk.exceptions import AirflowFailException
            from closedloop import lineage

            from training.data.ingest import DayOrderError, check_day_order
            from training.data.ingest import land as land_batch

            cfg, paths = load_runtime(model)
            try:  # a missing previous day is not transient: no retry (admission.day_order)
                check_day_order(paths, cfg, batch_date_of(context))
            except DayOrderError as exc:
                raise AirflowFailException(str(exc)) from exc
            batch = land_batch(paths, cfg, batch_date_of(context))
            lineage.record(context, inputs=[], outputs=[lineage.landed_file(f.path) for f in batch.feeds.values()])
            return batch.to_xcom()

        @task(task_id="raw_gate", pool=warehouse_pool, retries=NO_RETRY_GATE)
        def raw_gate(landed: dict, **context) -> dict:
            """The front door: both feeds through their GX suites and the checks against loaded history."""
            from airflow.sdk.exceptions import AirflowFailException
            from closedloop.lineage import landed_file, record

            from training.data.admission import admit
            from training.data.ingest import LandedBatch
            from training.data.quality import DataQualityGateFailed

            cfg, paths = load_runtime(model)
            batch = LandedBatch.from_xcom(landed)
            try:
                admitted = admit(paths, cfg, batch, run_name=context["run_id"]).to_xcom()
            except DataQualityGateFailed as exc:  # bad data is not transient: no retry
                raise AirflowFailException(str(exc)) from exc
            record(context, inputs=[landed_file(f.path) for f in batch.feeds.values()],
                   outputs=[landed_file(f.path) for f in LandedBatch.from_xcom(admitted["admitted"]).feeds.values()])
            return admitted

        @task(pool=warehouse_pool)
        def load_raw(admission: dict, **context) -> dict:
            """Replace the interval's partition of both feeds' raw tables with what was admitted, then load
            the labels held for events that have now arrived (a backfilled day)."""
            from closedloop import lineage

            from training.data.ingest import LandedBatch, readmit_held_labels
            from training.data.ingest import load_raw as load

            cfg, paths = load_runtime(model)
            batch = LandedBatch.from_xcom(admission["admitted"])
            feeds = batch.feeds.values()
            lineage.record(context, inputs=[lineage.landed_file(f.path) for f in feeds],
                           outputs=[lineage.warehouse_table(paths, cfg.contract.feeds[f.table].raw_table) for f in feeds])
            return load(paths, batch) | readmit_held_labels(paths, cfg, batch.batch_date)

        # the incremental marts rebuild the run's day and every later one (a backfill rebuilds downstream)
        dbt_build = dbt_task_group(group_id="dbt", pool=pool_for(model, DBT_POOL), cfg=config, model=model,
                                   rebuild_from=BATCH_DATE_TEMPLATE)

        feature_gate = GXValidateCheckpointOperator(
            task_id="feature_gate",
            suite_name=feature_suite,
            load_dataframe="warehouse",
            loader_kwargs={"table": config.contract.marts.features},
            batch_date=BATCH_DATE_TEMPLATE,
            interval_start=BATCH_START_TEMPLATE,
            interval_end=BATCH_END_TEMPLATE,
            pool=warehouse_pool,
            retries=NO_RETRY_GATE,
            model=model,
        )

        @task(outlets=[features_asset], pool=warehouse_pool)
        def publish(landed: dict, **context) -> dict:
            """Publish the gated interval (and re-publish the later days a backfill changed) and emit the
            features Asset with its data version."""
            from closedloop.lineage import data_version, record, warehouse_table

            from training.data.ingest import LandedBatch, publish_lineage, republish_later_days
            from training.data.ingest import publish as publish_interval

            cfg, paths = load_runtime(model)
            gates = [context["ti"].xcom_pull(task_ids=t) or {} for t in ("raw_gate", "feature_gate")]
            day = batch_date_of(context)
            lineage = publish_lineage(paths, cfg, LandedBatch.from_xcom(landed), gates)
            extra = publish_interval(paths, cfg, day, *day_bounds(day), lineage=lineage)
            extra |= republish_later_days(paths, cfg, day)
            context["outlet_events"][features_asset].extra = extra
            marts = cfg.contract.marts  # the features partition is copied, the training set versioned
            record(context, inputs=[warehouse_table(paths, marts.features), warehouse_table(paths, marts.training_set)],
                   outputs=[warehouse_table(paths, marts.published), data_version(cfg, extra["data_version"])])
            return extra

        @task(trigger_rule="all_done", retries=0)  # reports the states of this run: a retry reads the same
        def verify_published(**context) -> None:
            """Fail the run, naming what stopped it, whenever the day was not published.

            A skipped task (e.g. cosmos skipping the models of a failed dbt build) would otherwise let
            the run end "successful" with nothing published.
            """
            run_id = context["run_id"]
            states = context["ti"].get_task_states(dag_id=context["dag"].dag_id, run_ids=[run_id]).get(run_id, {})
            if states.get("publish") == "success":
                return
            stopped = sorted(t for t, s in states.items() if s in ("failed", "upstream_failed", "skipped"))
            raise RuntimeError(
                f"{batch_date_of(context)} was not published (publish: {states.get('publish')}); "
                f"stopped at: {', '.join(stopped[:8])}. Nothing downstream changed; fix and re-run this day."
            )

        landed = land()
        admitted = raw_gate(landed)
        loaded = load_raw(admitted)
        published = publish(landed)
        chain(landed, admitted, loaded, dbt_build, feature_gate, published, verify_published())

    data_pipeline()


for _model in deployment_models():
    build(_model)
