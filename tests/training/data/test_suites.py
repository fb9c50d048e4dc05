"""Expectation suites: the contract generates the raw feeds' checks, JSON files add extras and hold the
other suites; all are synced into GX without duplication."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.config import Config, with_overrides
from training.data import suites
from training.paths import StatePaths


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    return StatePaths(tmp_path / "state").ensure()


def test_suites_sync_idempotently_from_json(paths: StatePaths) -> None:
    context = suites.get_context(paths)
    for _ in range(2):
        suites.sync_suites(context)
    stored = {s.name: s for s in context.suites.all()}
    assert set(stored) == set(suites.suite_names()) >= {"raw_transactions", "ml_transaction_features"}
    for name, suite in stored.items():
        assert len(suite.expectations) == len(suites.resolve_suite(name)["expectations"])
        assert all(e.meta.get("guards") for e in suite.expectations)


def test_invalid_suite_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(suites.SuiteError, match="broken.json is not valid JSON"):
        suites.load_suite_file("broken", tmp_path)
    (tmp_path / "unguarded.json").write_text(json.dumps(
        {"name": "unguarded", "expectations": [{"type": "expect_column_to_exist", "kwargs": {"column": "a"}}]}
    ))
    with pytest.raises(suites.SuiteError, match="no meta.guards"):
        suites.load_suite_file("unguarded", tmp_path)
    with pytest.raises(suites.SuiteError, match="available: broken, unguarded"):
        suites.load_suite_file("missing", tmp_path)


def test_raw_suites_are_generated_from_the_contract_plus_the_files_extras(base_config: Config) -> None:
    contract = base_config.contract
    suite = suites.resolve_suite("raw_transactions", contract)
    exps = suite["expectations"]
    by = {(e["type"], e["kwargs"].get("column")): e for e in exps}
    # schema first: exactly the contract's columns, in the contract's order
    assert exps[0]["kwargs"] == {"column_set": list(contract.events.columns), "exact_match": True}
    # every non-nullable column refuses any null (no `mostly`: dbt's not_null refuses one row)
    not_null = {c for (t, c), e in by.items() if t == "expect_column_values_to_not_be_null"}
    assert not_null == {c for c, r in contract.events.columns.items() if not r.nullable}
    assert all("mostly" not in e["kwargs"] for e in exps)
    assert by[("expect_column_values_to_not_be_null", "merchant_category")]["meta"]["contract_rule"] == (
        "contract.events.columns.merchant_category.nullable"
    )
    assert by[("expect_column_values_to_be_unique", "transaction_id")]
    assert by[("expect_column_values_to_be_in_set", "channel")]["kwargs"]["value_set"] == ["online", "in_store"]
    assert by[("expect_column_values_to_be_between", "amount")]["kwargs"] == {
        "column": "amount", "min_value": 0.01, "max_value": 100000}
    assert by[("expect_column_values_to_be_between", "event_ts")]["kwargs"]["min_value"] == {
        "$PARAMETER": "interval_start"}
    # the file adds the median check (marked extra) and sets the meta; the id is the contract's
    assert [e["type"] for e in exps if e["meta"].get("extra")] == ["expect_column_median_to_be_between"]
    assert suite["meta"]["id_column"] == "transaction_id" and suite["meta"]["table"] == "raw.transactions"
    labels = suites.resolve_suite("raw_chargebacks", contract)
    assert labels["meta"]["id_column"] == "chargeback_id" and labels["meta"]["parameters"]["min_rows"] == 0

    # a contract change is the suite change: a nullable column loses its not_null check
    relaxed = with_overrides(base_config, contract={"events": {"columns": {"device_id": {"nullable": True}}}})
    relaxed_types = {(e["type"], e["kwargs"].get("column"))
                     for e in suites.resolve_suite("raw_transactions", relaxed.contract)["expectations"]}
    assert ("expect_column_values_to_not_be_null", "device_id") not in relaxed_types


def test_a_feed_without_a_suite_file_gets_its_generated_suite(base_config: Config, tmp_path: Path) -> None:
    suite = suites.resolve_suite("raw_transactions", base_config.contract, expectations_dir=tmp_path)
    assert suite["meta"]["generated_from"] == "contract.events"
    assert not any(e["meta"].get("extra") for e in suite["expectations"])
