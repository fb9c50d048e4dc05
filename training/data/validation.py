"""Validating one frame against its suite through a GX checkpoint, and saying what failed.

The Airflow GX provider cannot be installed next to Airflow 3.3 (structlog pin), so this runs GX's
own `Checkpoint` with `UpdateDataDocsAction`; `plugins/closedloop/operators/gx_validate.py` wraps it
in an operator shaped like the provider's, so the provider can be swapped in later. Each failed
expectation is described in words a data engineer can act on, with the offending rows' ids
(`row_ids`, values of the suite's `meta.id_column`: a feed's contract id, the features mart's key).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from training.config import load_config
from training.contract import DataContract
from training.data.suites import (
    build_parameters,
    ensure_checkpoint,
    get_context,
    quiet_gx,
    resolve_suite,
    sync_suite,
)
from training.paths import StatePaths

if TYPE_CHECKING:  # pragma: no cover
    from great_expectations.data_context import AbstractDataContext


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
    #: the column whose values `row_ids` in `failed` are (None: the batch has no id column)
    id_column: str | None = None

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

    def summary(self) -> str:
        """`N of M expectations failed: ...` for the quarantine reason and the gate's message."""
        return f"{len(self.failed)} of {self.evaluated} expectations failed: {self.describe_failures()}"

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


def run_checkpoint(
    suite_name: str,
    df: pd.DataFrame,
    batch_id: str,
    paths: StatePaths,
    parameters: Mapping[str, Any] | None = None,
    *,
    batch_date: dt.date | None = None,
    run_name: str | None = None,
    expectations_dir: Path | None = None,
    contract: DataContract | None = None,
) -> GateResult:
    """Validate `df` against suite `suite_name` through a GX checkpoint; Data Docs are updated.

    A contract feed's raw suite is generated from `contract` (default: the deployment's config) plus
    its file's extras (`suites.resolve_suite`); any other suite is its file. `parameters` fill the
    suite's `{"$PARAMETER": ...}` placeholders (interval_start, interval_end, min_rows, max_rows);
    the interval defaults to `batch_date`'s day. Columns the suite lists in `meta.ignore_columns`
    (bookkeeping our ingest adds) are dropped before validation. Offending rows are named by the
    suite's `meta.id_column` (default: the contract's event id).
    """
    quiet_gx()  # before the first GX import: it logs at INFO while registering its API
    from great_expectations.core.run_identifier import RunIdentifier

    if contract is None or expectations_dir is None:
        active = load_config()
        contract = contract if contract is not None else active.contract
        expectations_dir = expectations_dir or active.project.expectations_path
    suite = resolve_suite(suite_name, contract, expectations_dir)
    meta = suite.get("meta") or {}
    params = build_parameters(meta, batch_date, parameters)
    frame = df.drop(columns=[c for c in meta.get("ignore_columns") or [] if c in df.columns])
    id_column = str(meta.get("id_column") or contract.events.id)
    # GX reports offending rows by id only when the id column exists; without it (renamed id)
    # asking for it would make every row-level expectation error out instead of failing cleanly.
    index_columns = [id_column] if id_column in frame.columns else []

    context = get_context(paths)
    sync_suite(context, suite, expectations_dir)
    checkpoint = ensure_checkpoint(context, suite_name, index_columns)
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
    failed = [_describe_failure(r, frame, id_column) for r in failed_results]
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
        id_column=id_column if index_columns else None,
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


def _describe_failure(result: Any, frame: pd.DataFrame, id_column: str) -> dict[str, Any]:
    """One failed expectation as {expectation, column, details, observed, unexpected_count, guards, row_ids}."""
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
    ids = sorted({str(row[id_column]) for row in res.get("unexpected_index_list") or []
                  if isinstance(row, dict) and row.get(id_column) is not None})

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
        "row_ids": ids,
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
