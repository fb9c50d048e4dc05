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
   non-regression, slices, signature, latency/size), with a report; a rejection is audited here, a
   passing challenger's promotion risks are classified (`training.model.approval`).
4. `route` — a branch: a rejected challenger goes to `challenger_rejected`; an ordinary promotion
   straight to `promote`; a risky one (first champion, recovery policy, signature change, a large
   score-distribution shift, or `approval.mode: always`) first to `approve_promotion`, an Airflow
   Human-in-the-loop task showing the decision report, answered in the UI's Required Actions or
   through the REST API (`PATCH .../taskInstances/approve_promotion/-1/hitlDetails`), with a comment.
   With no answer within `approval.timeout_hours` Airflow applies `approval.on_timeout`.
5. `promote` — moves `@champion` (audited as before), or records the person's rejection; the
   approver (or `timeout:<default>`), comment and time go into the audit row and the report.
6. `outcome` — a branch: `announce_champion` emits the `closedloop_champion` Asset when the alias
   moved; `challenger_rejected` is the run's last task when the challenger was rejected (by the gates
   or by a person). A rejected run is therefore visibly different in the grid (its final green task
   is `challenger_rejected`, `announce_champion` skipped), and the rejection is in the audit log.
7. `score_first_champion_day` — only after the first promotion of a run started by features events:
   triggers `batch_inference` for that day, which its own run (started by the same event, beside this
   one) could not score without a champion.

Notifications (`notifications:` in the config; none configured, none sent): `decide` tells of a
retrain deferred for labels, `evaluate` of a gate rejection and `promote` of the promotion or the
person's rejection (with the decision report),
any failed task of the failed run. The audit rows carry the trigger reason and the actor
(`conf.actor`, else the triggering user, else `scheduler`).

With no published data version yet, `decide` *skips* the run and says why (nothing to train on is
not a failure). With `execution.mode: kubernetes` in the config, `train` and `evaluate` (as listed in
`execution.stages`) run as pods: `python -m training train|evaluate ...` with the same arguments,
their JSON result handed over as the task's XCom.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task
from closedloop.assets import assets_for
from closedloop.notifiers import ClosedloopNotifier
from closedloop.runtime import (
    actor_of,
    dag_id,
    default_args,
    deployment_models,
    event_extras,
    first_champion_day,
    load_runtime,
    parse_config,
)


class PromotionApproval(HITLOperator):
    """Asks a person whether to promote a risky, gate-approved challenger; the form shows its report.

    The subject and body are built when the task runs, from `evaluate`'s result and the decision
    report in MLflow, so the person reads exactly what the gates decided and why it is risky.
    """

    def __init__(self, *, model: str | None, **kwargs) -> None:
        super().__init__(subject="Promote the challenger?", **kwargs)
        self.model = model

    def execute(self, context):
        import mlflow.artifacts

        from training.model import tracking

        held = context["ti"].xcom_pull(task_ids="evaluate")
        cfg, paths = load_runtime(self.model)
        tracking.client(paths)
        report = mlflow.artifacts.load_text(held["report_uri"]) if held.get("report_uri") else "(no report)"
        kinds = ", ".join(r["kind"] for r in held["risks"]) or "always ask"
        was = f"replacing v{held['champion_version']}" if held["champion_version"] else "first champion"
        self.subject = f"Promote {held['model_name']} v{held['challenger_version']} to champion ({was})? Risk: {kinds}"
        self.body = (
            f"**Risks:** {kinds}. The gates passed; a person decides. Without an answer within "
            f"{cfg.approval.timeout_hours:g} h the default is **{cfg.approval.on_timeout}**.\n\n"
            f"Decision report: `{held['report_uri']}`\n\n---\n\n{report}"
        )
        return super().execute(context)


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
            "actor": Param(None, type=["null", "string"],
                           description="who asks, for the audit log (default: the triggering user, else scheduler)"),
            "signature_override_reason": Param(None, type=["null", "string"],
                                               description="accept a changed input schema (audited)"),
        },
        # train/evaluate/decide are idempotent per run (keyed on the run id): retry service faults
        default_args=default_args(model),
    )
    def train_model():
        @task.short_circuit(on_success_callback=ClosedloopNotifier(model, "deferral"))
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
            from closedloop import lineage

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
            lineage.record(context, inputs=[lineage.data_version(cfg, result.data_version)],
                           outputs=[lineage.model_version(result.model_name, result.version)])
            if decision.get("deferral_id") is not None:
                retrain_deferral.resolve(paths, decision["deferral_id"], result.version, result.data_version)
            return result.to_dict()

        @task(on_success_callback=ClosedloopNotifier(model, "gate_decision"))
        def evaluate(trained: dict, **context) -> dict:
            """Gates decide; a rejection is audited here, a passing challenger is held for `promote`."""
            from training.model.evaluate import evaluate_challenger

            cfg, paths = load_runtime(model)
            result = evaluate_challenger(
                paths,
                cfg,
                version=trained["version"],
                signature_override_reason=context["params"].get("signature_override_reason"),
                airflow_run_id=context["run_id"],
                actor=actor_of(context),
                hold=True,
            )
            print(f"decision: {result.action} (failed gates: {result.failed_gates}; risks: "
                  f"{[r['kind'] for r in result.risks]}); report {result.report_uri}")
            return result.to_dict()

        @task.branch
        def route(result: dict) -> str:
            """Rejected: end in `challenger_rejected`. Passed: `promote`, asking a person first if risky."""
            if not result["promote"]:
                return "challenger_rejected"
            if result["action"] == "held" and result["needs_approval"]:
                return "approve_promotion"
            return "promote"

        approve_promotion = PromotionApproval(
            task_id="approve_promotion",
            model=model,
            # the options of Airflow's ApprovalOperator (training.model.approval reads them back); a plain
            # HITLOperator because a "Reject" must reach `promote` to be audited, not skip it
            options=[ApprovalOperator.APPROVE, ApprovalOperator.REJECT],
            defaults=[ApprovalOperator.APPROVE if config.approval.on_timeout == "approve" else ApprovalOperator.REJECT],
            params={"comment": Param("", type="string", description="why (goes into the audit log and the report)")},
            response_timeout=dt.timedelta(hours=config.approval.timeout_hours),
            notifiers=[ClosedloopNotifier(model, "approval")],  # tells the routes a question waits
            retries=0,  # asking twice would ask the person twice
        )

        @task(trigger_rule="none_failed_min_one_success",
              on_success_callback=ClosedloopNotifier(model, "gate_decision"))
        def promote(**context) -> dict:
            """Move `@champion`, or record a person's rejection; the answer goes into the audit row."""
            from training.model import approval
            from training.model.evaluate import EvaluationResult, settle

            cfg, paths = load_runtime(model)
            ti = context["ti"]
            held = EvaluationResult(**ti.xcom_pull(task_ids="evaluate"))
            response = ti.xcom_pull(task_ids="approve_promotion") if held.needs_approval else None
            answer = None if response is None else approval.answer_from_response(response, cfg.approval)
            result = settle(paths, cfg, held, answer, airflow_run_id=context["run_id"], actor=actor_of(context))
            print(f"{result.action}: {result.model_name} v{result.challenger_version}"
                  + (f" ({answer.summary})" if answer else " (no approval needed)"))
            return result.to_dict()

        @task.branch
        def outcome(result: dict) -> str:
            """Promoted: announce the new champion. Rejected by a person: end in `challenger_rejected`."""
            return "announce_champion" if result["action"] in ("promote", "first_promote") else "challenger_rejected"

        @task(trigger_rule="none_failed_min_one_success")
        def challenger_rejected(**context) -> dict:
            """The run's final task when the challenger was rejected (gates or person): says so in the grid."""
            ti = context["ti"]
            result = ti.xcom_pull(task_ids="promote") or ti.xcom_pull(task_ids="evaluate")
            print(f"REJECTED: {result['model_name']} v{result['challenger_version']} failed "
                  f"{', '.join(result['failed_gates'])}; v{result['champion_version']} stays champion. "
                  f"Report: {result['report_uri']}")
            return {"rejected": result["challenger_version"], "failed_gates": result["failed_gates"]}

        @task(outlets=[assets.champion])
        def announce_champion(result: dict, **context) -> None:
            context["outlet_events"][assets.champion].extra = {
                "model_name": result["model_name"],
                "champion_version": result["challenger_version"],
                "previous_champion": result["champion_version"],
            }

        @task.short_circuit
        def first_champion_scores_its_day(result: dict, **context) -> str | bool:
            """The first champion's own day went unscored (`batch_inference` ran beside this run and
            found no champion): score it now, as `replay` does; any other promotion stops here."""
            day = first_champion_day(result, context)
            return day.isoformat() if day else False

        score_first_champion_day = TriggerDagRunOperator(
            task_id="score_first_champion_day",
            trigger_dag_id=dag_id(model, "batch_inference"),
            conf={"batch_date": "{{ ti.xcom_pull(task_ids='first_champion_scores_its_day') }}"},
            wait_for_completion=False,  # re-scoring a day replaces its partition: a retry is harmless
        )

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
                "--hold",
            ], model=model, on_success_callback=ClosedloopNotifier(model, "gate_decision"))
            trained >> evaluated
            result = evaluated.output
        else:
            result = evaluate(trained)
        routed = route(result)
        promoted = promote()
        rejected = challenger_rejected()
        routed >> [approve_promotion, promoted, rejected]
        approve_promotion >> promoted
        announced = announce_champion(promoted)
        outcome(promoted) >> [announced, rejected]
        announced >> first_champion_scores_its_day(promoted) >> score_first_champion_day

    train_model()


for _model in deployment_models():
    build(_model)
