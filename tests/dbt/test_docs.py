"""The docs site people read: `dbt docs generate` works and every model and column is described."""

from __future__ import annotations

import json

from tests.dbt.conftest import BuiltWarehouse
from training.data.dbt import parse_manifest, run_dbt


def test_docs_generate_writes_catalog_and_site_into_the_state_dir(built_warehouse: BuiltWarehouse) -> None:
    paths = built_warehouse.paths
    run_dbt(["docs", "generate"], paths, built_warehouse.cfg)
    target = paths.dbt_target
    assert (target / "index.html").is_file()
    catalog = json.loads((target / "catalog.json").read_text())
    manifest = json.loads((target / "manifest.json").read_text())

    models = {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    assert {"ml_transaction_features", "ml_training_set"} <= set(models)
    undocumented = []
    for uid, node in manifest["nodes"].items():
        if node["resource_type"] != "model":
            continue
        if not node["description"].strip():
            undocumented.append(node["name"])
        built_columns = catalog["nodes"][uid]["columns"]
        assert built_columns, f"{node['name']} missing from the catalog"
        for column in built_columns:
            described = node["columns"].get(column.lower(), {}).get("description", "").strip()
            if not described:
                undocumented.append(f"{node['name']}.{column}")
    for source in manifest["sources"].values():
        if not source["description"].strip():
            undocumented.append(source["unique_id"])
        undocumented += [
            f"{source['name']}.{c}" for c, v in source["columns"].items() if not v["description"].strip()
        ]
    assert not undocumented, f"describe these in the models' YAML: {undocumented}"
    # Doc blocks are rendered, not left as jinja.
    assert "{{" not in models["ml_training_set"]["columns"]["is_fraud"]["description"]


def test_parse_manifest_returns_the_manifest_in_the_state_dir(built_warehouse: BuiltWarehouse) -> None:
    manifest = parse_manifest(built_warehouse.paths, built_warehouse.cfg)
    assert manifest == built_warehouse.paths.dbt_target / "manifest.json"
    nodes = json.loads(manifest.read_text())["nodes"]
    assert "model.closedloop.ml_training_set" in nodes


def test_relation_names_fit_postgres(built_warehouse: BuiltWarehouse) -> None:
    """PostgreSQL truncates identifiers at 63 bytes; models and unit tests become relations."""
    manifest = json.loads((built_warehouse.paths.dbt_target / "manifest.json").read_text())
    names = [n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "model"]
    names += [u["name"] for u in manifest.get("unit_tests", {}).values()]
    assert len(names) >= 16
    assert [n for n in names if len(n) > 63] == []
