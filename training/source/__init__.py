"""Where a model's data comes from: one seam, `extract(cfg, day)`, over the contract's source kinds.

Every source hands over the same thing: one DataFrame per contract feed (`contract.events.feed`,
`contract.labels.feed`) for one data interval. `training.data.ingest.land` versions what it gets
and the front door judges it, so nothing after this seam knows or cares which kind delivered it.

- `simulator`: a simulated source system shipped with an example model, called through its
  `entry_point` (the example's config names it), with the config's `simulator:` section (validated
  by the `SIMULATOR_SPEC` schema of the entry point's module, see `training.config.SimulatorSection`);
- `file_drop`: Parquet or CSV partitions per interval under a folder or fsspec URL
  (`training.source.file_drop`), which is how real teams hand over exports;
- `python`: any function `package.module:function(cfg, batch_date) -> {feed: DataFrame}`.

Generic code never imports an example: a simulator is reached the way a custom source is.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from training.errors import ClosedloopError

if TYPE_CHECKING:
    from training.config import Config

SourceFunction = Callable[["Config", dt.date], Mapping[str, pd.DataFrame]]


class SourceError(ClosedloopError, ValueError):
    """The source cannot deliver the interval as the contract declares it; the message says what to fix."""


class PartitionMissingError(ClosedloopError, LookupError):
    """A file-drop partition is not there: it was not delivered, or the interval is not exported yet."""


def extract(cfg: Config, batch_date: dt.date) -> dict[str, pd.DataFrame]:
    """The interval's feeds from the contract's source, keyed by feed name (events first)."""
    spec = cfg.contract.source
    if spec.kind == "file_drop":
        from training.source import file_drop

        return file_drop.read_interval(cfg.contract, batch_date)
    if spec.kind == "simulator":
        if not spec.entry_point:
            raise SourceError(
                "contract.source.kind simulator needs `entry_point: package.module:function`, the simulator's "
                "source function shipped with its example (see the example's config)"
            )
    function = load_entry_point(str(spec.entry_point))
    return check_feeds(cfg, function(cfg, batch_date), f"entry point {spec.entry_point}")


def load_entry_point(entry_point: str) -> SourceFunction:
    """Import `package.module:function`; a wrong name is an error naming what was not found."""
    module_name, sep, attr = entry_point.partition(":")
    if not sep or not module_name or not attr:
        raise SourceError(f"contract.source.entry_point {entry_point!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SourceError(
            f"contract.source.entry_point {entry_point!r}: cannot import {module_name!r} ({exc}); "
            "install the package or put it on the PYTHONPATH of the workers and the CLI"
        ) from exc
    function = getattr(module, attr, None)
    if not callable(function):
        raise SourceError(
            f"contract.source.entry_point {entry_point!r}: module {module_name!r} has no function {attr!r}"
        )
    return function


def check_feeds(cfg: Config, feeds: Any, origin: str) -> dict[str, pd.DataFrame]:
    """`feeds` must hold one DataFrame per contract feed and nothing else; returns them events first."""
    expected = list(cfg.contract.feeds)
    if not isinstance(feeds, Mapping):
        raise SourceError(
            f"{origin} returned {type(feeds).__name__}; a source returns a dict {{feed: DataFrame}} "
            f"with the contract's feeds {expected}"
        )
    missing = [name for name in expected if name not in feeds]
    unknown = [str(name) for name in feeds if name not in expected]
    if missing or unknown:
        raise SourceError(
            f"{origin} returned feeds {list(map(str, feeds))}; the contract declares {expected} "
            f"(missing: {missing}, unknown: {unknown}): return exactly the contract's feeds"
        )
    wrong = {name: type(feeds[name]).__name__ for name in expected if not isinstance(feeds[name], pd.DataFrame)}
    if wrong:
        raise SourceError(f"{origin} returned non-DataFrame feeds {wrong}: each feed must be a pandas DataFrame")
    return {name: feeds[name] for name in expected}
