"""A LocalExecutor whose workers start with the tasks' heavy libraries already imported.

Airflow's LocalExecutor forks its workers from the scheduler, and each task process is forked from a
worker. Every closedloop task imports pandas, Great Expectations, MLflow, scikit-learn or Evidently
in its body (DAG files stay light), so each task paid 1-4 s of imports before doing any work - GX
alone is about 3 s, twice per day in `data_pipeline`. Importing them once in the scheduler before the
workers are forked makes every task start with them in memory (copy-on-write), the same idea as
gunicorn's `--preload` or Airflow's own `[scheduler] parsing_pre_import_modules` for the DAG processor.

Use it as `AIRFLOW__CORE__EXECUTOR=closedloop.warm_executor.WarmLocalExecutor`. The modules come from
`CLOSEDLOOP_PRELOAD_MODULES` (comma-separated; empty turns preloading off), default `PRELOAD_MODULES`.
A module that fails to import is logged and skipped: the task that needs it imports it itself and
reports the real error there.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
import warnings
from collections.abc import Mapping

from airflow.executors.local_executor import LocalExecutor

log = logging.getLogger(__name__)

PRELOAD_ENV_VAR = "CLOSEDLOOP_PRELOAD_MODULES"
#: What the closedloop tasks import in their bodies, heaviest first.
PRELOAD_MODULES: tuple[str, ...] = (
    "great_expectations",
    "mlflow",
    "mlflow.sklearn",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "evidently",
    "sklearn.pipeline",
    "xgboost",
    "skops.io",
    "pandas",
    "pyarrow.parquet",
    "duckdb",
    "matplotlib.pyplot",
    "training.data.quality",
    "training.model.train",
    "training.model.evaluate",
    "training.serving.inference",
    "training.monitoring.drift_job",
    "training.data.ingest",
)


def preload_modules(names: tuple[str, ...] | list[str]) -> dict[str, float]:
    """Import `names`, returning seconds per module imported; failures are logged, not raised."""
    from training.data.suites import quiet_gx

    os.environ.setdefault("MPLBACKEND", "Agg")  # no display in a scheduler
    quiet_gx()  # GX logs its API registration at INFO while importing
    took: dict[str, float] = {}
    for name in names:
        start = time.monotonic()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a preload must never stop the scheduler
            log.warning("preload of %s failed (%s: %s); tasks will import it themselves", name, type(exc).__name__, exc)
            continue
        took[name] = round(time.monotonic() - start, 2)
    return took


def configured_modules(environ: Mapping[str, str] | None = None) -> list[str]:
    """`CLOSEDLOOP_PRELOAD_MODULES` as a list; unset means `PRELOAD_MODULES`, empty means none."""
    env = os.environ if environ is None else environ
    raw = env.get(PRELOAD_ENV_VAR)
    if raw is None:
        return list(PRELOAD_MODULES)
    return [m.strip() for m in raw.split(",") if m.strip()]


class WarmLocalExecutor(LocalExecutor):
    """LocalExecutor that imports the tasks' libraries before forking its workers."""

    def start(self) -> None:
        if self.is_mp_using_fork:
            took = preload_modules(configured_modules())
            log.info("WarmLocalExecutor preloaded %d modules in %.1fs: %s", len(took), sum(took.values()), took)
        super().start()
