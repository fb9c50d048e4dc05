"""`python -m training new-model NAME --sample FILE`: a starting point for a new model from a sample of its data.

Why: the contract, the dbt staging tests and the suites must agree from the first day; writing them
by hand from a column list is where they start to disagree. This reads a sample Parquet/CSV file's
columns and dtypes and writes, under `--out` (default `models/<NAME>/`):

- `closedloop.yaml`: the project config's generic sections plus a `contract:` whose events columns
  and types come from the sample and `source: {kind: file_drop, url: ...}`. Guesses (id and time
  columns, the labels feed without a labels sample, the model's features) carry `# TODO: check`;
- `dbt/staging/`: the sources yml, a staging model per feed and its yml, whose `not_null`/`unique`
  tests are exactly what the contract implies (so `check-contract` agrees);
- `dbt/marts/`: features and training-set mart stubs and their yml (the columns `check-contract` reads);
- `expectations/raw_<feed>.json`: empty extras suites (the contract generates the column checks).

Existing files are never overwritten: they are reported as kept.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from training.config import DEFAULT_CONFIG_PATH
from training.errors import ClosedloopError

TODO = "# TODO: check"
#: config sections that name nothing of the example's data (copied as they are)
GENERIC_SECTIONS = ("windows", "training", "gates", "drift", "schedules", "admission", "execution")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ScaffoldError(ClosedloopError, ValueError):
    """The sample or the name cannot be scaffolded from (the message says why and what to do)."""


@dataclass(frozen=True)
class Feed:
    """One feed as guessed from a sample: name, columns {name: contract type}, nullability, id, time."""

    name: str
    types: dict[str, str]
    nullable: dict[str, bool]
    id: str
    time: str | None
    guessed: frozenset[str]  # the columns whose role is a guess


def read_sample(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ScaffoldError(f"sample file {path} does not exist: pass a Parquet or CSV file holding a few rows of the feed")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path)
    raise ScaffoldError(f"sample file {path} is neither .parquet nor .csv")


def contract_type(series: pd.Series) -> str:
    """The contract type of a sample column (CSV time columns are recognised by parsing them)."""
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_integer_dtype(series):
        return "integer"
    if pd.api.types.is_float_dtype(series):
        return "double"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "timestamp"
    values = series.dropna()
    if len(values) and all(isinstance(v, dt.date) and not isinstance(v, dt.datetime) for v in values):
        return "date"
    if len(values) and values.map(lambda v: isinstance(v, str)).all():
        parsed = pd.to_datetime(values, errors="coerce", format="ISO8601")
        if parsed.notna().all():
            return "timestamp"
    return "string"


def guess_feed(name: str, frame: pd.DataFrame, *, prefer_id: str | None = None) -> Feed:
    """Columns and types from a sample; the id is a non-null unique `*id` column, the time the first timestamp."""
    if frame.columns.empty:
        raise ScaffoldError(f"the {name} sample has no columns")
    bad = [c for c in frame.columns if not _IDENT.match(str(c))]
    if bad:
        raise ScaffoldError(f"the {name} sample has column names that are not SQL identifiers: {bad}; rename them")
    types = {str(c): contract_type(frame[c]) for c in frame.columns}
    nullable = {str(c): bool(frame[c].isna().any()) for c in frame.columns}
    keys = [c for c in types if (c == "id" or c.endswith("_id")) and not nullable[c] and frame[c].is_unique]
    if prefer_id in keys:
        keys.remove(prefer_id)  # a label feed's own id is not the event id it refers to
    ident = keys[0] if keys else str(frame.columns[0])
    times = [c for c, t in types.items() if t == "timestamp"]
    named = [c for c in times if re.search(r"(ts|time|at|date)$", c)]
    time = (named or times)[0] if times else None
    return Feed(name, types, nullable, ident, time, frozenset({ident, *([time] if time else [])}))


def stub_label_feed(name: str, events: Feed) -> Feed:
    """Without a labels sample: positives-only labels (an id, the event's id, when it was reported)."""
    types = {"label_id": "string", events.id: events.types[events.id], "reported_at": "timestamp"}
    return Feed(f"{name}_labels", types, dict.fromkeys(types, False), "label_id", "reported_at", frozenset(types))


def _rule(feed: Feed, column: str) -> str:
    parts = [f"type: {feed.types[column]}", f"nullable: {'true' if feed.nullable[column] else 'false'}"]
    if column == feed.id:
        parts.append("unique: true")
    return "{" + ", ".join(parts) + "}"


def _feed_name(path: Path, fallback: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_]", "_", path.stem.lower()).strip("_")
    return stem if stem and _IDENT.match(stem) else fallback


def contract_yaml(name: str, events: Feed, labels: Feed, source_url: str, start: dt.date, stub_labels: bool) -> str:
    """The `contract:` section as YAML text, with `# TODO: check` on every guess."""
    lines = [
        "contract:",
        "  source:",
        "    kind: file_drop",
        f"    url: {json.dumps(source_url)}   {TODO}: where the daily partitions are dropped (fsspec URL)",
        '    pattern: "{feed}/batch_date={date}.parquet"',
        "  start_date: " + f'"{start.isoformat()}"   {TODO}: the first data interval',
        "  events:",
        f"    feed: {events.name}",
        f"    id: {events.id}   {TODO}: guessed (a unique, non-null *id column of the sample)",
        f"    time: {events.time}   {TODO}: guessed (the first timestamp column)",
        "    columns:",
    ]
    lines += [f"      {c}: {_rule(events, c)}" for c in events.types]
    if stub_labels:
        lines.append(f"  labels:   {TODO}: no --labels-sample given: a stub; describe the labels feed")
    else:
        lines.append("  labels:")
    event_id = events.id if events.id in labels.types else labels.id
    lines += [
        f"    feed: {labels.name}",
        f"    id: {labels.id}   {TODO}: guessed",
        f"    event_id: {event_id}   {TODO}: the column holding the event's id",
        f"    reported_at: {labels.time}   {TODO}: when the label became known (a timestamp column)",
        f"    both_classes: false   {TODO}: true if negatives are delivered too (then label_column, positive_values)",
        "    columns:",
    ]
    lines += [f"      {c}: {_rule(labels, c)}" for c in labels.types]
    lines += [
        "  marts:",
        f"    features: ml.ml_{name}_features",
        f"    training_set: ml.ml_{name}_training_set",
        f"    published: published.{name}_features",
        f"  decisions: {{positive: positive, negative: negative, positive_label: positive}}   {TODO}: your words",
    ]
    return "\n".join(lines) + "\n"


def config_text(name: str, events: Feed, labels: Feed, source_url: str, start: dt.date, stub_labels: bool,
                out: Path | None = None) -> str:
    base = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    model = dict(base["model"])
    skip = {events.id, events.time} | {c for c in events.types if c.endswith("_id")}  # keys are no features
    model |= {
        "name": name,
        "target": "label",
        "id_column": events.id,
        "time_column": events.time,
        "numeric_features": [c for c, t in events.types.items() if t in ("integer", "double", "boolean") and c not in skip],
        "categorical_features": [c for c, t in events.types.items() if t == "string" and c not in skip],
        "slice_columns": [],
    }
    drift = dict(base["drift"]) | {"feature_overrides": {}, "exclude_features": []}
    generic = {k: (drift if k == "drift" else base[k]) for k in GENERIC_SECTIONS if k in base}
    header = (
        f"# closedloop config for {name}, scaffolded by `python -m training new-model` from a sample.\n"
        f"# Lines marked '{TODO}' are guesses. The model's features below are the sample's columns: point them at\n"
        "# the columns your features mart (dbt/marts) produces, then run `python -m training check-contract`.\n\n"
    )
    model_yaml = yaml.safe_dump({"model": model}, sort_keys=False)
    model_yaml = model_yaml.replace("  target: label\n", f"  target: label   {TODO}: the training set's label column\n")
    model_yaml = model_yaml.replace("  numeric_features:\n", f"  numeric_features:   {TODO}: the features mart's columns\n", 1)
    folder = out or Path("models") / name  # relative: from the repository root, as `project:` reads it
    project = {"project": {"dbt_dir": str(folder / "dbt"), "expectations_dir": str(folder / "expectations")}}
    return (header + model_yaml + "\n" + contract_yaml(name, events, labels, source_url, start, stub_labels) + "\n"
            + yaml.safe_dump(project, sort_keys=False) + yaml.safe_dump(generic, sort_keys=False))


_SQL = {"string": "{{ dbt.type_string() }}", "integer": "{{ dbt.type_bigint() }}", "double": "double precision",
        "boolean": "boolean", "timestamp": "{{ dbt.type_timestamp() }}", "date": "date"}


def staging_sql(feed: Feed) -> str:
    casts = [f"        cast({c} as {_SQL[t]}) as {c}," for c, t in feed.types.items()]
    return (
        f"-- {feed.name}: typed, one row per {feed.id} (scaffolded; add renames and dedup as needed)\n"
        f"with source as (\n\n    select * from {{{{ source('raw', '{feed.name}') }}}}\n\n)\n\n"
        "select\n" + "\n".join(casts) + "\n        cast(batch_date as date) as batch_date,\n"
        "        cast(loaded_at as {{ dbt.type_timestamp() }}) as loaded_at\n\nfrom source\n"
    )


def _tests(feed: Feed, column: str) -> list[str]:
    """Exactly what the contract implies: not_null for non-nullable columns, unique for the id."""
    return (["unique"] if column == feed.id else []) + ([] if feed.nullable[column] else ["not_null"])


#: dbt `data_type` per contract type (what ingest creates; check-contract compares them)
_DATA_TYPE = {"string": "varchar", "integer": "bigint", "double": "double", "boolean": "boolean",
              "timestamp": "timestamp", "date": "date"}


def sources_yml(feeds: list[Feed]) -> str:
    tables = [{"name": f.name, "columns": [{"name": c, "data_type": _DATA_TYPE[t]} for c, t in f.types.items()]}
              for f in feeds]
    return yaml.safe_dump({"sources": [{"name": "raw", "schema": "raw", "tables": tables}]}, sort_keys=False)


def models_yml(feeds: list[Feed]) -> str:
    models = []
    for f in feeds:
        cols = []
        for c in f.types:
            col: dict[str, Any] = {"name": c}
            if _tests(f, c):
                col["data_tests"] = _tests(f, c)
            cols.append(col)
        models.append({"name": f"stg_raw__{f.name}", "columns": cols})
    return yaml.safe_dump({"models": models}, sort_keys=False)


def mart_sql(name: str, events: Feed) -> str:
    return (
        f"-- TODO: the point-in-time features of ml.ml_{name}_features, one row per {events.id};\n"
        "-- every column named in the config's model features must come out of here.\n"
        f"select\n    {events.id},\n    {events.time},\n    batch_date\n"
        f"from {{{{ ref('stg_raw__{events.name}') }}}}\n"
    )


def training_set_sql(name: str, events: Feed) -> str:
    return (
        f"-- TODO: the features of ml_{name}_features joined to their matured labels (`label`), one row per {events.id}.\n"
        f"select\n    f.*,\n    cast(null as integer) as label\nfrom {{{{ ref('ml_{name}_features') }}}} as f\n"
    )


def marts_yml(name: str, events: Feed) -> str:
    """The marts' documented columns: what `check-contract` compares the model's features and target with."""
    keys = [{"name": events.id, "data_tests": ["unique", "not_null"]}, {"name": events.time}, {"name": "batch_date"}]
    return yaml.safe_dump({"models": [
        {"name": f"ml_{name}_features", "description": "TODO: point-in-time features, one row per event",
         "columns": keys},
        {"name": f"ml_{name}_training_set", "description": "TODO: features + matured label",
         "columns": [*keys, {"name": "label"}]},
    ]}, sort_keys=False)


def suite_json(feed: Feed) -> str:
    return json.dumps({
        "name": f"raw_{feed.name}",
        "meta": {"description": f"Extras for the {feed.name} feed; its column checks are generated from the contract.",
                 "parameters": {}},
        "expectations": [],
    }, indent=2) + "\n"


def scaffold(name: str, sample: Path, labels_sample: Path | None = None, out: Path | None = None) -> dict[str, Any]:
    """Write the files (never over existing ones); return {written: [...], kept: [...], todo: [...]}."""
    if not _IDENT.match(name):
        raise ScaffoldError(f"model name {name!r} must be an identifier (letters, digits, _; not starting with a digit)")
    out = out or Path("models") / name
    frame = read_sample(sample)
    events = guess_feed(_feed_name(sample, f"{name}_events"), frame)
    if events.time is None:
        raise ScaffoldError(f"the sample {sample} has no timestamp column: the events feed needs one (contract.events.time)")
    stub_labels = labels_sample is None
    if labels_sample is None:
        labels = stub_label_feed(name, events)
    else:
        labels = guess_feed(_feed_name(labels_sample, f"{name}_labels"), read_sample(labels_sample), prefer_id=events.id)
        if labels.time is None:
            raise ScaffoldError(f"the labels sample {labels_sample} has no timestamp column (contract.labels.reported_at)")
        if labels.name == events.name:
            labels = Feed(f"{labels.name}_labels", labels.types, labels.nullable, labels.id, labels.time, labels.guessed)
    start = pd.Timestamp(frame[events.time].min()).date() if frame[events.time].notna().any() else dt.date.today()
    source_url = sample.resolve().parent.as_uri()
    feeds = [events, labels]
    files = {
        "closedloop.yaml": config_text(name, events, labels, source_url, start, stub_labels, out),
        "dbt/staging/_raw__sources.yml": sources_yml(feeds),
        "dbt/staging/_raw__models.yml": models_yml(feeds),
        f"dbt/marts/ml_{name}_features.sql": mart_sql(name, events),
        f"dbt/marts/ml_{name}_training_set.sql": training_set_sql(name, events),
        "dbt/marts/_ml__models.yml": marts_yml(name, events),
        **{f"dbt/staging/stg_raw__{f.name}.sql": staging_sql(f) for f in feeds},
        **{f"expectations/raw_{f.name}.json": suite_json(f) for f in feeds},
    }
    written, kept = [], []
    for rel, text in files.items():
        path = out / rel
        if path.exists():
            kept.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(str(path))
    todo = [line.strip() for line in files["closedloop.yaml"].splitlines() if TODO in line and not line.startswith("#")]
    return {"out": str(out), "written": written, "kept": kept, "todo": todo}
