"""The serving contract: a model registered by closedloop scores rows read straight from
`published.transaction_features` through plain `mlflow.pyfunc`, with no preparation step.

The published table's feature types and the model's logged input signature are one contract
(docs/contracts.md, "Feature types"): the mart casts every numeric feature to DOUBLE and every
categorical to VARCHAR, and training infers the signature from frames of those same types.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from tests.dbt.conftest import BuiltWarehouse, copy_state, read_table
from tests.synthetic import TEST_OVERRIDES, make_training_set, publish
from training.config import load_config, with_overrides
from training.data import datasets, ingest, quality
from training.model import tracking


def test_mart_feature_columns_have_the_contract_types(built_warehouse: BuiltWarehouse) -> None:
    model = built_warehouse.cfg.model
    with duckdb.connect(str(built_warehouse.paths.warehouse), read_only=True) as con:
        for table in ("ml_transaction_features", "ml_training_set"):
            types = dict(
                con.execute(
                    "select column_name, data_type from information_schema.columns "
                    "where table_schema = 'ml' and table_name = ?",
                    [table],
                ).fetchall()
            )
            for col in model.numeric_features:
                assert types[col] == "DOUBLE", (table, col, types[col])
            for col in model.categorical_features:
                assert types[col] == "VARCHAR", (table, col, types[col])


def test_champion_scores_published_rows_through_plain_pyfunc(
    built_warehouse: BuiltWarehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc

    from training.model.evaluate import evaluate_challenger
    from training.model.train import TrainRequest, train_model

    paths = copy_state(built_warehouse.paths, tmp_path / "state")
    monkeypatch.setenv("CLOSEDLOOP_HOME", str(paths.root))
    monkeypatch.delenv("CLOSEDLOOP_OPS_DB_URL", raising=False)
    day = built_warehouse.days[-1]
    start = dt.datetime.combine(day, dt.time())
    # the real gate and publish path: the feature suite accepts the cast columns
    cfg = with_overrides(load_config(), **TEST_OVERRIDES)
    quality.gate("ml_transaction_features", ingest.read_candidate_features(paths, cfg, day), day, paths)
    ingest.publish(paths, cfg, day, start, start + dt.timedelta(days=1))

    data_version = publish(paths, make_training_set(), "fixture")
    trained = train_model(paths, cfg, TrainRequest(reason="serving contract", data_version=data_version))
    verdict = evaluate_challenger(paths, cfg, version=trained.version)
    assert verdict.action == "first_promote", verdict

    published = read_table(paths, "published.transaction_features")
    assert len(published) > 0 and set(pd.to_datetime(published["batch_date"]).dt.date) == {day}
    tracking.client(paths)
    model = mlflow.pyfunc.load_model(tracking.model_uri(cfg.model.name, alias=tracking.CHAMPION))
    out = model.predict(published)  # straight from the table: no preparation step

    assert list(out.columns) == ["score", "decision"] and len(out) == len(published)
    score = out["score"].to_numpy()
    assert np.isfinite(score).all() and ((score >= 0) & (score <= 1)).all()
    assert set(out["decision"]) <= {"block", "allow"}
    # The same scores the closedloop path (estimator + prepare_for_signature) gives.
    uri = tracking.model_uri(cfg.model.name, version=trained.version)
    X = datasets.prepare_for_signature(published, tracking.input_signature(uri))
    np.testing.assert_allclose(score, tracking.score(tracking.load_model(uri), X), rtol=1e-6)


def test_signature_declares_the_contract_types() -> None:
    """What `train` logs: doubles for numeric features, strings for categoricals - whatever
    integer types the input frame had (the synthetic fixture uses int32/int64)."""
    cfg = with_overrides(load_config(), **TEST_OVERRIDES)
    frame = make_training_set(n_days=1, rows_per_day=20)
    assert frame["tx_count_1h"].dtype == "int64"
    X = datasets.prepare_features(frame, cfg.model)
    sig = datasets.model_signature(cfg.model, X, np.zeros((len(X), 2)))
    types = {c["name"]: c["type"] for c in sig.inputs.to_dict()}
    assert list(types) == [*cfg.model.numeric_features, *cfg.model.categorical_features]
    assert {types[c] for c in cfg.model.numeric_features} == {"double"}
    assert {types[c] for c in cfg.model.categorical_features} == {"string"}


def test_signature_refuses_frames_that_break_the_contract() -> None:
    cfg = with_overrides(load_config(), **TEST_OVERRIDES)
    raw = make_training_set(n_days=1, rows_per_day=20)[list(cfg.model.features)]
    with pytest.raises(datasets.DatasetError, match="tx_count_1h"):
        datasets.model_signature(cfg.model, raw, np.zeros((len(raw), 2)))
