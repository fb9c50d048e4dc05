"""OpenLineage for the closedloop tasks: one place that names every dataset of the loop.

The Airflow OpenLineage provider emits a START and a COMPLETE event per task once a transport is
configured (`[openlineage] transport` or `OPENLINEAGE_URL`; see README "OpenLineage"). cosmos adds
the dbt models' inputs and outputs itself. Our `@task` functions know their datasets only when they
run (the day's landed file, the DVC md5, the registered model version), so each one calls
`record(context, inputs=..., outputs=...)`, and `ClosedloopTaskExtractor` (registered through
`[openlineage] extractors`) hands them to the provider's listener, which calls it in the same
process when the task completes (cosmos keeps its dbt events on the operator the same way).

Names (one graph per deployment; several models never share a node):
* warehouse tables: exactly as dbt/cosmos names them, so the dbt jobs connect to ours -
  DuckDB `duckdb://<warehouse file>` / `<file stem>.<schema>.<table>`, PostgreSQL
  `postgres://<host>:<port>` / `<dbname>.<schema>.<table>` (each model has its own warehouse);
* landed feed files: `file` / the file's absolute path (the raw batch of the day);
* DVC data versions: `dvc://<lineage namespace>` / `<model>/<dataset>@<md5>`;
* MLflow model versions: `mlflow://<lineage namespace>` / `<registered model>/<version>`;
* the monitor's decision record: `closedloop://<lineage namespace>` / `<model>/monitoring_decisions/<window end>`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow.providers.openlineage.extractors.base import BaseExtractor, OperatorLineage
from openlineage.client.event_v2 import Dataset

if TYPE_CHECKING:
    from training.config import Config
    from training.paths import StatePaths

#: What each running task instance recorded, by its key, until the listener reads it. The listener runs
#: in the task's own process (or a fork of it), and `RuntimeTaskInstance` takes no extra attributes.
_RECORDED: dict[tuple, tuple[list[Dataset], list[Dataset]]] = {}


def _key(ti) -> tuple:
    return (ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.try_number)


def lineage_namespace() -> str:
    """The deployment's lineage namespace (`[openlineage] namespace`, else `$OPENLINEAGE_NAMESPACE`)."""
    from airflow.providers.openlineage import conf

    return conf.namespace()


def warehouse_table(paths: StatePaths, table: str) -> Dataset:
    """A warehouse table (`schema.table`) named as dbt's OpenLineage processor names it."""
    schema, _, name = table.rpartition(".")
    if os.environ.get("CLOSEDLOOP_DBT_TARGET", "duckdb") == "postgres":
        host = os.environ.get("CLOSEDLOOP_PG_HOST", "127.0.0.1")
        port = os.environ.get("CLOSEDLOOP_PG_PORT", "5432")
        dbname = os.environ.get("CLOSEDLOOP_PG_DBNAME", "closedloop")
        return Dataset(namespace=f"postgres://{host}:{port}", name=f"{dbname}.{schema or 'public'}.{name}")
    return Dataset(namespace=f"duckdb://{paths.warehouse}", name=f"{paths.warehouse.stem}.{schema or 'main'}.{name}")


def landed_file(path: str) -> Dataset:
    """A landed feed file: the raw batch of its day."""
    return Dataset(namespace="file", name=str(path))


def data_version(cfg: Config, md5: str, dataset: str = "training_set") -> Dataset:
    """A DVC data version (`training.storage.versioning`): the immutable snapshot a model trains on."""
    return Dataset(namespace=f"dvc://{lineage_namespace()}", name=f"{cfg.model.name}/{dataset}@{md5}")


def model_version(model_name: str, version: str | int) -> Dataset:
    """A registered MLflow model version."""
    return Dataset(namespace=f"mlflow://{lineage_namespace()}", name=f"{model_name}/{version}")


def monitoring_decision(cfg: Config, window_end: str) -> Dataset:
    """The drift monitor's decision record of one window (a `monitoring_decisions` row)."""
    return Dataset(namespace=f"closedloop://{lineage_namespace()}",
                   name=f"{cfg.model.name}/monitoring_decisions/{window_end}")


def record(context: dict[str, Any], *, inputs: list[Dataset], outputs: list[Dataset]) -> None:
    """Declare what this task run read and wrote; the provider emits it with the task's COMPLETE event."""
    _RECORDED[_key(context["ti"])] = (list(inputs), list(outputs))


class ClosedloopTaskExtractor(BaseExtractor):
    """Hands the datasets a `@task` recorded to the OpenLineage listener (nothing before it ran)."""

    @classmethod
    def get_operator_classnames(cls) -> list[str]:
        return ["_PythonDecoratedOperator"]

    def _execute_extraction(self) -> OperatorLineage | None:
        return OperatorLineage()

    def extract_on_complete(self, task_instance) -> OperatorLineage | None:
        inputs, outputs = _RECORDED.get(_key(task_instance), ([], []))
        return OperatorLineage(inputs=inputs, outputs=outputs)
