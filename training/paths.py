"""Where every piece of run-time state lives: one directory, so `rm -rf` of it is a clean reset.

The directory is `$CLOSEDLOOP_HOME`, else `.closedloop/` beside the project. Nothing here creates
directories at import time; `StatePaths.ensure()` does, when a stage is about to write.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.config import PROJECT_ROOT
from training.settings import settings


@dataclass(frozen=True)
class StatePaths:
    root: Path

    @classmethod
    def from_env(cls) -> StatePaths:
        return cls((settings().home or PROJECT_ROOT / ".closedloop").resolve())

    # --- source system stand-in (the simulator writes here, ingest reads) ---
    @property
    def source(self) -> Path:
        return self.root / "source"

    # --- DVC-versioned data (a DVC repo without git) and its local remote ---
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def raw(self) -> Path:
        return self.data / "raw"

    @property
    def published(self) -> Path:
        return self.data / "published"

    @property
    def dvc_remote(self) -> Path:
        return self.root / "dvc-remote"

    # --- warehouse ---
    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def dbt_target(self) -> Path:
        return self.root / "dbt" / "target"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def gx(self) -> Path:
        return self.root / "gx"

    # --- MLflow ---
    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow" / "mlflow.db"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlflow" / "artifacts"

    @property
    def holdouts(self) -> Path:
        return self.root / "holdouts"

    # --- audit / monitoring / reports ---
    @property
    def reports(self) -> Path:
        return self.root / "reports"

    # --- Airflow ---
    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    def ensure(self) -> StatePaths:
        for path in (
            self.source,
            self.raw,
            self.published,
            self.dvc_remote,
            self.dbt_target,
            self.quarantine,
            self.gx,
            self.mlflow_db.parent,
            self.mlflow_artifacts,
            self.holdouts,
            self.reports,
            self.airflow_home,
        ):
            path.mkdir(parents=True, exist_ok=True)
        return self
