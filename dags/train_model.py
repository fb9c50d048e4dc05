"""
### train_model — challenger training, champion/challenger gates, registry promotion

Scheduled on the `closedloop_features` Asset and triggerable with a `conf`:
`airflow dags trigger train_model --conf '{"reason": "manual", "evidence": {...}}'`.

1. `decide` — trains only when there is no champion, the cadence (`training.cadence_days`) has passed,
   or the trigger gave a reason (manual, drift, ...): daily data does not mean daily churn.
   A drift retrain whose evidence names an onset waits until `training.drift_aware.min_post_onset_days`
   matured days follow it: it is recorded as a pending deferral (skipped, not failed) and trained by the
   first later run — the daily `features` event included — whose data has them (`training.monitoring.retrain_deferral`).
2. `train` — LR + XGBoost search on the pinned data version (from the Asset event, else the newest),
   logged to MLflow with lineage tags; the best is registered as `@challenger`.
3. `evaluate` — gates against `@champion` on the frozen holdout (floors, paired-bootstrap
   non-regression, slices, signature, latency/size); promotes or rejects, audited, with a report.
4. `announce_champion` — emits the `closedloop_champion` Asset only when the alias moved.

With no published data version yet, `decide` *skips* the run and says why (nothing to train on is
not a failure). With `execution.mode: kubernetes` in the config, `train` and `evaluate` (as listed in
`execution.stages`) run as pods: `python -m training train|evaluate ...` with the same arguments,
their JSON result handed over as the task's XCom.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task
from closedloop.assets import assets_for
from closedloop.runtime import (
    dag_id,
    default_args,
    deployment_models,
    event_extras,
    load_runtime,
    parse_config,
)


def build(model: str | None) -> None:
    """The DAG of one model (`model` None: the one model of a one-model deployment)."""
    config = parse_config(model)
    execution = config.execution
    assets = assets_for(model)

    @dag(
        dag_id=dag_id(model, "train_model"),
        schedule=[assets.features],
        start_date=dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=["closedloop", "ml"],
        doc_md=__doc__,
        params={
            "reason": Param(None, type=["null", "string"], description="why retrain: manual, drift_monitor:..., ..."),
            "evidence": Param({}, type=["object", "null"], description="what made someone ask (JSON)"),
            "data_version": Param(None, type=["null", "string"], description="pin a data version (DVC md5)"),
            "signature_override_reason": Param(None, type=["null", "string"],
                                               description="accept a changed input schema (audited)"),
        },
        # train/evaluate/decide are idempotent per run (keyed on the run id): retry service faults
        default_args=default_args(),
    )
    def train_model():
        @task.short_circuit
        def decide(**context) -> dict | bool:
            """Train only with a reason, without a champion, or once the cadence has passed."""
            from airflow.sdk.exceptions import AirflowSkipException

            from training.monitoring.retrain_policy import NothingToTrain, decide_run

            cfg, paths = load_runtime(model)
            params = context["params"]
            versions = [x["data_version"] for x in event_extras(context) if x.get("data_version")]
            try:  # a version pinned by conf or the Asset event that is unknown is an error, not a skip
                run, why = decide_run(
                    paths, cfg, reason=params.get("reason"), evidence=params.get("evidence"),
                    data_version=params.get("data_version") or (versions[-1] if versions else None),
                    airflow_run_id=context["run_id"],
                )
            except NothingToTrain as exc:
                raise AirflowSkipException(f"nothing to train on: {exc}") from None
            print(f"{'train' if run else 'skip'}: {why}")
            return run or False

        @task
        def train(decision: dict, **context) -> dict:
            from training.model.train import TrainRequest, train_model
            from training.monitoring import retrain_deferral

            cfg, paths = load_runtime(model)
            request = TrainRequest(
                reason=decision["reason"],
                evidence=decision["evidence"],  # the trigger's, or the pending deferral's
                data_version=decision["data_version"],
                airflow_dag_id=context["dag"].dag_id,
                airflow_run_id=context["run_id"],
            )
            result = train_model(paths, cfg, request)
            if decision.get("deferral_id") is not None:
                retrain_deferral.resolve(paths, decision["deferral_id"], result.version, result.data_version)
            return result.to_dict()

        @task
        def evaluate(trained: dict, **context) -> dict:
            from training.model.evaluate import evaluate_challenger

            cfg, paths = load_runtime(model)
            result = evaluate_challenger(
                paths,
                cfg,
                version=trained["version"],
                signature_override_reason=context["params"].get("signature_override_reason"),
                airflow_run_id=context["run_id"],
            )
            print(f"decision: {result.action} (failed gates: {result.failed_gates}); report {result.report_uri}")
            return result.to_dict()

        @task.short_circuit
        def promoted(result: dict) -> bool:
            return result["action"] in ("promote", "first_promote")

        @task(outlets=[assets.champion])
        def announce_champion(result: dict, **context) -> None:
            context["outlet_events"][assets.champion].extra = {
                "model_name": result["model_name"],
                "champion_version": result["challenger_version"],
                "previous_champion": result["champion_version"],
            }

        decision = decide()
        if execution.in_pod("train"):
            from closedloop.pods import stage_pod

            trained = stage_pod(execution, "train", "train", [
                "--reason={{ ti.xcom_pull(task_ids='decide')['reason'] }}",
                "--evidence={{ ti.xcom_pull(task_ids='decide')['evidence'] | tojson }}",
                "--data-version={{ ti.xcom_pull(task_ids='decide')['data_version'] }}",
                "--airflow-dag-id={{ dag.dag_id }}",
                "--airflow-run-id={{ run_id }}",
            ], model=model)
            decision >> trained
            trained = trained.output
        else:
            trained = train(decision)
        if execution.in_pod("evaluate"):
            from closedloop.pods import stage_pod

            evaluated = stage_pod(execution, "evaluate", "evaluate", [
                "--version={{ ti.xcom_pull(task_ids='train')['version'] }}",
                "--signature-override-reason={{ params.signature_override_reason or '' }}",
                "--airflow-run-id={{ run_id }}",
            ], model=model)
            trained >> evaluated
            result = evaluated.output
        else:
            result = evaluate(trained)
        promoted(result) >> announce_champion(result)

    train_model()


for _model in deployment_models():
    build(_model)
