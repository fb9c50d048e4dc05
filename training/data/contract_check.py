"""`python -m training check-contract`: does the data contract agree with dbt, the suites and the features?

The front door's raw checks are generated from the contract (training.data.suites), so they cannot
disagree with it; what can disagree is everything written by hand around it. This compares:

- the dbt sources (`raw.<feed>`): their declared columns (and `data_type`, where declared) against
  the contract's columns and types;
- the staging models' data tests against the contract's rules: a `not_null`, `unique` or
  `accepted_values` test the contract does not imply is a mismatch, because the door would admit a
  row dbt then refuses (on that day and every later one). Tests with `severity: warn` never block;
- the suite files: an expectation on a column its table does not have, or a numeric check on a
  column the contract types otherwise;
- the features: each model feature, slice column, the id and time column must be produced by the
  features mart (per the manifest's documented columns and the mart suite's column set), the target
  by the training-set mart;
- an existing warehouse's raw tables against the contract's DDL (`create table if not exists`
  never changes a table created from an older contract).

Each mismatch is one line naming the file, the column and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import DEFAULT_CONFIG_PATH, PROJECT_ROOT, Config
from training.contract import ColumnRule, DataContract, _Feed
from training.data import suites
from training.data.ingest import SQL_TYPES
from training.errors import ClosedloopError
from training.paths import StatePaths
from training.settings import settings
from training.storage import warehouse

BOOKKEEPING = set(suites.BOOKKEEPING_COLUMNS)
#: expectations that only make sense on numbers (a `wrong type` when the contract says otherwise)
NUMERIC_EXPECTATIONS = {
    "expect_column_values_to_be_between", "expect_column_median_to_be_between", "expect_column_mean_to_be_between",
    "expect_column_min_to_be_between", "expect_column_max_to_be_between", "expect_column_sum_to_be_between",
    "expect_column_stdev_to_be_between", "expect_column_quantile_values_to_be_between",
}
#: SQL type names (as dbt `data_type` or the warehouse reports them) -> contract types
_SQL_TO_CONTRACT = {
    "varchar": "string", "text": "string", "string": "string", "character varying": "string",
    "bigint": "integer", "integer": "integer", "int": "integer", "int64": "integer", "smallint": "integer",
    "hugeint": "integer", "int4": "integer", "int8": "integer",
    "double": "double", "double precision": "double", "float": "double", "float8": "double", "real": "double",
    "float4": "double", "numeric": "double", "decimal": "double",
    "boolean": "boolean", "bool": "boolean",
    "timestamp": "timestamp", "timestamp without time zone": "timestamp", "datetime": "timestamp",
    "date": "date",
}


class ContractMismatches(ClosedloopError, ValueError):
    """`check-contract` found mismatches (already printed, one per line)."""


@dataclass(frozen=True)
class Mismatch:
    file: str
    column: str
    problem: str
    fix: str

    def line(self) -> str:
        return f"{self.file}: {self.column}: {self.problem}. Fix: {self.fix}"


def _contract_type(sql_type: str) -> str | None:
    base = sql_type.strip().lower().split("(")[0].strip()
    return _SQL_TO_CONTRACT.get(base)


def _rel(path: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _role(contract: DataContract, feed: _Feed) -> str:
    return "events" if feed is contract.events else "labels"


# --------------------------------------------------------------------------------------------
# dbt: sources and staging tests
# --------------------------------------------------------------------------------------------


def _dbt_file(node: dict[str, Any], dbt_dir: Path) -> str:
    return _rel(dbt_dir / str(node.get("original_file_path") or node.get("path") or "?"))


def check_sources(contract: DataContract, manifest: dict[str, Any], dbt_dir: Path) -> list[Mismatch]:
    out = []
    sources = {(s["schema"], s["name"]): s for s in manifest.get("sources", {}).values()}
    for feed in contract.feeds.values():
        role = _role(contract, feed)
        schema, table = feed.raw_table.split(".")
        source = sources.get((schema, table))
        if source is None:
            out.append(Mismatch(_rel(dbt_dir / "models"), feed.raw_table,
                                f"no dbt source for contract feed {feed.feed!r}",
                                f"declare source {schema}.{table} (its staging model selects from it)"))
            continue
        file = _dbt_file(source, dbt_dir)
        declared = {name: col for name, col in (source.get("columns") or {}).items() if name not in BOOKKEEPING}
        for name in feed.columns:
            if name not in declared:
                out.append(Mismatch(file, f"{feed.raw_table}.{name}",
                                    f"contract.{role}.columns declares {name!r} but the dbt source does not",
                                    f"add it to the source's columns, or remove it from contract.{role}.columns"))
        for name, col in declared.items():
            if name not in feed.columns:
                out.append(Mismatch(file, f"{feed.raw_table}.{name}",
                                    f"the dbt source declares {name!r} but contract.{role}.columns does not "
                                    "(ingest would never load it)",
                                    f"add it to contract.{role}.columns, or remove it from the source"))
                continue
            out += _type_mismatch(file, f"{feed.raw_table}.{name}", col.get("data_type"), feed.columns[name],
                                  f"contract.{role}.columns.{name}.type")
    return out


def _type_mismatch(file: str, where: str, sql_type: str | None, rule: ColumnRule, rule_name: str) -> list[Mismatch]:
    if not sql_type:
        return []
    declared = _contract_type(sql_type)
    if declared is None or declared == rule.type:
        return []
    return [Mismatch(file, where, f"declared as {sql_type} ({declared}) but {rule_name} is {rule.type}",
                     f"make both say the same type (the raw table is created as {SQL_TYPES[rule.type]})")]


def _staging_models(contract: DataContract, manifest: dict[str, Any]) -> dict[str, tuple[_Feed, dict[str, Any]]]:
    """Staging models (those selecting from a contract feed's source) by unique_id."""
    by_source = {sid: feed for sid, s in manifest.get("sources", {}).items()
                 for feed in contract.feeds.values() if f"{s['schema']}.{s['name']}" == feed.raw_table}
    out = {}
    for uid, node in manifest.get("nodes", {}).items():
        if node.get("resource_type") != "model":
            continue
        for dep in node.get("depends_on", {}).get("nodes", []):
            if dep in by_source:
                out[uid] = (by_source[dep], node)
    return out


def check_staging_tests(
    contract: DataContract, manifest: dict[str, Any], dbt_dir: Path
) -> list[Mismatch]:
    """A blocking dbt test on a staging column must be implied by the contract's rule for it."""
    staging = _staging_models(contract, manifest)
    out = []
    for feed, model in staging.values():
        role = _role(contract, feed)
        file = _dbt_file(model, dbt_dir)
        for name, col in (model.get("columns") or {}).items():
            if name in feed.columns:
                out += _type_mismatch(file, f"{model['name']}.{name}", col.get("data_type"), feed.columns[name],
                                      f"contract.{role}.columns.{name}.type")
    for node in manifest.get("nodes", {}).values():
        if node.get("resource_type") != "test" or node.get("attached_node") not in staging:
            continue
        if str((node.get("config") or {}).get("severity", "error")).lower() == "warn":
            continue  # a warning never blocks a build
        feed, model = staging[node["attached_node"]]
        meta = node.get("test_metadata") or {}
        out += _test_mismatch(contract, feed, model, node, meta.get("name"), node.get("column_name"),
                              meta.get("kwargs") or {}, dbt_dir)
    return out


def _test_mismatch(contract: DataContract, feed: _Feed, model: dict[str, Any], test: dict[str, Any],
                   kind: str | None, column: str | None, kwargs: dict[str, Any], dbt_dir: Path) -> list[Mismatch]:
    role = _role(contract, feed)
    file = _dbt_file(test, dbt_dir)  # the yml that declares the test
    where = f"{model['name']}.{column}" if column else model["name"]
    relax = "or give the test `config: {severity: warn}`"
    if column in BOOKKEEPING:
        return []  # ingest sets batch_date / loaded_at on every row
    if kind is None or column is None:
        return [Mismatch(file, where, f"dbt test {test.get('name')} blocks the build on a rule the contract "
                                      "cannot express, so the door cannot quarantine the rows it refuses",
                         f"express it as a contract rule, or {relax}")]
    rule = feed.columns.get(column)
    if rule is None:
        return [Mismatch(file, where, f"dbt test {kind} on a column that is not in contract.{role}.columns",
                         f"name the column as the contract does, add it to the contract, or {relax}")]
    rule_name = f"contract.{role}.columns.{column}"
    if kind == "not_null" and rule.nullable:
        return [Mismatch(file, where, f"dbt's not_null refuses nulls but {rule_name} is nullable: the door would "
                                      "admit a row dbt refuses", f"set nullable: false in the contract, {relax}")]
    if kind == "unique" and not rule.unique:
        return [Mismatch(file, where, f"dbt's unique test refuses duplicates but {rule_name} is not unique",
                         f"set unique: true in the contract, {relax}")]
    if kind == "accepted_values":
        values = (kwargs.get("arguments") or kwargs).get("values") or kwargs.get("values") or []
        if rule.allowed is None or not set(map(str, rule.allowed)) <= set(map(str, values)):
            return [Mismatch(file, where, f"dbt's accepted_values test accepts only {values} but {rule_name}.allowed is {rule.allowed}",
                             f"set allowed to (a subset of) {values} in the contract, {relax}")]
        return []
    if kind == "relationships" and feed is contract.labels and column == contract.labels.event_id:
        return []  # the door holds labels whose event was never loaded (labels_refer_to_known_events)
    if kind in ("not_null", "unique"):
        return []
    return [Mismatch(file, where, f"dbt test {kind} blocks the build on a rule the contract cannot express",
                     f"express it as a contract rule (type, nullable, unique, allowed, min/max, regex), or {relax}")]


# --------------------------------------------------------------------------------------------
# suites and features
# --------------------------------------------------------------------------------------------


def _model_columns(manifest: dict[str, Any], qualified: str) -> tuple[dict[str, Any] | None, list[str]]:
    schema, table = qualified.split(".")
    for node in manifest.get("nodes", {}).values():
        if node.get("resource_type") == "model" and node.get("schema") == schema and (
            (node.get("alias") or node.get("name")) == table
        ):
            return node, list(node.get("columns") or {})
    return None, []


def _expectation_columns(exp: dict[str, Any]) -> list[str]:
    kw = exp.get("kwargs") or {}
    cols = [kw[k] for k in ("column", "column_A", "column_B") if isinstance(kw.get(k), str)]
    return cols + [c for c in kw.get("column_list") or [] if isinstance(c, str)]


def check_suites(contract: DataContract, manifest: dict[str, Any], expectations_dir: Path) -> list[Mismatch]:
    out = []
    for path in sorted(expectations_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            out.append(Mismatch(_rel(path), "-", f"not valid JSON ({exc})", "fix the file"))
            continue
        found = suites.contract_feed_of(path.stem, contract)
        meta = data.get("meta") or {}
        if found is not None:
            role, feed = found
            columns: list[str] | None = feed.column_names
            source = f"contract.{role}.columns"
        else:
            exps = data.get("expectations") or []
            match = [e for e in exps if e.get("type") == "expect_table_columns_to_match_set"]
            columns = list((match[0].get("kwargs") or {}).get("column_set") or []) if match else None
            source = "the suite's expect_table_columns_to_match_set"
            if columns is None and meta.get("table"):
                node, cols = _model_columns(manifest, str(meta["table"]))
                columns, source = (cols, f"dbt model {meta['table']}'s columns") if node and cols else (None, "")
        if columns is None:
            continue
        for exp in data.get("expectations") or []:
            for col in _expectation_columns(exp):
                if col not in columns:
                    out.append(Mismatch(_rel(path), col, f"{exp.get('type')} checks a column that is not in {source}",
                                        "point the expectation at an existing column, or remove it"))
                elif found is not None and exp.get("type") in NUMERIC_EXPECTATIONS:
                    rule = found[1].columns[col]
                    if rule.type not in ("integer", "double", "timestamp", "date"):
                        out.append(Mismatch(_rel(path), col, f"{exp.get('type')} is a numeric check but "
                                                             f"contract.{found[0]}.columns.{col}.type is {rule.type}",
                                            "fix the column's type in the contract, or drop the expectation"))
    return out


def check_features(
    cfg: Config, manifest: dict[str, Any], expectations_dir: Path, config_path: Path | None = None
) -> list[Mismatch]:
    out = []
    dbt_dir = cfg.project.dbt_path
    marts = cfg.contract.marts
    wanted = {
        **{f: "model.numeric_features / categorical_features" for f in cfg.model.features},
        **{c: "model.slice_columns" for c in cfg.model.slice_columns if c not in cfg.model.features},
        cfg.model.id_column: "model.id_column",
        cfg.model.time_column: "model.time_column",
    }
    node, produced = _model_columns(manifest, marts.features)
    if node is None:
        out.append(Mismatch(_rel(dbt_dir / "models"), marts.features,
                            "contract.marts.features names a model the dbt project does not have",
                            "point contract.marts.features at the features mart (schema.table)"))
    suite_cols = _suite_columns_of(marts.features, expectations_dir)
    config = _rel(config_path or settings().config or DEFAULT_CONFIG_PATH)
    for name, key in wanted.items():
        if node is not None and produced and name not in produced:
            out.append(Mismatch(config, name, f"{key} names a column the features mart {marts.features} does not "
                                              f"produce ({_dbt_file(node, dbt_dir)})",
                                f"add it to the mart (and its yml), or remove it from {key}"))
        elif suite_cols is not None and name not in suite_cols[1]:
            out.append(Mismatch(config, name, f"{key} names a column the features mart's suite "
                                              f"({suite_cols[0]}) does not list",
                                "add it to the suite's expect_table_columns_to_match_set, or fix the name"))
    ts_node, ts_cols = _model_columns(manifest, marts.training_set)
    if ts_node is None:
        out.append(Mismatch(_rel(dbt_dir / "models"), marts.training_set,
                            "contract.marts.training_set names a model the dbt project does not have",
                            "point contract.marts.training_set at the training-set mart (schema.table)"))
    elif ts_cols and cfg.model.target not in ts_cols:
        out.append(Mismatch(config, cfg.model.target, f"model.target is not a column of {marts.training_set} "
                                                      f"({_dbt_file(ts_node, dbt_dir)})",
                            "name the training set's label column in model.target"))
    return out


def _suite_columns_of(table: str, expectations_dir: Path) -> tuple[str, list[str]] | None:
    for path in sorted(expectations_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if (data.get("meta") or {}).get("table") != table:
            continue
        for exp in data.get("expectations") or []:
            if exp.get("type") == "expect_table_columns_to_match_set":
                return _rel(path), list((exp.get("kwargs") or {}).get("column_set") or [])
    return None


def check_warehouse(contract: DataContract, paths: StatePaths) -> list[Mismatch]:
    """Raw tables an older contract created: their columns and types against today's contract."""
    if not warehouse.exists(paths):
        return []
    out = []
    where = settings().dbt_target + " warehouse"
    with warehouse.connect(paths, read_only=True) as con:
        for feed in contract.feeds.values():
            schema, table = feed.raw_table.split(".")
            if not con.table_exists(schema, table):
                continue
            rows = con.frame("select column_name, data_type from information_schema.columns "
                             "where table_schema = ? and table_name = ?", [schema, table])
            have = dict(zip(rows["column_name"].astype(str), rows["data_type"].astype(str), strict=True))
            role = _role(contract, feed)
            for name, rule in feed.columns.items():
                if name not in have:
                    out.append(Mismatch(where, f"{feed.raw_table}.{name}",
                                        f"contract.{role}.columns declares {name!r} but the existing table lacks it",
                                        f"alter table {feed.raw_table} add column {name} {SQL_TYPES[rule.type]}"))
                else:
                    out += _type_mismatch(where, f"{feed.raw_table}.{name}", have[name], rule,
                                          f"contract.{role}.columns.{name}.type")
    return out


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def check(
    cfg: Config,
    manifest: dict[str, Any] | Path,
    *,
    expectations_dir: Path | None = None,
    paths: StatePaths | None = None,
    config_path: Path | None = None,
) -> list[Mismatch]:
    """Every mismatch between the contract and the dbt manifest, the suites, the features (and the warehouse).

    `paths`: also compare that state directory's warehouse; `config_path`: the file the lines name.
    """
    parsed: dict[str, Any] = json.loads(manifest.read_text()) if isinstance(manifest, Path) else manifest
    expectations_dir = expectations_dir or cfg.project.expectations_path
    out = check_sources(cfg.contract, parsed, cfg.project.dbt_path)
    out += check_staging_tests(cfg.contract, parsed, cfg.project.dbt_path)
    out += check_suites(cfg.contract, parsed, expectations_dir)
    out += check_features(cfg, parsed, expectations_dir, config_path)
    if paths is not None:
        out += check_warehouse(cfg.contract, paths)
    return out


def run(cfg: Config, paths: StatePaths, manifest: Path | None = None, config_path: Path | None = None) -> None:
    """The CLI: print one line per mismatch and raise `ContractMismatches`, or print `contract ok`."""
    if manifest is None:
        from training.data.dbt import parse_manifest

        manifest = parse_manifest(paths, cfg)
    mismatches = check(cfg, manifest, paths=paths, config_path=config_path)
    for m in mismatches:
        print(m.line())
    if mismatches:
        raise ContractMismatches(f"{len(mismatches)} contract mismatch(es), listed above")
    print("contract ok")
