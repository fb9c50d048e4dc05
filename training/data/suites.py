"""The expectation suites and the Great Expectations project that holds them.

- Suites live as JSON in `include/expectations/` (one per published table) and are re-synced into
  a file context under `StatePaths.gx` on every run, so Data Docs persist between runs and an edited
  suite takes effect without a migration step.
- GX over DuckDB through SQL fails (duckdb 2 + SQLAlchemy 2.1), so every batch is validated as a
  pandas dataframe (one dataframe asset per suite, whole-dataframe batch definition).

GX is imported lazily: importing this module costs nothing, so DAG files and plugins can import it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from training.config import PROJECT_ROOT
from training.errors import ClosedloopError
from training.paths import StatePaths

if TYPE_CHECKING:  # pragma: no cover
    from great_expectations.data_context import AbstractDataContext

EXPECTATIONS_DIR = PROJECT_ROOT / "include" / "expectations"
DATASOURCE_NAME = "closedloop_dataframes"
BATCH_DEFINITION_NAME = "whole_dataframe"
DATA_DOCS_ACTION_NAME = "update_data_docs"

# Loggers GX (and the libraries it drives) write INFO chatter to; under Airflow every stdlib record
# is rendered through structlog, so a single validation would print hundreds of lines.
_NOISY_LOGGERS = ("great_expectations", "great_expectations.core", "great_expectations.data_context",
                  "great_expectations.expectations", "great_expectations.render", "great_expectations.datasource",
                  "great_expectations.execution_engine", "great_expectations.validator", "tzlocal",
                  "altair", "marshmallow")


class SuiteError(ClosedloopError, ValueError):
    """An expectation suite file is missing or invalid; the message names the file and the fix."""


def suite_names(expectations_dir: Path = EXPECTATIONS_DIR) -> list[str]:
    """The suites shipped in `include/expectations/` (file stem = suite name = GX asset name)."""
    return sorted(p.stem for p in expectations_dir.glob("*.json"))


def load_suite_file(suite_name: str, expectations_dir: Path = EXPECTATIONS_DIR) -> dict[str, Any]:
    """The suite's JSON as a dict, checked for the fields the gate relies on."""
    path = expectations_dir / f"{suite_name}.json"
    if not path.is_file():
        raise SuiteError(
            f"no expectation suite {suite_name!r}: {path} does not exist "
            f"(available: {', '.join(suite_names(expectations_dir)) or 'none'})"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SuiteError(f"suite file {path} is not valid JSON: {exc}") from None
    if data.get("name") != suite_name:
        raise SuiteError(f"suite file {path} must have \"name\": {suite_name!r} (found {data.get('name')!r})")
    expectations = data.get("expectations")
    if not isinstance(expectations, list) or not expectations:
        raise SuiteError(f"suite file {path} needs a non-empty \"expectations\" list")
    for i, exp in enumerate(expectations):
        if not isinstance(exp, dict) or "type" not in exp or "kwargs" not in exp:
            raise SuiteError(f"suite file {path}: expectation #{i} needs \"type\" and \"kwargs\"")
        if not (exp.get("meta") or {}).get("guards"):
            raise SuiteError(
                f"suite file {path}: expectation #{i} ({exp['type']}) has no meta.guards; "
                "say which risk it guards against"
            )
    return data


def default_table_name(suite_name: str, expectations_dir: Path = EXPECTATIONS_DIR) -> str:
    """The warehouse table a suite describes (`meta.table`), else the suite name."""
    return str((load_suite_file(suite_name, expectations_dir).get("meta") or {}).get("table") or suite_name)


def quiet_gx() -> None:
    """Silence GX's INFO chatter and progress bars (called before GX is imported or used)."""
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def get_context(paths: StatePaths) -> AbstractDataContext:
    """A file-backed GX context rooted at `StatePaths.gx` (Data Docs and results persist there)."""
    quiet_gx()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    paths.gx.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(paths.gx))
    variables = context.variables
    current: Any = variables.progress_bars
    bars: dict[str, Any] = dict(current) if isinstance(current, dict) else vars(current) if current is not None else {}
    if variables.config.analytics_enabled is not False or bars.get("globally", True) or bars.get(
        "metric_calculations", True
    ):
        variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        variables.config.analytics_enabled = False
        variables.save()
    return context


def sync_suites(
    context: AbstractDataContext,
    expectations_dir: Path = EXPECTATIONS_DIR,
    names: list[str] | None = None,
) -> list[str]:
    """Add or update suites from their JSON files (by name: re-running never duplicates).

    The file's hash is kept in the stored suite's `meta.source_sha256`; an unchanged file is not
    re-written, so a run costs one read instead of a store update and a Data Docs re-render.
    """
    quiet_gx()
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.exceptions import DataContextError

    names = names if names is not None else suite_names(expectations_dir)
    for name in names:
        data = load_suite_file(name, expectations_dir)
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        try:
            stored = context.suites.get(name)
        except DataContextError:
            stored = None
        if stored is not None and (stored.meta or {}).get("source_sha256") == digest:
            continue
        try:
            suite = ExpectationSuite(
                name=data["name"],
                expectations=data["expectations"],
                meta={**(data.get("meta") or {}), "source_sha256": digest},
            )
        except Exception as exc:  # GX raises several kinds for unknown types / bad kwargs
            raise SuiteError(f"suite {name!r} ({expectations_dir / (name + '.json')}) is invalid: {exc}") from exc
        context.suites.add_or_update(suite)
    return names


def _naive_utc(value: Any, name: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"parameter {name!r} must be a date/time, got {value!r}: {exc}") from None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def build_parameters(
    suite_meta: Mapping[str, Any], batch_date: dt.date | None, parameters: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Suite defaults (`meta.parameters`) < caller's parameters; the interval defaults to the batch day.

    Timestamps are normalised to naive UTC, matching the warehouse's `timestamp` columns.
    """
    defaults: dict[str, Any] = dict(suite_meta.get("parameters") or {})
    merged = dict(defaults)
    for key, value in (parameters or {}).items():
        # values rendered from Airflow templates arrive as text: follow the default's type
        if isinstance(defaults.get(key), int) and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ValueError(f"suite parameter {key!r} must be an integer, got {value!r}") from None
        merged[key] = value
    if batch_date is not None:
        merged.setdefault("interval_start", dt.datetime.combine(batch_date, dt.time()))
        merged.setdefault("interval_end", dt.datetime.combine(batch_date + dt.timedelta(days=1), dt.time()))
    missing = [p for p in suite_meta.get("required_parameters") or [] if merged.get(p) is None]
    if missing:
        raise ValueError(
            f"suite parameters {missing} are required: pass them in `parameters` or pass a batch_date "
            "(the interval then defaults to that day)"
        )
    for key in ("interval_start", "interval_end"):
        if key in merged:
            merged[key] = _naive_utc(merged[key], key)
    if "interval_start" in merged and "interval_end" in merged and merged["interval_end"] <= merged["interval_start"]:
        raise ValueError(
            f"interval_end ({merged['interval_end']}) must be after interval_start ({merged['interval_start']}); "
            "an Airflow run whose data interval is empty should pass batch_date only"
        )
    return merged


def ensure_checkpoint(context: AbstractDataContext, suite_name: str, index_columns: list[str]) -> Any:
    """Datasource → dataframe asset → batch definition → validation definition → checkpoint, idempotently."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    datasource: Any
    try:
        datasource = context.data_sources.get(DATASOURCE_NAME)
    except (KeyError, LookupError, ValueError):
        datasource = context.data_sources.add_pandas(DATASOURCE_NAME)
    try:
        asset = datasource.get_asset(suite_name)
    except LookupError:
        asset = datasource.add_dataframe_asset(suite_name)
    try:
        batch_definition = asset.get_batch_definition(BATCH_DEFINITION_NAME)
    except KeyError:
        batch_definition = asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION_NAME)
    suite = context.suites.get(suite_name)
    validation = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{suite_name}_validation", data=batch_definition, suite=suite)
    )
    result_format: dict[str, Any] = {"result_format": "COMPLETE", "partial_unexpected_count": 5}
    if index_columns:
        result_format["unexpected_index_column_names"] = index_columns
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{suite_name}_checkpoint",
            validation_definitions=[validation],
            actions=[UpdateDataDocsAction(name=DATA_DOCS_ACTION_NAME)],
            result_format=result_format,
        )
    )
