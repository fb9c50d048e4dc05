"""`ml_training_set`: only matured transactions, and their labels agree with the simulator's truth."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from examples.card_fraud import simulator
from tests.dbt.conftest import BuiltWarehouse, read_table


def test_no_row_is_younger_than_label_maturity(built_warehouse: BuiltWarehouse) -> None:
    training = read_table(built_warehouse.paths, "ml.ml_training_set")
    features = read_table(built_warehouse.paths, "ml.ml_transaction_features")
    maturity = dt.timedelta(days=built_warehouse.cfg.windows.label_maturity_days)
    cutoff = pd.Timestamp(built_warehouse.as_of - maturity)

    assert len(training) > 5_000
    assert training["event_ts"].max() < cutoff
    # ... and every matured transaction is there (the filter is a cut-off, not a sample).
    matured = features[features["event_ts"] < cutoff]
    assert sorted(training["transaction_id"]) == sorted(matured["transaction_id"])
    # The training rows carry the very same features.
    same = training[features.columns].set_index("transaction_id").sort_index()
    pd.testing.assert_frame_equal(same, matured.set_index("transaction_id").sort_index())


def test_labels_agree_with_ground_truth_for_matured_rows(built_warehouse: BuiltWarehouse) -> None:
    training = read_table(built_warehouse.paths, "ml.ml_training_set")
    spec = built_warehouse.cfg.simulator
    truth = pd.concat([simulator.ground_truth(spec, day) for day in built_warehouse.days], ignore_index=True)
    merged = training.merge(
        truth[["transaction_id", "is_fraud"]], on="transaction_id", suffixes=("", "_truth")
    )

    assert len(merged) == len(training)
    assert merged["is_fraud_truth"].sum() > 50, "need enough frauds for the check to mean something"
    assert (merged["is_fraud"] == merged["is_fraud_truth"].astype(int)).all()

    frauds = training[training["is_fraud"] == 1]
    assert frauds["label_reported_at"].notna().all()
    assert (frauds["label_reported_at"] > frauds["event_ts"]).all()
    assert (frauds["label_reported_at"] < pd.Timestamp(built_warehouse.as_of)).all()
    assert training.loc[training["is_fraud"] == 0, "label_reported_at"].isna().all()


def test_young_transactions_would_have_had_missing_labels(built_warehouse: BuiltWarehouse) -> None:
    """Why maturity matters: among the excluded (young) transactions, some frauds have no label yet."""
    features = read_table(built_warehouse.paths, "ml.ml_transaction_features")
    labels = read_table(built_warehouse.paths, "intermediate.int_transaction_labels")
    spec = built_warehouse.cfg.simulator
    truth = pd.concat([simulator.ground_truth(spec, day) for day in built_warehouse.days], ignore_index=True)
    maturity = dt.timedelta(days=built_warehouse.cfg.windows.label_maturity_days)
    young = features[features["event_ts"] >= pd.Timestamp(built_warehouse.as_of - maturity)]
    young_frauds = truth[truth["is_fraud"] & truth["transaction_id"].isin(young["transaction_id"])]
    unlabelled = ~young_frauds["transaction_id"].isin(labels["transaction_id"])
    assert unlabelled.sum() > 0
