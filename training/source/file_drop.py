"""The file-drop source: one Parquet or CSV partition per feed and interval, under a folder or URL.

This is how real teams hand data over: an export job drops `transactions/batch_date=2026-01-05.parquet`
(or a CSV) into a bucket, and the loop picks the interval up. `contract.source` says where:
`url` (a local folder, `file://`, `memory://`, or any fsspec URL; `$VAR` / `${VAR}` in it are
environment variables, e.g. `${CLOSEDLOOP_HOME}/drops/loans`, so one config serves every state
directory and bucket), `pattern` (formatted with `feed`,
the feed name, and `date`, the interval's `datetime.date`: `{date}` is the ISO day, `{date:%Y/%m/%d}`
works too), `format` (parquet | csv; `.gz`/`.bz2`/... CSVs are decompressed by extension), and
`options` (fsspec storage options, e.g. `{anon: true}` or `{client_kwargs: {endpoint_url: ...}}`).

Remote schemes need their fsspec filesystem installed next to closedloop: `s3fs` for `s3://`, `gcsfs`
for `gs://`, `adlfs` for `az://`. None ships with closedloop; a missing one is a clear error here.

A partition is read through the contract: every declared column must be there with its declared type
(CSV text is parsed to it: timestamps and dates from ISO strings, strings kept verbatim, only an empty
field is null), and timestamps with a zone are converted to UTC and stored without it. A file that does
not match is an export to fix, named here with its URL; row-level rules (nulls, ranges, allowed values)
are the front door's, which quarantines the rows that break them.
"""

from __future__ import annotations

import datetime as dt
import os
import re

import fsspec
import pandas as pd
from pandas.api import types as ptypes

from training.contract import DataContract, EventFeed, LabelFeed, SourceSpec
from training.source import PartitionMissingError, SourceError

Feed = EventFeed | LabelFeed

#: `$NAME` or `${NAME}` left in a URL after expansion: a variable that is not set
_UNSET_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")

_BOOLEANS = {"true": True, "false": False, "t": True, "f": False, "1": True, "0": False, "yes": True, "no": False}


def read_interval(contract: DataContract, batch_date: dt.date) -> dict[str, pd.DataFrame]:
    """Both feeds' partitions for `batch_date`, events first; a missing one raises PartitionMissingError."""
    return {feed.feed: read_partition(contract.source, feed, batch_date) for feed in (contract.events, contract.labels)}


def base_url(spec: SourceSpec) -> str:
    """`contract.source.url` with its environment variables expanded; an unset one is a SourceError naming it."""
    url = os.path.expandvars(str(spec.url))
    unset = sorted(set(_UNSET_VARIABLE.findall(url)))
    if unset:
        raise SourceError(
            f"contract.source.url {spec.url!r} uses environment variable(s) {unset} that are not set: export "
            "them in the environment of the workers and the CLI, or write the URL out in the config"
        )
    return url


def partition_url(spec: SourceSpec, feed: str, batch_date: dt.date) -> str:
    """`url` (environment variables expanded) + `pattern` formatted with the feed name and the interval's date."""
    try:
        relative = spec.pattern.format(feed=feed, date=batch_date)
    except (KeyError, IndexError, ValueError) as exc:
        raise SourceError(
            f"contract.source.pattern {spec.pattern!r} cannot be formatted ({exc!r}): it may use only "
            "{feed} and {date} (e.g. '{feed}/batch_date={date}.parquet' or '{feed}/{date:%Y/%m/%d}.csv')"
        ) from exc
    return f"{base_url(spec).rstrip('/')}/{relative.lstrip('/')}"


def read_partition(spec: SourceSpec, feed: Feed, batch_date: dt.date) -> pd.DataFrame:
    """One feed's partition for one interval, checked and typed by the feed's declared columns."""
    url = partition_url(spec, feed.feed, batch_date)
    try:
        fs, path = fsspec.core.url_to_fs(url, **spec.options)
    except ImportError as exc:
        raise SourceError(
            f"cannot open {url}: {exc}. Install the fsspec filesystem for its scheme next to closedloop "
            "(s3fs for s3://, gcsfs for gs://, adlfs for az://)"
        ) from exc
    if not fs.exists(path):
        raise PartitionMissingError(
            f"no {feed.feed} partition for {batch_date} at {url}: deliver the file there (contract.source "
            f"url + pattern), or the interval is not exported yet and this run should wait or be retried"
        )
    try:
        with fs.open(path, "rb", compression="infer") as handle:
            if spec.format == "csv":  # text as delivered: only an empty field is null ("NA" is a value)
                frame = pd.read_csv(handle, dtype=str, keep_default_na=False, na_values=[""])
            else:
                frame = pd.read_parquet(handle)
    except (ValueError, OSError) as exc:
        raise SourceError(f"{url} is not a readable {spec.format} file ({exc}): re-export it") from exc
    _check_columns(frame, feed, url)
    if spec.format == "csv":
        return _typed_csv(frame, feed, url)
    for name, rule in feed.columns.items():
        if isinstance(frame[name].dtype, pd.CategoricalDtype):  # dictionary-encoded: judge the values
            values = frame[name].astype(frame[name].cat.categories.dtype)
            frame[name] = values.where(values.notna(), None) if values.dtype == object else values
        if not _has_type(frame[name], rule.type):
            raise SourceError(
                f"{url}: column {name!r} arrives as {frame[name].dtype} but {_where(feed, name)} declares "
                f"{rule.type}: fix the export, or declare the type it is delivered in"
            )
        if rule.type == "timestamp":
            frame[name] = _naive_utc(frame[name])
    return frame


def _role(feed: Feed) -> str:
    return "events" if isinstance(feed, EventFeed) else "labels"


def _where(feed: Feed, column: str) -> str:
    return f"contract.{_role(feed)}.columns.{column}"


def _check_columns(frame: pd.DataFrame, feed: Feed, url: str) -> None:
    missing = [c for c in feed.columns if c not in frame.columns]
    if missing:
        raise SourceError(
            f"{url} lacks the {feed.feed} column(s) {missing} the contract declares (it has "
            f"{list(frame.columns)}): fix the export, or correct contract.{_role(feed)}.columns"
        )


def _non_null(series: pd.Series) -> pd.Series:
    return series[series.notna()]


def _has_type(series: pd.Series, declared: str) -> bool:
    """Whether a Parquet column holds the declared type (an all-null column holds any)."""
    values = _non_null(series)
    if values.empty:
        return True
    dtype = series.dtype
    if declared == "string":
        return bool(ptypes.is_string_dtype(dtype) and values.map(lambda v: isinstance(v, str)).all())
    if declared == "integer":
        if ptypes.is_bool_dtype(dtype):
            return False
        # pandas keeps an integer column with nulls as float: whole numbers are integers
        return ptypes.is_integer_dtype(dtype) or (ptypes.is_float_dtype(dtype) and bool((values % 1 == 0).all()))
    if declared == "double":
        return ptypes.is_numeric_dtype(dtype) and not ptypes.is_bool_dtype(dtype)
    if declared == "boolean":
        return ptypes.is_bool_dtype(dtype) or bool(values.map(lambda v: isinstance(v, bool)).all())
    if declared == "timestamp":
        return ptypes.is_datetime64_any_dtype(dtype)
    if declared == "date":
        return ptypes.is_datetime64_any_dtype(dtype) or bool(values.map(lambda v: isinstance(v, dt.date)).all())
    raise AssertionError(f"unhandled column type {declared}")  # ColumnType is a closed Literal


def _naive_utc(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series


def _typed_csv(text: pd.DataFrame, feed: Feed, url: str) -> pd.DataFrame:
    """A CSV partition's text parsed to the declared types; a value that does not parse names its line."""
    frame = text.copy()
    for name, rule in feed.columns.items():
        raw = text[name]
        if rule.type == "string":
            frame[name] = raw.astype(object).where(raw.notna(), None)
            continue
        if rule.type in ("integer", "double"):
            parsed = pd.to_numeric(raw, errors="coerce")
            bad = raw.notna() & parsed.isna()
            if rule.type == "integer":
                bad |= parsed.notna() & (parsed % 1 != 0)
                parsed = parsed.where(~bad).astype("Int64")
        elif rule.type == "boolean":
            parsed = raw.str.strip().str.lower().map(_BOOLEANS).astype("boolean")
            bad = raw.notna() & parsed.isna()
        else:  # timestamp, date: ISO 8601; a zone offset is converted to UTC
            parsed = pd.to_datetime(raw, errors="coerce", format="ISO8601", utc=True).dt.tz_localize(None)
            bad = raw.notna() & parsed.isna()
            if rule.type == "date":
                parsed = parsed.dt.date.astype(object).where(parsed.notna(), None)
            else:
                parsed = parsed.astype("datetime64[us]")
        if bad.any():
            lines = [int(i) + 2 for i in bad[bad].index[:3]]  # 1-based, after the header line
            values = raw[bad].head(3).tolist()
            raise SourceError(
                f"{url}: column {name!r} is declared {rule.type} ({_where(feed, name)}) but line(s) {lines} "
                f"hold {values} ({int(bad.sum())} value(s) in all): fix the export, or declare the type it is "
                "delivered in"
            )
        frame[name] = parsed
    return frame
