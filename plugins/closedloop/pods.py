"""Heavy stages as Kubernetes pods: the same `python -m training <stage>` a local task runs in-process.

Used when one machine is not enough (services profile; `execution.mode: kubernetes` in the config
picks the stages). The image is the one the compose file builds (`Dockerfile`); state lives on shared
storage mounted at the same path (`execution.state_volume_claim`), and the stores (PostgreSQL
ledger/warehouse, MLflow server) come from the environment, so the pod needs no Airflow connection
of its own. Passwords reach the pod from a Kubernetes Secret (`execution.env_from_secret`), never by
copying the scheduler's environment into the pod spec.

The result hand-over is the local task's: the CLI writes its JSON result to the file the XCom sidecar
reads (`--xcom-json /airflow/xcom/return.json`), so downstream tasks get the same dict.

The Kubernetes provider is imported only when a pod is built: plain local DAGs never pay for it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from training.config import ExecutionSpec

#: Non-secret settings the stage needs, copied from the DAG processor's environment when it parses.
FORWARDED_ENV = (
    "CLOSEDLOOP_HOME", "CLOSEDLOOP_CONFIG", "CLOSEDLOOP_MODELS_DIR", "CLOSEDLOOP_OPS_DB_URL", "CLOSEDLOOP_DBT_TARGET",
    "CLOSEDLOOP_WAREHOUSE", "MLFLOW_TRACKING_URI", "CLOSEDLOOP_PG_HOST", "CLOSEDLOOP_PG_PORT",
    "CLOSEDLOOP_PG_USER", "CLOSEDLOOP_PG_DBNAME", "CLOSEDLOOP_PG_THREADS",
)
#: Where KubernetesPodOperator's sidecar reads a pod's XCom from (`do_xcom_push=True`).
XCOM_RETURN_PATH = "/airflow/xcom/return.json"


def training_pod(task_id: str, stage: str, args: Sequence[str] = (), *, image: str | None = None,
                 namespace: str = "closedloop", cpu: str = "2", memory: str = "8Gi",
                 cpu_limit: str | None = None, memory_limit: str | None = None,
                 service_account: str | None = None, env_from_secret: str | None = None,
                 state_volume_claim: str | None = None, do_xcom_push: bool = True,
                 model: str | None = None, **kwargs: Any) -> KubernetesPodOperator:
    """A pod running one CLI stage, e.g. `training_pod("train", "train", ["--reason", "{{ params.reason }}"])`.

    With `do_xcom_push` (default) the stage writes its JSON result for the XCom sidecar, so the
    task's return value is the dict the in-process task returns. `image` defaults to `$CLOSEDLOOP_IMAGE`.
    `model`: the model of a several-model deployment the stage acts for (`$CLOSEDLOOP_MODEL` in the pod).
    """
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    from training.settings import MODEL_ENV_VAR, settings

    limits = {k: v for k, v in (("cpu", cpu_limit), ("memory", memory_limit)) if v}
    volumes, mounts = [], []
    if state_volume_claim:
        home = settings().home
        if home is None:
            raise ValueError(
                "execution.state_volume_claim is set but CLOSEDLOOP_HOME is not: the claim is mounted "
                "at the state directory's path, so set CLOSEDLOOP_HOME where the DAGs are parsed"
            )
        volumes.append(k8s.V1Volume(
            name="closedloop-state",
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=state_volume_claim),
        ))
        mounts.append(k8s.V1VolumeMount(name="closedloop-state", mount_path=str(home)))
    return KubernetesPodOperator(
        task_id=task_id,
        name=f"closedloop-{stage}",
        namespace=namespace,
        image=image or settings().image,
        cmds=["python", "-m", "training"],
        arguments=[stage, *args, *(["--xcom-json", XCOM_RETURN_PATH] if do_xcom_push else [])],
        env_vars={k: os.environ[k] for k in FORWARDED_ENV if k in os.environ} | ({MODEL_ENV_VAR: model} if model else {}),
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=env_from_secret))]
        if env_from_secret else None,
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": cpu, "memory": memory}, limits=limits or None
        ),
        volumes=volumes or None,
        volume_mounts=mounts or None,
        service_account_name=service_account,
        do_xcom_push=do_xcom_push,
        get_logs=True,
        on_finish_action="delete_succeeded_pod",
        # A pod spec is strings: under a DAG's native rendering (drift_monitor) the env value "5432"
        # would become an int, which the Kubernetes API rejects, and cpu "1" a number. (Airflow 3.3
        # still renders with the DAG's native environment, only concatenating as strings, so each
        # `{{ }}` in `args` must yield a string - use `| string` for a non-string XCom.)
        render_template_as_native_obj=False,
        **kwargs,
    )


def stage_pod(execution: ExecutionSpec, task_id: str, stage: str, args: Sequence[str] = (),
              **kwargs: Any) -> KubernetesPodOperator:
    """`training_pod` with image, namespace, resources and mounts from the config's `execution` section."""
    res = execution.resources_for(stage)  # type: ignore[arg-type]
    return training_pod(
        task_id, stage, args,
        image=execution.image, namespace=execution.namespace,
        cpu=res.cpu, memory=res.memory, cpu_limit=res.cpu_limit, memory_limit=res.memory_limit,
        service_account=execution.service_account, env_from_secret=execution.env_from_secret,
        state_volume_claim=execution.state_volume_claim,
        **kwargs,
    )
