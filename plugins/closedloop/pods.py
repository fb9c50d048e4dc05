"""Heavy stages as Kubernetes pods: the same `python -m training <stage>` a local task runs in-process.

Used when one machine is not enough (services profile). The image is the one the compose file
builds (`Dockerfile`); state lives on shared storage mounted at the same path, and the stores
(PostgreSQL ledger/warehouse, MLflow server) come from the environment, so the pod needs no
Airflow connection of its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

DEFAULT_IMAGE = os.environ.get("CLOSEDLOOP_IMAGE", "closedloop:latest")
FORWARDED_ENV = (
    "CLOSEDLOOP_HOME", "CLOSEDLOOP_CONFIG", "CLOSEDLOOP_OPS_DB_URL", "CLOSEDLOOP_DBT_TARGET",
    "MLFLOW_TRACKING_URI", "CLOSEDLOOP_PG_HOST", "CLOSEDLOOP_PG_PORT", "CLOSEDLOOP_PG_USER", "CLOSEDLOOP_PG_DBNAME",
)


def training_pod(task_id: str, stage: str, args: Sequence[str] = (), *, image: str = DEFAULT_IMAGE,
                 namespace: str = "closedloop", cpu: str = "2", memory: str = "8Gi", **kwargs) -> KubernetesPodOperator:
    """A pod running one CLI stage, e.g. `training_pod("train", "train", ["--reason", "{{ params.reason }}"])`."""
    from kubernetes.client import models as k8s

    return KubernetesPodOperator(
        task_id=task_id,
        name=f"closedloop-{stage}",
        namespace=namespace,
        image=image,
        cmds=["python", "-m", "training"],
        arguments=[stage, *args],
        env_vars={k: os.environ[k] for k in FORWARDED_ENV if k in os.environ},
        container_resources=k8s.V1ResourceRequirements(requests={"cpu": cpu, "memory": memory}),
        get_logs=True,
        on_finish_action="delete_succeeded_pod",
        **kwargs,
    )
