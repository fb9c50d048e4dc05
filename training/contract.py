"""The data contract: the shape of one model's data, declared once in config and read by every stage.

A model's `contract:` section names where its data comes from (the source), the two feeds it lands
each interval (the events a prediction is made for, and the labels or outcomes that arrive later),
the column rules of each feed, the dbt marts the loop reads and publishes, and the words its
decisions are written in. Ingest DDL, the front door's generated checks, quarantine keys, publish,
inference, monitoring windows, Assets, the DAGs and the reports take names from here, so adapting
the loop to another model is config + dbt models + suites, never an edit to `training/`.

Two label styles are supported:
- *positives only* (`both_classes: false`): a delivered label row means the event was positive
  (a reported dispute); an event with no label once its labels matured is a negative.
- *both classes* (`both_classes: true`): every label row carries `label_column`, and the values in
  `positive_values` mean positive (a loan outcome `defaulted` / `repaid`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ColumnType = Literal["string", "integer", "double", "boolean", "timestamp", "date"]

#: Identifiers (feed, column, schema and table names) are used in SQL and file paths unquoted.
_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
_QUALIFIED = r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class ColumnRule(_Strict):
    """One delivered column: its type and what a row must satisfy to be admitted.

    Every rule is a row rule: the front door quarantines the rows that break it, and the dbt staging
    tests are checked against the same rules (`python -m training check-contract`), so a row dbt
    would refuse never gets past the door.
    """

    type: ColumnType
    nullable: bool = True
    unique: bool = False  # unique within the feed, across every delivered interval
    allowed: list[str | int | float | bool] | None = None
    min: float | None = None  # inclusive lower bound (numbers)
    max: float | None = None  # inclusive upper bound (numbers)
    regex: str | None = None  # full-match pattern (strings)
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> ColumnRule:
        if self.min is not None and self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) < min ({self.min})")
        if (self.min is not None or self.max is not None) and self.type not in ("integer", "double"):
            raise ValueError(f"min/max apply to integer or double columns, not {self.type}")
        if self.regex is not None and self.type != "string":
            raise ValueError(f"regex applies to string columns, not {self.type}")
        return self


class _Feed(_Strict):
    #: raw table `raw.<feed>`, landed file `raw/<feed>/batch_date=<day>.parquet`
    feed: str = Field(pattern=_IDENT)
    id: str = Field(pattern=_IDENT)
    columns: dict[str, ColumnRule] = Field(min_length=1)
    description: str = ""

    def _require(self, *names: str) -> None:
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise ValueError(f"feed {self.feed!r} names column(s) {missing} that its `columns` do not declare")

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    @property
    def raw_table(self) -> str:
        return f"raw.{self.feed}"


class EventFeed(_Feed):
    """The events a prediction is made for (one row each); `time` places a row in its interval."""

    time: str = Field(pattern=_IDENT)

    @model_validator(mode="after")
    def _declared(self) -> EventFeed:
        self._require(self.id, self.time)
        if self.columns[self.time].type != "timestamp":
            raise ValueError(f"events.time column {self.time!r} must have type timestamp")
        return self


class LabelFeed(_Feed):
    """Labels or outcomes, delivered after their event; `reported_at` is when the label became known."""

    event_id: str = Field(pattern=_IDENT)  # the column holding the event's id
    reported_at: str = Field(pattern=_IDENT)
    #: both classes delivered: `label_column` holds the outcome and `positive_values` the positive ones;
    #: positives only: a delivered row is a positive, and `label_column` (optional) is informative only
    both_classes: bool = False
    label_column: str | None = Field(default=None, pattern=_IDENT)
    positive_values: list[str | int | float | bool] = Field(default_factory=list)

    @model_validator(mode="after")
    def _declared(self) -> LabelFeed:
        self._require(self.id, self.event_id, self.reported_at, *([self.label_column] if self.label_column else []))
        if self.columns[self.reported_at].type != "timestamp":
            raise ValueError(f"labels.reported_at column {self.reported_at!r} must have type timestamp")
        if self.both_classes and not (self.label_column and self.positive_values):
            raise ValueError("labels.both_classes needs label_column and positive_values (which values are positive)")
        return self


class Marts(_Strict):
    """The dbt marts the loop reads (`schema.table`) and the table it publishes features to."""

    features: str = Field(pattern=_QUALIFIED)  # one row per event, point-in-time features
    training_set: str = Field(pattern=_QUALIFIED)  # features + target, matured labels only
    published: str = Field(pattern=_QUALIFIED)  # what inference and monitoring read

    @staticmethod
    def split(qualified: str) -> tuple[str, str]:
        schema, table = qualified.split(".", 1)
        return schema, table


class Decisions(_Strict):
    """The words a decision is written in (published.predictions, reports, the pyfunc output)."""

    positive: str = Field(default="positive", min_length=1)  # score >= threshold
    negative: str = Field(default="negative", min_length=1)
    #: what a positive is called in messages and reports ("default", "churn")
    positive_label: str = Field(default="positive", min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> Decisions:
        if self.positive == self.negative:
            raise ValueError(f"decisions.positive and decisions.negative are both {self.positive!r}")
        return self

    def of(self, score: float, threshold: float) -> str:
        return self.positive if score >= threshold else self.negative


class SourceSpec(_Strict):
    """Where each interval's feeds come from.

    - `simulator`: a simulated source system called through `entry_point` (needs the `simulator:` section,
      validated by the `SIMULATOR_SPEC` of the entry point's module);
    - `file_drop`: Parquet or CSV partitions per interval under `url` (a folder or any fsspec URL),
      `pattern` formatted with `feed` and `date` (ISO day);
    - `python`: `entry_point` = `package.module:function`, called as `function(cfg, batch_date)` and
      returning `{feed: DataFrame}`.
    """

    kind: Literal["simulator", "file_drop", "python"]
    url: str | None = None
    pattern: str = "{feed}/batch_date={date}.parquet"
    format: Literal["parquet", "csv"] = "parquet"
    entry_point: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> SourceSpec:
        if self.kind == "file_drop" and not self.url:
            raise ValueError("source.kind file_drop needs `url` (a folder or fsspec URL holding the partitions)")
        if self.kind == "python" and not self.entry_point:
            raise ValueError("source.kind python needs `entry_point: package.module:function`")
        return self


class DataContract(_Strict):
    source: SourceSpec
    #: the first data interval (the DAGs' start date; the demo's first simulated day)
    start_date: dt.date
    events: EventFeed
    labels: LabelFeed
    marts: Marts
    decisions: Decisions = Decisions()

    @model_validator(mode="after")
    def _feeds_differ(self) -> DataContract:
        if self.events.feed == self.labels.feed:
            raise ValueError(f"events.feed and labels.feed are both {self.events.feed!r}")
        rule = self.labels.columns[self.labels.event_id]
        if rule.type != self.events.columns[self.events.id].type:
            raise ValueError(
                f"labels.{self.labels.event_id} ({rule.type}) must have the type of events.{self.events.id} "
                f"({self.events.columns[self.events.id].type}): labels join to events on it"
            )
        return self

    @property
    def feeds(self) -> dict[str, _Feed]:
        """Both feeds by name, events first (the order the front door admits them in)."""
        return {self.events.feed: self.events, self.labels.feed: self.labels}
