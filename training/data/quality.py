"""The data-quality gate: Great Expectations 1.x checkpoints over pandas frames, and the quarantine.

Why this shape:
- The Airflow GX provider cannot be installed next to Airflow 3.3 (structlog pin), so the gate runs
  GX's own `Checkpoint` with `UpdateDataDocsAction`; `plugins/closedloop/operators/great_expectations.py`
  wraps it in an operator shaped like the provider's, so the provider can be swapped in later.
- GX over DuckDB through SQL fails (duckdb 2 + SQLAlchemy 2.1), so every batch is validated as a
  pandas dataframe (one dataframe asset per suite, whole-dataframe batch definition).
- Suites live as JSON in `include/expectations/` (one per published table) and are re-synced into
  a file context under `StatePaths.gx` on every run, so Data Docs persist between runs and an edited
  suite takes effect without a migration step.
- A failed gate quarantines the batch (`quarantine.rejected_batches`, a Parquet copy under
  `StatePaths.quarantine`) and the offending rows GX can name (`quarantine.rejected_rows`), then
  raises `DataQualityGateFailed`; the caller publishes nothing.

GX is imported lazily: importing this module costs nothing, so DAG files and plugins can import it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from training.config import PROJECT_ROOT
from training.errors import ClosedloopError
from training.paths import StatePaths
from training.storage import warehouse

if TYPE_CHECKING:  # pragma: no cover
    from great_expectations.data_context import AbstractDataContext

__all__ = [
    "EXPECTATIONS_DIR",
    "DataQualityGateFailed",
    "GateResult",
    "LOADERS",
    "QuarantineRecord",
    "SuiteError",
    "build_parameters",
    "gate",
    "get_context",
    "load_parquet",
    "load_suite_file",
    "load_warehouse_batch",
    "quarantine",
    "run_checkpoint",
    "suite_names",
    "sync_suites",
]

EXPECTATIONS_DIR = PROJECT_ROOT / "include" / "expectations"
ID_COLUMN = "transaction_id"
DATASOURCE_NAME = "closedloop_dataframes"
BATCH_DEFINITION_NAME = "whole_dataframe"
DATA_DOCS_ACTION_NAME = "update_data_docs"
QUARANTINE_SCHEMA = "quarantine"
REJECTED_BATCHES = f"{QUARANTINE_SCHEMA}.rejected_batches"
REJECTED_ROWS = f"{QUARANTINE_SCHEMA}.rejected_rows"

_REJECTED_BATCHES_DDL = f"""
create table if not exists {REJECTED_BATCHES} (
    batch_date date, table_name varchar, suite varchar, reason varchar, failed_expectations json,
    row_count bigint, snapshot_path varchar, rejected_at timestamp
)"""
_REJECTED_ROWS_DDL = f"""
create table if not exists {REJECTED_ROWS} (
    batch_date date, table_name varchar, transaction_id varchar, expectation varchar, rejected_at timestamp
)"""

# Loggers GX (and the libraries it drives) write INFO chatter to; under Airflow every stdlib record
# is rendered through structlog, so a single validation would print hundreds of lines.
_NOISY_LOGGERS = ("great_expectations", "great_expectations.core", "great_expectations.data_context",
                  "great_expectations.expectations", "great_expectations.render", "great_expectations.datasource",
                  "great_expectations.execution_engine", "great_expectations.validator", "tzlocal",
                  "altair", "marshmallow")


class SuiteError(ClosedloopError, ValueError):
    """An expectation suite file is missing or invalid; the message names the file and the fix."""


class DataQualityGateFailed(ClosedloopError, RuntimeError):
    """A batch failed its GX gate; it has been quarantined and must not be published.

    `result` carries the full `GateResult` (failed expectations, run id, Data Docs path).
    """

    def __init__(self, message: str, result: GateResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class GateResult:
    """The verdict of one checkpoint run, small enough for XCom once `to_xcom()`-ed."""

    success: bool
    suite: str
    batch_id: str
    run_id: str
    failed: list[dict[str, Any]]
    data_docs_path: str | None
    statistics: dict[str, Any]
    row_count: int
    data_docs_page: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def evaluated(self) -> int:
        return int(self.statistics.get("evaluated_expectations", 0))

    def describe_failures(self) -> str:
        """`expect_x(column: details), expect_y (details)` for messages and the quarantine reason."""
        parts = []
        for item in self.failed:
            if item.get("column"):
                parts.append(f"{item['expectation']}({item['column']}: {item['details']})")
            else:
                parts.append(f"{item['expectation']} ({item['details']})")
        return ", ".join(parts)

    def to_xcom(self) -> dict[str, Any]:
        """A small JSON-safe summary (no row ids, no frames)."""
        return {
            "success": self.success,
            "suite": self.suite,
            "batch_id": self.batch_id,
            "run_id": self.run_id,
            "data_docs_path": self.data_docs_path,
            "failed_count": len(self.failed),
            "failed_expectations": [f["expectation"] for f in self.failed],
            "evaluated": self.evaluated,
            "row_count": self.row_count,
        }


@dataclass(frozen=True)
class QuarantineRecord:
    batch_date: dt.date
    table_name: str
    reason: str
    row_count: int
    rejected_rows: int
    snapshot_path: str


# --------------------------------------------------------------------------------------------
# Suites
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Running a checkpoint
# --------------------------------------------------------------------------------------------


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


def _ensure_checkpoint(context: AbstractDataContext, suite_name: str, index_columns: list[str]) -> Any:
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


def run_checkpoint(
    suite_name: str,
    df: pd.DataFrame,
    batch_id: str,
    paths: StatePaths,
    parameters: Mapping[str, Any] | None = None,
    *,
    batch_date: dt.date | None = None,
    run_name: str | None = None,
    expectations_dir: Path = EXPECTATIONS_DIR,
) -> GateResult:
    """Validate `df` against suite `suite_name` through a GX checkpoint; Data Docs are updated.

    `parameters` fill the suite's `{"$PARAMETER": ...}` placeholders (interval_start, interval_end,
    min_rows, max_rows); the interval defaults to `batch_date`'s day. Columns the suite lists in
    `meta.ignore_columns` (bookkeeping our ingest adds) are dropped before validation.
    """
    quiet_gx()  # before the first GX import: it logs at INFO while registering its API
    from great_expectations.core.run_identifier import RunIdentifier

    meta = load_suite_file(suite_name, expectations_dir).get("meta") or {}
    params = build_parameters(meta, batch_date, parameters)
    frame = df.drop(columns=[c for c in meta.get("ignore_columns") or [] if c in df.columns])
    # GX reports offending rows by id only when the id column exists; without it (renamed id)
    # asking for it would make every row-level expectation error out instead of failing cleanly.
    index_columns = [ID_COLUMN] if ID_COLUMN in frame.columns else []

    context = get_context(paths)
    sync_suites(context, expectations_dir, names=[suite_name])
    checkpoint = _ensure_checkpoint(context, suite_name, index_columns)
    run_time = dt.datetime.now(dt.UTC)
    # GX's file stores use the run name as a path component: keep it to filename-safe characters.
    safe_name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", run_name or batch_id).strip("_")
    run_id = RunIdentifier(run_name=safe_name, run_time=run_time)
    checkpoint_result = checkpoint.run(
        batch_parameters={"dataframe": frame}, expectation_parameters=params, run_id=run_id
    )
    (key, validation), *_ = checkpoint_result.run_results.items()

    # GX returns results in no stable order: report failures in suite order (schema first).
    order = {exp.id: i for i, exp in enumerate(context.suites.get(suite_name).expectations)}
    failed_results = sorted(
        (r for r in validation.results if not r.success),
        key=lambda r: order.get(r.expectation_config.id, len(order)),
    )
    failed = [_describe_failure(r, frame) for r in failed_results]
    docs_index = _docs_index(context)
    docs_page = _docs_page(context, key)
    return GateResult(
        success=bool(checkpoint_result.success),
        suite=suite_name,
        batch_id=batch_id,
        run_id=f"{run_id.run_name}@{run_time.strftime('%Y%m%dT%H%M%S.%fZ')}",
        failed=failed,
        data_docs_path=docs_index,
        data_docs_page=docs_page,
        statistics={k: _json_safe(v) for k, v in dict(validation.statistics).items()},
        row_count=len(frame),
        parameters={k: _json_safe(v) for k, v in params.items()},
    )


def _docs_index(context: AbstractDataContext) -> str | None:
    for site in context.get_docs_sites_urls():
        url = site.get("site_url") or ""
        if url.startswith("file://"):
            return url.removeprefix("file://")
    return None


def _docs_page(context: AbstractDataContext, key: Any) -> str | None:
    try:
        sites = context.get_docs_sites_urls(resource_identifier=key)
    except Exception:  # a docs page is a convenience; never let it fail the gate
        return None
    for site in sites:
        url = site.get("site_url") or ""
        if url.startswith("file://"):
            return url.removeprefix("file://")
    return None


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    if isinstance(value, pd.Timestamp | dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _json_safe(value.item())
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _sample(values: list[Any] | None, n: int = 3) -> str:
    if not values:
        return ""
    shown = ", ".join(repr(_json_safe(v)) for v in values[:n])
    return f" (e.g. {shown})"


def _describe_failure(result: Any, frame: pd.DataFrame) -> dict[str, Any]:
    """One failed expectation as {expectation, column, details, observed, unexpected_count, guards, ids}."""
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    etype = config.type
    column = kwargs.get("column")
    if column is None and "column_A" in kwargs:
        column = f"{kwargs['column_A']},{kwargs['column_B']}"
    res = dict(result.result or {})
    info = result.exception_info or {}
    exc_message = _exception_message(info)
    observed = res.get("observed_value")
    count = res.get("unexpected_count")
    ids = sorted({str(row[ID_COLUMN]) for row in res.get("unexpected_index_list") or []
                  if isinstance(row, dict) and row.get(ID_COLUMN) is not None})

    if exc_message is not None:
        if column and column not in frame.columns and "," not in column:
            details = "column missing"
        else:
            details = f"could not be evaluated: {exc_message}"
    elif etype == "expect_table_columns_to_match_set":
        expected = set(kwargs.get("column_set") or [])
        actual = set(frame.columns)
        bits = []
        if expected - actual:
            bits.append("missing: " + ", ".join(sorted(expected - actual)))
        if actual - expected:
            bits.append("unexpected: " + ", ".join(sorted(map(str, actual - expected))))
        details = "; ".join(bits) or f"observed {observed}"
    elif etype == "expect_table_row_count_to_be_between":
        details = f"{observed} rows, expected {_bounds(kwargs)}"
    elif etype == "expect_column_values_to_be_unique" and column in frame.columns:
        dupes = int(frame[column].dropna().duplicated().sum())
        details = f"{dupes} duplicates"
    elif etype == "expect_column_values_to_not_be_null":
        pct = res.get("unexpected_percent") or 0.0
        allowed = (1.0 - float(kwargs.get("mostly", 1.0))) * 100
        details = f"{count} nulls ({pct:.1f}%, allowed {allowed:.1f}%)"
    elif etype == "expect_column_values_to_be_in_type_list":
        dtype = str(frame[column].dtype) if column in frame.columns else "?"
        details = f"dtype {dtype}, expected one of {kwargs.get('type_list')}{_sample(res.get('partial_unexpected_list'))}"
    elif etype in ("expect_column_values_to_be_between", "expect_column_values_to_be_in_set",
                   "expect_column_values_to_match_regex", "expect_column_pair_values_a_to_be_greater_than_b"):
        what = {
            "expect_column_values_to_be_between": f"outside {_bounds(kwargs)}",
            "expect_column_values_to_be_in_set": f"not in {kwargs.get('value_set')}",
            "expect_column_values_to_match_regex": f"not matching {kwargs.get('regex')!r}",
        }.get(etype, "violating the pair condition")
        details = f"{count} values {what}{_sample(res.get('partial_unexpected_list'))}"
    elif observed is not None:
        details = f"observed {_json_safe(observed)}, expected {_bounds(kwargs)}"
    elif count is not None:
        details = f"{count} unexpected values"
    else:
        details = f"nothing to measure ({len(frame)} rows), expected {_bounds(kwargs)}"
    return {
        "expectation": etype,
        "column": column,
        "details": details,
        "observed": _json_safe(observed),
        "unexpected_count": _json_safe(count),
        "guards": (config.meta or {}).get("guards"),
        "transaction_ids": ids,
    }


def _bounds(kwargs: Mapping[str, Any]) -> str:
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    left = "(" if kwargs.get("strict_min") else "["
    right = ")" if kwargs.get("strict_max") else "]"
    return f"{left}{_json_safe(lo) if lo is not None else '-inf'}, {_json_safe(hi) if hi is not None else 'inf'}{right}"


def _exception_message(info: Mapping[str, Any]) -> str | None:
    """GX reports errors either flat ({raised_exception, exception_message}) or keyed per metric."""
    if not info:
        return None
    if "raised_exception" in info:
        return " ".join(str(info.get("exception_message")).split())[:160] if info.get("raised_exception") else None
    for value in info.values():
        if isinstance(value, Mapping) and (value.get("raised_exception") or value.get("exception_message")):
            message = " ".join(str(value.get("exception_message") or "error").split())
            return message if len(message) <= 160 else message[:157] + "..."
    return None


# --------------------------------------------------------------------------------------------
# Quarantine
# --------------------------------------------------------------------------------------------


def _reason(result: GateResult) -> str:
    return (
        f"{len(result.failed)} of {result.evaluated} expectations failed: {result.describe_failures()}"
    )


def _write_snapshot(df: pd.DataFrame, target: Path) -> None:
    """A Parquet copy of the batch as received; a broken batch can have mixed-type columns."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        df.to_parquet(target, index=False)
    except Exception:  # pyarrow rejects object columns mixing types; keep the evidence as text
        as_text = df.copy()
        for col in as_text.columns:
            if as_text[col].dtype == object:
                as_text[col] = as_text[col].map(lambda v: None if v is None else str(v))
        as_text.to_parquet(target, index=False)


def quarantine(
    result: GateResult,
    df: pd.DataFrame,
    batch_date: dt.date,
    table_name: str,
    paths: StatePaths,
    *,
    reason_prefix: str | None = None,
    evidence_file: Path | None = None,
) -> QuarantineRecord:
    """Record a rejected batch (or its rejected rows): one row in quarantine.rejected_batches, the
    offending row ids in quarantine.rejected_rows and a copy of the evidence under `StatePaths.quarantine`.

    `evidence_file` keeps the delivered bytes as they are (a file that could not be read at all);
    otherwise `df` is written as Parquet. `reason_prefix` says what happened when only rows were
    quarantined. Idempotent per (batch_date, table_name): a re-run replaces the previous record.
    Nothing else in the warehouse is touched.
    """
    rejected_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    snapshot = paths.quarantine / table_name / f"batch_date={batch_date.isoformat()}.parquet"
    if evidence_file is not None:
        snapshot = snapshot.with_name(f"batch_date={batch_date.isoformat()}{evidence_file.suffix}.delivered")
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(evidence_file, snapshot) if evidence_file.exists() else snapshot.write_bytes(b"")
    else:
        _write_snapshot(df, snapshot)
    failed_json = json.dumps([{k: v for k, v in f.items() if k != "transaction_ids"} | {
        "rejected_ids": len(f.get("transaction_ids") or [])} for f in result.failed])
    rows = pd.DataFrame(
        [
            {"transaction_id": tx_id, "expectation": f["expectation"]}
            for f in result.failed
            for tx_id in f.get("transaction_ids") or []
        ],
        columns=["transaction_id", "expectation"],
    ).drop_duplicates()
    reason = f"GX suite '{result.suite}' rejected batch {result.batch_id} (run {result.run_id}): {_reason(result)}"
    if reason_prefix:
        reason = f"{reason_prefix}. {reason}"
    ddl = (f"create schema if not exists {QUARANTINE_SCHEMA}", _REJECTED_BATCHES_DDL, _REJECTED_ROWS_DDL)
    batch_row = pd.DataFrame([{
        "batch_date": batch_date, "table_name": table_name, "suite": result.suite, "reason": reason,
        "failed_expectations": failed_json, "row_count": len(df), "snapshot_path": str(snapshot),
        "rejected_at": rejected_at,
    }])
    row_frame = rows.assign(batch_date=batch_date, table_name=table_name, rejected_at=rejected_at)[
        ["batch_date", "table_name", "transaction_id", "expectation", "rejected_at"]
    ]
    with warehouse.transaction(paths, ddl=ddl) as con:
        where = {"batch_date": batch_date, "table_name": table_name}
        con.replace_partition(REJECTED_BATCHES, where, batch_row)
        con.replace_partition(REJECTED_ROWS, where, row_frame)
    return QuarantineRecord(
        batch_date=batch_date, table_name=table_name, reason=reason, row_count=len(df),
        rejected_rows=len(rows), snapshot_path=str(snapshot),
    )


# --------------------------------------------------------------------------------------------
# The gate
# --------------------------------------------------------------------------------------------


def default_table_name(suite_name: str, expectations_dir: Path = EXPECTATIONS_DIR) -> str:
    """The warehouse table a suite describes (`meta.table`), else the suite name."""
    return str((load_suite_file(suite_name, expectations_dir).get("meta") or {}).get("table") or suite_name)


def gate(
    suite_name: str,
    df: pd.DataFrame,
    batch_date: dt.date,
    paths: StatePaths,
    parameters: Mapping[str, Any] | None = None,
    *,
    table_name: str | None = None,
    run_name: str | None = None,
    expectations_dir: Path = EXPECTATIONS_DIR,
) -> GateResult:
    """Run the checkpoint; on failure quarantine the batch and raise `DataQualityGateFailed`.

    Returns the `GateResult` when the batch passed; the caller may then load/publish it.
    """
    table_name = table_name or default_table_name(suite_name, expectations_dir)
    batch_id = f"{suite_name}/{batch_date.isoformat()}"
    result = run_checkpoint(
        suite_name, df, batch_id, paths, parameters,
        batch_date=batch_date, run_name=run_name, expectations_dir=expectations_dir,
    )
    if result.success:
        return result
    quarantine(result, df, batch_date, table_name, paths)
    message = (
        f"GX gate '{suite_name}' failed for batch {batch_id}: {_reason(result)}. "
        f"Batch quarantined in {REJECTED_BATCHES}; nothing was published. "
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


def result_as_dict(result: GateResult) -> dict[str, Any]:
    """The whole result as plain data (for reports and logs)."""
    return {k: _json_safe(v) for k, v in asdict(result).items()}
