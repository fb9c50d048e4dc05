"""
### drift_monitor — Evidently drift + delayed-label performance → maybe retrain

Scheduled on the `closedloop_predictions` Asset (one run per scored interval).

1. `wait_for_window` — a sensor (reschedule mode: it frees its worker slot between pokes) until the
   interval is scored by the champion and a data version covering it (so its matured labels) exists.
2. `evaluate` — data drift per feature (method/threshold/expected drift from config) and prediction
   drift against the same weekdays of the champion's last whole weeks of training data; PR-AUC /
   recall on the window whose labels have matured, against the champion's holdout values. The
   Evidently HTML report goes to the state dir.
3. The trigger policy: the same signal breached in k of the last n non-overlapping windows
   including the latest; minimum rows/positives; cooldown since the last promotion or retrain; no
   trigger while a `train_model` run is queued or running; backoff after rejected retrains and a
   cap of retrains per period (outcomes from the registry audit log); windows scored by an older
   champion ignored. Every decision — trigger or not, and why — is a row in `monitoring_decisions`;
   a trigger's evidence carries the onset window for the drift-aware retrain.
4. `shadow` — shadow evaluation on the same matured labels (training/monitoring/shadow.py): @challenger
   against @champion and, after a promotion, the new champion against the previous one (both scored
   in shadow by batch_inference), paired bootstrap CI + flip rate, one `shadow_evaluations` row per
   pair and window. A new champion significantly worse is rolled back (audited `rollback`, notified,
   blocked from re-promotion until new evidence); with `shadow.promote_challenger` a challenger
   significantly better is promoted. Here, not in batch_inference: this DAG runs once the day's labels
   are published, the moment the matured windows can be judged. `announce_champion` emits the
   champion Asset only when the alias moved. It runs in the worker in either execution mode (a join
   of two prediction partitions, a label lookup and a bootstrap: light).
5. On a breach, `TriggerDagRunOperator` starts `train_model` with the reason and the evidence in `conf`;
   `record_trigger` links the decision to that run and tells the model's notification routes
   (the window's evidence, the Evidently report, the triggered run), once per window.

With `execution.mode: kubernetes` and `drift` in `execution.stages`, `evaluate` runs as a pod
(`python -m training drift --dates ... --retrain-in-flight=...`, same loop, same result dict); a light
`retrain_in_flight` task asks Airflow first, since the pod has no access to it.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, PokeReturnValue, dag, task
from closedloop.assets import assets_for
from closedloop.notifiers import ClosedloopNotifier
from closedloop.runtime import (
    batch_dates,
    dag_id,
    default_args,
    deployment_models,
    load_runtime,
    parse_config,
)


def build(model: str | None) -> None:
    """The DAG of one model (`model` None: the one model of a one-model deployment)."""
    config = parse_config(model)
    execution = config.execution
    assets = assets_for(model)
    retrain_dag_id = dag_id(model, "train_model")

    @dag(
        dag_id=dag_id(model, "drift_monitor"),
        schedule=[assets.predictions],
        start_date=dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=["closedloop", "monitoring"],
        doc_md=__doc__,
        render_template_as_native_obj=True,
        params={"batch_date": Param(None, type=["null", "string"], description="window end (default: the Asset event's)")},
        # the sensor and evaluate read/replace one window's rows: a retry after a service fault is safe
        default_args=default_args(model),
    )
    def drift_monitor():
        @task.sensor(mode="reschedule", poke_interval=10, timeout=60 * 60)
        def wait_for_window(**context) -> PokeReturnValue:
            """Each interval is scored by the champion and its labels' data version is published."""
            from training.monitoring.drift_job import windows_ready

            cfg, paths = load_runtime(model)
            days = batch_dates(context, "predictions")
            ready, why = windows_ready(paths, cfg, days)
            print(why)
            return PokeReturnValue(is_done=ready, xcom_value=[d.isoformat() for d in days] if ready else None)

        @task
        def retrain_in_flight(**context) -> bool:
            return context["ti"].get_dr_count(dag_id=retrain_dag_id, states=["queued", "running"]) > 0

        @task
        def evaluate(days: list[str], **context) -> dict:
            """Decide window by window, oldest first; the last decision is the run's."""
            from closedloop import lineage

            from training.monitoring.drift_job import monitor_days
            from training.serving.inference import PREDICTIONS_TABLE

            cfg, paths = load_runtime(model)
            result = monitor_days(
                paths, cfg, [dt.date.fromisoformat(d) for d in days],
                retrain_in_flight=lambda: context["ti"].get_dr_count(dag_id=retrain_dag_id, states=["queued", "running"]) > 0,
            )
            champion = [lineage.model_version(cfg.model.name, result["champion_version"])] if result.get("champion_version") else []
            lineage.record(context, inputs=[lineage.warehouse_table(paths, PREDICTIONS_TABLE), *champion],
                           outputs=[lineage.monitoring_decision(cfg, result["window_end"])])
            return result

        @task.short_circuit
        def breached(result: dict) -> bool:
            return bool(result.get("trigger"))

        trigger_retrain = TriggerDagRunOperator(
            task_id="trigger_retrain",
            trigger_dag_id=retrain_dag_id,
            # the retrain's audit rows name this DAG as the actor
            conf="{{ dict(ti.xcom_pull(task_ids='evaluate')['conf'], actor='dag:' ~ dag.dag_id) }}",
            wait_for_completion=False,
            # A retry after a trigger that reached the API would start a second retrain; if the breach
            # persists, the next window's decision triggers again (the policy's in-flight guard applies).
            retries=0,
        )

        @task(on_success_callback=ClosedloopNotifier(model, "drift_trigger"))
        def record_trigger(result: dict, **context) -> None:
            from training.monitoring.decision_log import attach_triggered_run

            _, paths = load_runtime(model)
            run_id = context["ti"].xcom_pull(task_ids="trigger_retrain", key="trigger_run_id")
            attach_triggered_run(paths, dt.date.fromisoformat(result["window_end"]), result["champion_version"], run_id)

        @task(on_success_callback=ClosedloopNotifier(model, "shadow"))
        def shadow(days: list[str], monitored: dict, **context) -> dict:
            """Judge the version pairs scored in shadow; roll back / promote on significant evidence."""
            from training.monitoring.shadow import judge_days

            cfg, paths = load_runtime(model)
            return judge_days(paths, cfg, [dt.date.fromisoformat(d) for d in days], airflow_run_id=context["run_id"])

        @task.short_circuit
        def champion_moved(judged: dict) -> bool:
            return bool(judged.get("rollback") or judged.get("promotion"))

        @task(outlets=[assets.champion])
        def announce_champion(judged: dict, **context) -> None:
            moved = judged.get("rollback") or judged.get("promotion") or {}
            context["outlet_events"][assets.champion].extra = {
                "model_name": moved.get("model_name"),
                "champion_version": moved.get("to_version"),
                "previous_champion": moved.get("from_version"),
                "action": moved.get("action"),
            }

        windows = wait_for_window()
        if execution.in_pod("drift"):
            from closedloop.pods import stage_pod

            pod = stage_pod(execution, "evaluate", "drift", [
                "--dates={{ ti.xcom_pull(task_ids='wait_for_window') | join(',') }}",
                "--retrain-in-flight={{ ti.xcom_pull(task_ids='retrain_in_flight') | string }}",
            ], model=model)
            [windows, retrain_in_flight()] >> pod
            result = pod.output
        else:
            result = evaluate(windows)
        breached(result) >> trigger_retrain >> record_trigger(result)
        judged = shadow(windows, result)
        champion_moved(judged) >> announce_champion(judged)

    drift_monitor()


for _model in deployment_models():
    build(_model)
