"""A deployment's models: one config (the default) or a folder of them, and the model a process acts for.

A one-model deployment reads `$CLOSEDLOOP_CONFIG` (else config/closedloop.yaml) and its DAGs keep
their plain ids. Setting `$CLOSEDLOOP_MODELS_DIR` makes it a several-model deployment: each
`<model>.yaml` there gets its own DAGs (ids prefixed `<model>__`), state directory, warehouse, Assets,
pools and registry name. Which model a task or CLI call acts for travels in one variable,
`$CLOSEDLOOP_MODEL`, so every stage below (config, state paths, dbt, the ledger) follows it without
being handed the model.
"""

from __future__ import annotations

import os

from training.config import ConfigError, model_names, models_dir
from training.settings import MODEL_ENV_VAR, settings

#: Separates a model's name from the DAG's in a several-model deployment (`<model>__train_model`).
DAG_ID_SEPARATOR = "__"


def deployment_models() -> list[str | None]:
    """The models this deployment runs: `[None]` for a one-model deployment, else every config's model."""
    if settings().models_dir is None:
        return [None]
    names = model_names()
    if not names:
        raise ConfigError(
            f"CLOSEDLOOP_MODELS_DIR={models_dir()} holds no <model>.yaml: add one config per model, "
            "or unset it for a one-model deployment"
        )
    if settings().dbt_target == "postgres" and len(names) > 1:
        raise ConfigError(
            f"{len(names)} models in {models_dir()} on the PostgreSQL warehouse: the models' raw/ml/published "
            "schemas would share one database. Several models per deployment run on the embedded (DuckDB) "
            "warehouse, one file per model; on PostgreSQL run one deployment per model (its own "
            "CLOSEDLOOP_PG_DBNAME and CLOSEDLOOP_CONFIG)"
        )
    return list(names)


def use_model(model: str | None) -> None:
    """Act for `model` from now on in this process (a task process, the CLI); None leaves it as set."""
    if model:
        os.environ[MODEL_ENV_VAR] = model


def dag_id(model: str | None, name: str) -> str:
    """`name` in a one-model deployment, `<model>__<name>` in a several-model one."""
    return f"{model}{DAG_ID_SEPARATOR}{name}" if model else name


def pool_name(model: str | None, pool: str) -> str:
    """Each model's warehouse is its own DuckDB file: its single-writer pool is its own too."""
    return f"{model}{DAG_ID_SEPARATOR}{pool}" if model else pool
