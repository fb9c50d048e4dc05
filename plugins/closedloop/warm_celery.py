"""Celery config for the services profile: workers fork their pool with the tasks' libraries imported.

The Celery counterpart of `warm_executor.WarmLocalExecutor`. `airflow celery worker` runs a prefork
pool: the worker's main process forks the pool children, and each task process is forked from a
child (Airflow's task supervisor). Celery's `worker_init` signal fires in the main process after the
app is configured and before the pool is started, so importing `PRELOAD_MODULES` there puts pandas,
GX, MLflow, scikit-learn and Evidently in memory once; every child, and every task forked from it,
starts with them (copy-on-write) instead of paying seconds of imports per task.

Use it as `AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=closedloop.warm_celery.CELERY_CONFIG`: the config
is Airflow's default one unchanged (the scheduler imports it too; the signal only fires in workers).
`CLOSEDLOOP_PRELOAD_MODULES` chooses the modules as for the LocalExecutor (empty turns it off).

Measured once, one stack with a warm and a cold worker side by side, 10 `rollback_champion` runs
(imports the registry, i.e. MLflow) on the 2-core machine under heavy load (load average ~11):
Celery task wall time on the warm worker median 6.5 s (2.2 s once settled), on the cold one 11.5 s.
The preload itself costs the worker ~50 s at start-up on that machine (once, before it says ready).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

from closedloop.warm_executor import configured_modules, preload_modules

log = logging.getLogger(__name__)

CELERY_CONFIG: dict[str, Any] = dict(DEFAULT_CELERY_CONFIG)


@worker_init.connect
def preload_before_forking_the_pool(sender: Any = None, **_: Any) -> None:
    """Import the tasks' libraries in the worker's main process, before the pool children fork."""
    took = preload_modules(configured_modules())
    # print too: the worker's own log level may hide INFO, and this line is how start-up cost is checked
    message = f"warm celery worker preloaded {len(took)} modules in {sum(took.values()):.1f}s"
    log.info("%s: %s", message, took)
    print(message, flush=True)
