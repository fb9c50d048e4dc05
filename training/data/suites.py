"""The expectation suites and the Great Expectations project that holds them.

- The raw suites (`raw_<feed>`, one per feed of the data contract) are generated from the contract's
  column rules (`contract_expectations`): the front door checks exactly what the contract declares,
  and the dbt staging tests are checked against the same rules (`training.data.contract_check`), so
  a row dbt would refuse is quarantined at the door. A file `<project.expectations_dir>/raw_<feed>.json`
  may add extra expectations (e.g. a median check) and override the suite's `meta`.
- Other suites live as JSON in the model's `project.expectations_dir` (one per published table).
- Every suite is re-synced into a file context under `StatePaths.gx` on every run, so Data Docs
  persist between runs and an edited suite or contract takes effect without a migration step.
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

from training.config import load_config
from training.contract import ColumnRule, DataContract
from training.errors import ClosedloopError
from training.paths import StatePaths

if TYPE_CHECKING:  # pragma: no cover
    from great_expectations.data_context import AbstractDataContext

    from training.contract import _Feed

def active_expectations_dir() -> Path:
    """The suites folder of the model this process acts for (its config's `project.expectations_dir`)."""
    from training.config import load_config

    return load_config().project.expectations_path
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


#: The pandas dtypes a contract column type may arrive as. GX checks an `object` column value by
#: value against these names (`str`, `date`), any other column by its dtype name.
TYPE_LISTS: dict[str, list[str]] = {
    "string": ["str", "string", "object"],
    "integer": ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"],
    "double": ["float64", "Float64", "float32", "Float32"],
    "boolean": ["bool", "boolean"],
    "timestamp": ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"],
    "date": ["date", "datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"],
}
#: Bookkeeping columns ingest adds to every raw row (not part of what the source delivers).
BOOKKEEPING_COLUMNS = ("batch_date", "loaded_at")
#: Default volume bounds of a feed's batch (run-time parameters; a suite file's meta may override).
DEFAULT_ROW_BOUNDS = {"events": (1, 10_000_000), "labels": (0, 1_000_000)}


def raw_suite_name(feed: str) -> str:
    """The suite of a contract feed: `raw_<feed>` (also its GX asset and checkpoint name)."""
    return f"raw_{feed}"


def contract_feed_of(suite_name: str, contract: DataContract) -> tuple[str, _Feed] | None:
    """(`events` | `labels`, the feed) when `suite_name` is a contract feed's raw suite, else None."""
    for role, feed in (("events", contract.events), ("labels", contract.labels)):
        if raw_suite_name(feed.feed) == suite_name:
            return role, feed
    return None


def _rule_expectations(role: str, name: str, rule: ColumnRule) -> list[dict[str, Any]]:
    """One column's rules as expectations, each saying which contract rule it enforces."""
    where = f"contract.{role}.columns.{name}"

    def exp(etype: str, rule_key: str, why: str, **kwargs: Any) -> dict[str, Any]:
        return {"type": etype, "kwargs": {"column": name, **kwargs},
                "meta": {"guards": f"{where}.{rule_key}: {why}", "contract_rule": f"{where}.{rule_key}"}}

    out = [exp("expect_column_values_to_be_in_type_list", "type",
               f"{name} must arrive as {rule.type}; another type would fail or silently change dbt's casts",
               type_list=TYPE_LISTS[rule.type])]
    if not rule.nullable:
        out.append(exp("expect_column_values_to_not_be_null", "nullable",
                       f"{name} is not nullable: a null row would fail dbt's not_null test for this and every "
                       "later day, so it is quarantined here"))
    if rule.unique:
        out.append(exp("expect_column_values_to_be_unique", "unique",
                       f"{name} is unique: a duplicate would fail dbt's unique test and double-count the row"))
    if rule.regex is not None:
        out.append(exp("expect_column_values_to_match_regex", "regex",
                       f"{name} must match {rule.regex!r}: a changed format breaks joins and features",
                       regex=rule.regex))
    if rule.allowed is not None:
        out.append(exp("expect_column_values_to_be_in_set", "allowed",
                       f"{name} takes only {rule.allowed}: a new value is an unseen category downstream",
                       value_set=list(rule.allowed)))
    if rule.min is not None or rule.max is not None:
        bounds = {k: v for k, v in (("min_value", rule.min), ("max_value", rule.max)) if v is not None}
        out.append(exp("expect_column_values_to_be_between", "min/max",
                       f"{name} must lie in [{rule.min}, {rule.max}]: values outside are errors or unit changes",
                       **bounds))
    return out


def contract_expectations(contract: DataContract, role: str) -> list[dict[str, Any]]:
    """The raw checks of one feed (`events` | `labels`), generated from its contract rules.

    Schema first (the exact column set, the batch's volume), then each column's type, nullability,
    uniqueness, format, allowed values and range, then the feed's time column within the interval.
    """
    feed = contract.events if role == "events" else contract.labels
    time_column = contract.events.time if role == "events" else contract.labels.reported_at
    out: list[dict[str, Any]] = [
        {"type": "expect_table_columns_to_match_set",
         "kwargs": {"column_set": feed.column_names, "exact_match": True},
         "meta": {"guards": f"contract.{role}.columns: the {feed.feed} feed delivers exactly these columns; a "
                            "missing, renamed or extra column would break dbt staging or drop a model feature",
                  "contract_rule": f"contract.{role}.columns"}},
        {"type": "expect_table_row_count_to_be_between",
         "kwargs": {"min_value": {"$PARAMETER": "min_rows"}, "max_value": {"$PARAMETER": "max_rows"}},
         "meta": {"guards": "an empty or truncated batch (source outage) and runaway volume (a replayed feed); "
                            "bounds are run-time parameters (meta.parameters min_rows/max_rows)",
                  "contract_rule": f"contract.{role}"}},
    ]
    for name, rule in feed.columns.items():
        out += _rule_expectations(role, name, rule)
    out.append({
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": time_column, "min_value": {"$PARAMETER": "interval_start"},
                   "max_value": {"$PARAMETER": "interval_end"}, "strict_max": True},
        "meta": {"guards": f"contract.{role}.{'time' if role == 'events' else 'reported_at'}: rows outside the "
                           "data interval (another day's rows, future times) would leak future information",
                 "contract_rule": f"contract.{role}.{'time' if role == 'events' else 'reported_at'}"},
    })
    return out


def contract_suite(contract: DataContract, role: str) -> dict[str, Any]:
    """The generated suite of one feed (its `meta` is what a suite file may override)."""
    feed = contract.events if role == "events" else contract.labels
    lo, hi = DEFAULT_ROW_BOUNDS[role]
    return {
        "name": raw_suite_name(feed.feed),
        "meta": {
            "table": feed.raw_table,
            "description": (feed.description or f"The {feed.feed} feed") + " Checked as delivered, before it is "
                           f"loaded into {feed.raw_table}; generated from contract.{role}.",
            "id_column": feed.id,
            "generated_from": f"contract.{role}",
            "ignore_columns": list(BOOKKEEPING_COLUMNS),
            "parameters": {"min_rows": lo, "max_rows": hi},
            "required_parameters": ["interval_start", "interval_end"],
        },
        "expectations": contract_expectations(contract, role),
    }


def suite_names(expectations_dir: Path | None = None, contract: DataContract | None = None) -> list[str]:
    """The suites in the model's `project.expectations_dir` (file stem = suite name = GX asset name), plus
    the contract's raw suites when `contract` is given."""
    expectations_dir = expectations_dir or active_expectations_dir()
    names = {p.stem for p in expectations_dir.glob("*.json")}
    if contract is not None:
        names |= {raw_suite_name(f) for f in contract.feeds}
    return sorted(names)


def load_suite_file(
    suite_name: str, expectations_dir: Path | None = None, *, extras_only: bool = False
) -> dict[str, Any]:
    """The suite's JSON as a dict, checked for the fields the gate relies on.

    `extras_only`: the file adds to a generated suite, so an empty `expectations` list is fine.
    """
    expectations_dir = expectations_dir or active_expectations_dir()
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
    expectations = data.get("expectations", [] if extras_only else None)
    if not isinstance(expectations, list) or not (expectations or extras_only):
        raise SuiteError(f"suite file {path} needs a non-empty \"expectations\" list")
    for i, exp in enumerate(expectations):
        if not isinstance(exp, dict) or "type" not in exp or "kwargs" not in exp:
            raise SuiteError(f"suite file {path}: expectation #{i} needs \"type\" and \"kwargs\"")
        if not (exp.get("meta") or {}).get("guards"):
            raise SuiteError(
                f"suite file {path}: expectation #{i} ({exp['type']}) has no meta.guards; "
                "say which risk it guards against"
            )
    return {**data, "expectations": expectations}


def resolve_suite(
    suite_name: str, contract: DataContract | None = None, expectations_dir: Path | None = None
) -> dict[str, Any]:
    """The suite as the gate runs it: a contract feed's generated checks + its file's extras, or a file suite.

    `contract` defaults to the deployment's config (`$CLOSEDLOOP_CONFIG`). Extra expectations are
    marked `meta.extra` so a reader (and `check-contract`) can tell them from the generated ones.
    """
    expectations_dir = expectations_dir or active_expectations_dir()
    contract = contract if contract is not None else load_config().contract
    found = contract_feed_of(suite_name, contract)
    if found is None:
        return load_suite_file(suite_name, expectations_dir)
    generated = contract_suite(contract, found[0])
    if not (expectations_dir / f"{suite_name}.json").is_file():
        return generated
    extras = load_suite_file(suite_name, expectations_dir, extras_only=True)
    file_meta = dict(extras.get("meta") or {})
    meta = {**generated["meta"], **file_meta,
            "parameters": {**generated["meta"]["parameters"], **(file_meta.get("parameters") or {})}}
    return {
        "name": suite_name,
        "meta": meta,
        "expectations": [*generated["expectations"],
                         *({**e, "meta": {**e["meta"], "extra": True}} for e in extras["expectations"])],
    }


def default_table_name(
    suite_name: str, expectations_dir: Path | None = None, contract: DataContract | None = None
) -> str:
    """The warehouse table a suite describes (`meta.table`), else the suite name."""
    expectations_dir = expectations_dir or active_expectations_dir()
    meta = resolve_suite(suite_name, contract, expectations_dir).get("meta") or {}
    return str(meta.get("table") or suite_name)


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
    expectations_dir: Path | None = None,
    names: list[str] | None = None,
    contract: DataContract | None = None,
) -> list[str]:
    """Add or update suites (files, and the contract's generated raw suites) by name: re-running never duplicates.

    `contract` defaults to the deployment's config; `names` to every suite there is.
    """
    expectations_dir = expectations_dir or active_expectations_dir()
    contract = contract if contract is not None else load_config().contract
    names = names if names is not None else suite_names(expectations_dir, contract)
    for name in names:
        sync_suite(context, resolve_suite(name, contract, expectations_dir), expectations_dir)
    return names


def sync_suite(context: AbstractDataContext, data: dict[str, Any], expectations_dir: Path | None = None) -> None:
    """Add or update one resolved suite in the GX store.

    The suite's hash is kept in the stored suite's `meta.source_sha256`; an unchanged suite is not
    re-written, so a run costs one read instead of a store update and a Data Docs re-render.
    """
    expectations_dir = expectations_dir or active_expectations_dir()
    quiet_gx()
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.exceptions import DataContextError

    name = data["name"]
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    try:
        stored = context.suites.get(name)
    except DataContextError:
        stored = None
    if stored is not None and (stored.meta or {}).get("source_sha256") == digest:
        return
    try:
        suite = ExpectationSuite(
            name=name,
            expectations=data["expectations"],
            meta={**(data.get("meta") or {}), "source_sha256": digest},
        )
    except Exception as exc:  # GX raises several kinds for unknown types / bad kwargs
        where = (data.get("meta") or {}).get("generated_from") or expectations_dir / f"{name}.json"
        raise SuiteError(f"suite {name!r} ({where}) is invalid: {exc}") from exc
    context.suites.add_or_update(suite)


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
