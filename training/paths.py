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
    """`root` holds one model's state; `deployment_root` what its models share (MLflow, Airflow).

    A one-model deployment keeps both in `$CLOSEDLOOP_HOME`; in a several-model deployment each model
    (`$CLOSEDLOOP_MODEL`) has `$CLOSEDLOOP_HOME/models/<model>/` for its source, data, warehouse,
    quarantine, ledger and reports, so two models never write each other's tables or data versions.
    """

    root: Path
    deployment_root: Path | None = None

    @classmethod
    def from_env(cls) -> StatePaths:
        return cls.for_model(settings().model)

    @classmethod
    def for_model(cls, model: str | None) -> StatePaths:
        home = (settings().home or PROJECT_ROOT / ".closedloop").resolve()
        return cls(home / "models" / model, home) if model else cls(home)

    @property
    def shared(self) -> Path:
        return self.deployment_root or self.root

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
        return self.shared / "mlflow" / "mlflow.db"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.shared / "mlflow" / "artifacts"

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
        return self.shared / "airflow"

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
