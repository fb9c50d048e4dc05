"""`python -m training check-contract` against the real dbt manifest (parsed once per session).

The shipped project agrees with its contract; each way of breaking the agreement (a missing column,
a wrong type, an unknown feature, a suite for a column that does not exist, a dbt test stricter than
the contract) produces its own line naming the file, the column and the fix.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from training.cli import main
from training.config import Config, load_config, parse_config, with_overrides
from training.data import contract_check


@pytest.fixture(scope="module")
def manifest(dbt_manifest: Path) -> dict:
    return json.loads(dbt_manifest.read_text())


def _lines(cfg: Config, manifest: dict, **kwargs) -> list[str]:
    return [m.line() for m in contract_check.check(cfg, manifest, **kwargs)]


def _one(lines: list[str], *parts: str) -> str:
    hits = [line for line in lines if all(p in line for p in parts)]
    assert len(hits) == 1, lines
    assert "Fix: " in hits[0]
    return hits[0]


def test_the_shipped_project_agrees_with_its_contract(base_config, manifest, dbt_manifest, tmp_path, capsys):
    assert _lines(base_config, manifest) == []
    assert main(["--home", str(tmp_path / "state"), "check-contract", "--manifest", str(dbt_manifest)]) == 0
    assert capsys.readouterr().out.strip() == "contract ok"


def test_a_missing_column_either_way_is_named(base_config, manifest):
    extra = with_overrides(base_config, contract={"events": {"columns": {"loyalty_tier": {"type": "string"}}}})
    _one(_lines(extra, manifest), "examples/card_fraud/dbt/models/staging/raw/_raw__sources.yml", "raw.transactions.loyalty_tier",
         "contract.events.columns declares")

    data = base_config.model_dump(mode="json")
    del data["contract"]["labels"]["columns"]["reason_code"]
    fewer = parse_config(data)
    _one(_lines(fewer, manifest), "_raw__sources.yml", "raw.chargebacks.reason_code", "the dbt source declares")


def test_a_wrong_type_is_named(base_config, manifest):
    typed = copy.deepcopy(manifest)
    typed["sources"]["source.closedloop.raw.transactions"]["columns"]["amount"]["data_type"] = "varchar"
    _one(_lines(base_config, typed), "_raw__sources.yml", "raw.transactions.amount", "declared as varchar",
         "contract.events.columns.amount.type is double")

    as_text = with_overrides(base_config, contract={"events": {"columns": {
        "amount": {"type": "string", "min": None, "max": None}}}})
    _one(_lines(as_text, manifest), "examples/card_fraud/expectations/raw_transactions.json", "amount",
         "expect_column_median_to_be_between is a numeric check")


def test_an_unknown_feature_or_slice_column_is_named(base_config, manifest):
    cfg = with_overrides(base_config, model={
        "numeric_features": [*base_config.model.numeric_features, "amount_zscore"],
        "slice_columns": [*base_config.model.slice_columns, "issuer_bank"],
    })
    lines = _lines(cfg, manifest)
    _one(lines, "config/closedloop.yaml", "amount_zscore", "model.numeric_features", "does not produce")
    _one(lines, "config/closedloop.yaml", "issuer_bank", "model.slice_columns", "does not produce")
    assert len(lines) == 2


def test_a_suite_for_a_column_that_does_not_exist_is_named(base_config, manifest, tmp_path):
    shutil.copytree(load_config().project.expectations_path, tmp_path, dirs_exist_ok=True)
    raw = json.loads((tmp_path / "raw_transactions.json").read_text())
    raw["expectations"].append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "merchant_name"},
                                "meta": {"guards": "a column the feed does not have"}})
    (tmp_path / "raw_transactions.json").write_text(json.dumps(raw))
    mart = json.loads((tmp_path / "ml_transaction_features.json").read_text())
    mart["expectations"].append({"type": "expect_column_values_to_be_between",
                                 "kwargs": {"column": "amount_zscore", "min_value": -10, "max_value": 10},
                                 "meta": {"guards": "a feature the mart does not have"}})
    (tmp_path / "ml_transaction_features.json").write_text(json.dumps(mart))
    lines = _lines(base_config, manifest, expectations_dir=tmp_path)
    _one(lines, "raw_transactions.json: merchant_name", "not in contract.events.columns")
    _one(lines, "ml_transaction_features.json: amount_zscore", "not in the suite's expect_table_columns_to_match_set")
    assert len(lines) == 2


def test_a_dbt_test_stricter_than_the_contract_is_a_mismatch(base_config, manifest):
    relaxed = with_overrides(base_config, contract={"events": {"columns": {
        "merchant_category": {"nullable": True}, "channel": {"allowed": ["online", "in_store", "moto"]}}}})
    lines = _lines(relaxed, manifest)
    _one(lines, "_raw__models.yml", "stg_raw__transactions.merchant_category", "not_null",
         "the door would admit a row dbt refuses")
    _one(lines, "_raw__models.yml", "stg_raw__transactions.channel", "accepted_values", "moto")
    # a warn-severity test never blocks a build: the chargebacks' reason_code accepted_values is one
    wider = with_overrides(base_config, contract={"labels": {"columns": {"reason_code": {"allowed": ["fraud", "dispute"]}}}})
    assert _lines(wider, manifest) == []


def test_the_cli_prints_one_line_per_mismatch_and_exits_1(base_config, dbt_manifest, tmp_path, capsys):
    data = base_config.model_dump(mode="json")
    data["model"]["categorical_features"].append("card_brand")
    config = tmp_path / "model.yaml"
    config.write_text(yaml.safe_dump(data))
    rc = main(["--config", str(config), "--home", str(tmp_path / "state"), "check-contract",
               "--manifest", str(dbt_manifest)])
    out, err = capsys.readouterr()
    assert rc == 1
    (line,) = out.strip().splitlines()
    assert line.startswith(f"{config}: card_brand: model.numeric_features / categorical_features names a column")
    assert "1 contract mismatch" in err
