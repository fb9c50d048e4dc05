"""`python -m training new-model`: a config, dbt stubs and suites from a sample that agree with each other."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from training.config import load_config
from training.data import contract_check
from training.data.dbt import PROFILES_DIR

ROOT = Path(__file__).resolve().parents[2]


def _sample(tmp_path: Path) -> tuple[Path, Path]:
    n = 60
    orders = pd.DataFrame({
        "order_id": [f"o-{i:04d}" for i in range(n)],
        "created_at": pd.date_range("2026-03-01", periods=n, freq="h"),
        "customer_id": [f"c-{i % 7}" for i in range(n)],
        "amount": np.linspace(1.0, 100.0, n),
        "items": np.arange(n, dtype="int64"),
        "channel": ["web", "app"] * (n // 2),
        "coupon": [None if i % 3 else "SPRING" for i in range(n)],
    })
    returns = pd.DataFrame({
        "return_id": [f"r-{i}" for i in range(5)],
        "order_id": [f"o-{i:04d}" for i in range(5)],
        "returned_at": pd.date_range("2026-03-04", periods=5, freq="D").astype(str),  # CSV: text timestamps
    })
    orders.to_parquet(tmp_path / "orders.parquet")
    returns.to_csv(tmp_path / "returns.csv", index=False)
    return tmp_path / "orders.parquet", tmp_path / "returns.csv"


def _new_model(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}
    return subprocess.run([sys.executable, "-m", "training", "new-model", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def test_the_scaffold_parses_and_marks_its_guesses(tmp_path):
    orders, returns = _sample(tmp_path)
    out = tmp_path / "returns_model"
    run = _new_model("returns", "--sample", str(orders), "--labels-sample", str(returns), "--out", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert result["kept"] == [] and len(result["written"]) == 10

    cfg = load_config(out / "closedloop.yaml")
    events, labels = cfg.contract.events, cfg.contract.labels
    assert (events.feed, events.id, events.time) == ("orders", "order_id", "created_at")
    assert {c: r.type for c, r in events.columns.items()} == {
        "order_id": "string", "created_at": "timestamp", "customer_id": "string", "amount": "double",
        "items": "integer", "channel": "string", "coupon": "string"}
    assert events.columns["coupon"].nullable and not events.columns["amount"].nullable
    assert events.columns["order_id"].unique
    assert (labels.feed, labels.id, labels.event_id, labels.reported_at) == ("returns", "return_id", "order_id", "returned_at")
    assert cfg.contract.source.kind == "file_drop" and cfg.contract.source.url.startswith("file://")
    assert str(cfg.contract.start_date) == "2026-03-01"
    assert cfg.simulator is None and cfg.model.name == "returns"
    assert set(cfg.model.numeric_features + cfg.model.categorical_features) == {"amount", "items", "channel", "coupon"}
    text = (out / "closedloop.yaml").read_text()
    assert "id: order_id   # TODO: check" in text and "time: created_at   # TODO: check" in text

    staging = yaml.safe_load((out / "dbt/staging/_raw__models.yml").read_text())
    tests = {(m["name"], c["name"]): c.get("data_tests", []) for m in staging["models"] for c in m["columns"]}
    assert tests[("stg_raw__orders", "order_id")] == ["unique", "not_null"]
    assert tests[("stg_raw__orders", "coupon")] == []  # nullable in the contract: no not_null test
    sources = yaml.safe_load((out / "dbt/staging/_raw__sources.yml").read_text())
    assert [t["name"] for t in sources["sources"][0]["tables"]] == ["orders", "returns"]
    for suite in ("raw_orders", "raw_returns"):
        assert json.loads((out / f"expectations/{suite}.json").read_text())["expectations"] == []
    assert (out / "dbt/marts/ml_returns_features.sql").is_file()

    # a second run keeps every file the user may have edited since
    (out / "closedloop.yaml").write_text(text + "# edited\n")
    again = json.loads(_new_model("returns", "--sample", str(orders), "--labels-sample", str(returns),
                                   "--out", str(out)).stdout)
    assert again["written"] == [] and len(again["kept"]) == 10
    assert (out / "closedloop.yaml").read_text().endswith("# edited\n")


def test_check_contract_on_the_scaffold_reports_only_the_feature_todos(tmp_path):
    """dbt parses the scaffolded models (in a throwaway project laid out like examples/card_fraud/dbt/); the contract check
    then agrees with the sources and staging tests, and what it reports is the features still to write."""
    orders, _ = _sample(tmp_path)
    out = tmp_path / "m"
    assert _new_model("shop", "--sample", str(orders), "--out", str(out)).returncode == 0
    project = tmp_path / "dbt"
    shutil.copytree(out / "dbt", project / "models")
    shutil.copytree(load_config().project.dbt_path / "macros", project / "macros")
    (project / "dbt_project.yml").write_text(yaml.safe_dump({
        "name": "closedloop", "version": "1.0.0", "config-version": 2, "profile": "closedloop",
        "models": {"closedloop": {"staging": {"+schema": "staging"}, "marts": {"+schema": "ml"}}},
    }))
    dbt = shutil.which("dbt", path=str(Path(sys.executable).parent))
    if dbt is None:
        pytest.fail("dbt is not installed in this environment")
    parsed = subprocess.run(
        [dbt, "parse", "--project-dir", str(project), "--profiles-dir", str(PROFILES_DIR),
         "--target-path", str(tmp_path / "target")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "CLOSEDLOOP_WAREHOUSE": str(tmp_path / "w.duckdb"), "DBT_LOG_PATH": str(tmp_path / "logs")},
    )
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr
    cfg = load_config(out / "closedloop.yaml")
    mismatches = contract_check.check(cfg, tmp_path / "target" / "manifest.json", expectations_dir=out / "expectations",
                                       config_path=out / "closedloop.yaml")
    lines = [m.line() for m in mismatches]
    print("\n".join(lines))
    # sources, staging tests and marts agree with the contract; what is left is writing the features
    assert sorted(m.column for m in mismatches) == ["amount", "channel", "coupon", "items"], lines
    assert all("does not produce" in m.problem for m in mismatches), lines


def test_a_sample_without_a_time_column_is_refused_with_what_to_do(tmp_path):
    pd.DataFrame({"order_id": ["a", "b"], "amount": [1.0, 2.0]}).to_csv(tmp_path / "orders.csv", index=False)
    run = _new_model("shop", "--sample", str(tmp_path / "orders.csv"), "--out", str(tmp_path / "m"))
    assert run.returncode == 1
    assert "ScaffoldError" in run.stderr and "no timestamp column" in run.stderr, run.stderr
    assert not (tmp_path / "m").exists()
