"""The data-quality gate: validate a batch against its suite; on failure quarantine it and stop.

A failed gate quarantines the batch (`training.data.quarantine`) and raises
`DataQualityGateFailed`; the caller publishes nothing. The loaders name the frames the Airflow
operator can validate without being handed a callable.

GX is imported lazily: importing this module costs nothing, so DAG files and plugins can import it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from training.contract import DataContract
from training.data import quarantine
from training.data.suites import default_table_name
from training.data.validation import GateResult, run_checkpoint
from training.errors import ClosedloopError
from training.paths import StatePaths
from training.storage import warehouse


class DataQualityGateFailed(ClosedloopError, RuntimeError):
    """A batch failed its GX gate; it has been quarantined and must not be published.

    `result` carries the full `GateResult` (failed expectations, run id, Data Docs path).
    """

    def __init__(self, message: str, result: GateResult) -> None:
        super().__init__(message)
        self.result = result


def gate(
    suite_name: str,
    df: pd.DataFrame,
    batch_date: dt.date,
    paths: StatePaths,
    parameters: Mapping[str, Any] | None = None,
    *,
    table_name: str | None = None,
    run_name: str | None = None,
    expectations_dir: Path | None = None,
    contract: DataContract | None = None,
) -> GateResult:
    """Run the checkpoint; on failure quarantine the batch and raise `DataQualityGateFailed`.

    Returns the `GateResult` when the batch passed; the caller may then load/publish it.
    `contract` (default: the deployment's config) generates the raw feeds' suites.
    """
    table_name = table_name or default_table_name(suite_name, expectations_dir, contract)
    batch_id = f"{suite_name}/{batch_date.isoformat()}"
    result = run_checkpoint(
        suite_name, df, batch_id, paths, parameters,
        batch_date=batch_date, run_name=run_name, expectations_dir=expectations_dir, contract=contract,
    )
    if result.success:
        return result
    quarantine.record(result, df, batch_date, table_name, paths)
    message = (
        f"GX gate '{suite_name}' failed for batch {batch_id}: {result.summary()}. "
        f"Batch quarantined in {quarantine.REJECTED_BATCHES}; nothing was published. "
        "Fix the source batch and re-run the interval."
    )
    if result.data_docs_page or result.data_docs_path:
        message += f" Data Docs: {result.data_docs_page or result.data_docs_path}"
    raise DataQualityGateFailed(message, result)


# --------------------------------------------------------------------------------------------
# Loaders (what the Airflow operator can name instead of passing a callable)
# --------------------------------------------------------------------------------------------


def load_parquet(batch_date: dt.date, paths: StatePaths, *, path: str) -> pd.DataFrame:
    """A landed batch file (e.g. `ingest.land`'s Parquet for the interval)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"batch file {file} for {batch_date} does not exist: did the ingest task run?")
    return pd.read_parquet(file)


def load_warehouse_batch(
    batch_date: dt.date, paths: StatePaths, *, table: str, date_column: str = "batch_date"
) -> pd.DataFrame:
    """One batch_date's rows of a warehouse table, through a read-only connection."""
    schema, _, name = table.partition(".")
    if not name or not all(part.replace("_", "").isalnum() for part in (schema, name)):
        raise ValueError(f"table must be 'schema.table' with plain identifiers, got {table!r}")
    with warehouse.connect(paths, read_only=True) as con:
        if not con.table_exists(schema, name):
            raise FileNotFoundError(f"warehouse table {table} does not exist: did the dbt build run?")
        return con.frame(f"select * from {schema}.{name} where {date_column} = ? order by 1", [batch_date])


LOADERS: dict[str, Callable[..., pd.DataFrame]] = {
    "parquet": load_parquet,
    "warehouse": load_warehouse_batch,
}
