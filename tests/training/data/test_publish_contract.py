"""Publish reads its tables from the contract: marts with other names publish to another table."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from training.config import Config, with_overrides
from training.data import ingest
from training.paths import StatePaths
from training.storage import ledger, versioning, warehouse

DAY = dt.date(2026, 1, 5)


@pytest.fixture
def loan_marts(state: StatePaths, base_config: Config) -> Config:
    """A contract whose marts live elsewhere, and those marts as dbt would leave them (two days)."""
    cfg = with_overrides(base_config, contract={"marts": {
        "features": "mart.loan_features", "training_set": "mart.loan_training", "published": "serving.loans",
    }})
    id_col = cfg.model.id_column
    features = pd.DataFrame({
        id_col: [f"id-{i}" for i in (3, 1, 2, 4)], "x": [0.3, 0.1, 0.2, 0.4],
        "batch_date": [DAY, DAY, DAY, DAY + dt.timedelta(days=1)],
    })
    with warehouse.connect(state) as con:
        con.execute("create schema mart")
        con.con.register("f", features)  # DuckDB session: fixture tables from frames
        con.execute("create table mart.loan_features as select * from f")
        con.execute("create table mart.loan_training as select *, 0 as target from f")
        con.execute("create table mart.dbt_invocations (invocation_id varchar, model varchar, built_at timestamp)")
        con.execute("insert into mart.dbt_invocations values ('inv-1', 'loan_features', now()::timestamp)")
    return cfg


def test_publish_writes_the_contracts_published_table(state: StatePaths, loan_marts: Config):
    cfg = loan_marts
    assert ingest.published_row_count(state, cfg) == 0  # nothing published yet
    candidate = ingest.read_candidate_features(state, cfg, DAY)
    assert candidate[cfg.model.id_column].tolist() == ["id-1", "id-2", "id-3"]  # the day, by entity id

    start = dt.datetime.combine(DAY, dt.time())
    lineage = {"raw_events_md5": "e" * 32, "raw_labels_md5": "l" * 32,
               "dbt_invocation_id": ingest.latest_dbt_invocation(state, cfg)}
    extra = ingest.publish(state, cfg, DAY, start, start + dt.timedelta(days=1), lineage=lineage)

    assert extra["feature_rows"] == 3 and extra["training_rows"] == 4 and extra["dbt_invocation_id"] == "inv-1"
    assert ingest.published_row_count(state, cfg) == ingest.published_row_count(state, cfg, DAY) == 3
    with warehouse.connect(state, read_only=True) as con:
        assert con.table_exists("serving", "loans") and not con.table_exists("published", "transaction_features")
    record = versioning.get_version(state, extra["data_version"])
    assert (record.raw_events_md5, record.raw_labels_md5) == ("e" * 32, "l" * 32)
    assert "raw_events_md5" in ledger.data_versions.c and "raw_labels_md5" in ledger.data_versions.c


def test_publish_names_the_missing_mart(state: StatePaths, base_config: Config):
    cfg = with_overrides(base_config, contract={"marts": {"features": "mart.nowhere"}})
    with warehouse.connect(state) as con:
        con.execute("create schema if not exists mart")
    with pytest.raises(ingest.PublishError, match="mart.nowhere does not exist"):
        ingest.read_candidate_features(state, cfg, DAY)
    start = dt.datetime.combine(DAY, dt.time())
    with pytest.raises(ingest.PublishError, match="mart.nowhere does not exist"):
        ingest.publish(state, cfg, DAY, start, start + dt.timedelta(days=1))
