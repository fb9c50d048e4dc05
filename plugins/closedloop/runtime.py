"""Small helpers shared by DAG files: config and state resolved at task run time, never at parse time."""

from __future__ import annotations

import datetime as dt
from typing import Any


def load_runtime() -> tuple[Any, Any]:
    """(Config, StatePaths) for the running task; imported lazily so DAG parsing stays light."""
    from training.config import load_config
    from training.paths import StatePaths

    return load_config(), StatePaths.from_env().ensure()


def batch_date_of(context: dict[str, Any]) -> dt.date:
    """The simulated business day a run processes: the start of its data interval."""
    start = context["data_interval_start"]
    return dt.date(start.year, start.month, start.day)
