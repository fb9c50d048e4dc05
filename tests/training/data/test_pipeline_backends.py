"""The data side of the loop through the storage seam, on DuckDB and on a real PostgreSQL warehouse.

land → raw gate → load raw → dbt build (the same database) → feature gate → publish → predictions
→ monitoring read. Both backends must publish the same training set (the bytes a model trains on),
and a re-run of a day must replace, never duplicate, on both.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from training.config import Config, with_overrides
from training.data import ingest, quality
from training.data.dbt import default_target, run_dbt
from training.monitoring import windows
from training.paths import StatePaths
from training.serving import inference
from training.storage import warehouse

N_DAYS = 4


@pytest.fixture(scope="module")
def pipe_config(base_config: Config) -> Config:
    return with_overrides(
        base_config,
        simulator={"transactions_per_day": 1200, "n_customers": 300, "n_merchants": 60, "fraud_rate": 0.02},
    )


def _run_days(paths: StatePaths, cfg: Config, days: list[dt.date]) -> dict:
    """What data_pipeline does for each day, stage by stage, then a day re-run."""
    for day in days:
        landed = ingest.land(paths, cfg, day)
        quality.gate("raw_transactions", ingest.read_landed(landed.transactions), day, paths)
        ingest.load_raw(paths, landed)
    run_dbt(["build"], paths, cfg, env={"CLOSEDLOOP_DBT_UNIT_TESTS": "false"})
    extras = {}
    for day in days:
        feats = quality.load_warehouse_batch(day, paths, table="ml.ml_transaction_features")
        quality.gate("ml_transaction_features", feats, day, paths)
        # lineage as the DAG passes it: one GX run id per gated feed, joined (long on purpose)
        lineage = {"gx_run_id": ";".join(f"run__{day}__{suite}@20260101T000000.000000Z" for suite in "abcde")}
        extras[day] = ingest.publish(paths, day, *_bounds(day), lineage=lineage)
    # a re-run of the last day replaces its partitions
    relanded = ingest.land(paths, cfg, days[-1])
    ingest.load_raw(paths, relanded)
    extras[days[-1]] = ingest.publish(paths, days[-1], *_bounds(days[-1]))
    extras["relanded_rows"] = relanded.transactions.rows
    return extras


def _bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time())
    return start, start + dt.timedelta(days=1)


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_data_side_runs_on_each_backend(backend, request, state, pipe_config, monkeypatch):
    if backend == "postgres":
        request.getfixturevalue("pg_warehouse")
    else:
        monkeypatch.delenv("CLOSEDLOOP_DBT_TARGET", raising=False)
    assert default_target() == backend  # dbt builds into the database the stages use
    cfg = pipe_config
    days = [cfg.simulator.start_date + dt.timedelta(days=i) for i in range(N_DAYS)]
    extras = _run_days(state, cfg, days)

    with warehouse.connect(state, read_only=True) as con:
        raw_rows = con.scalar("select count(*) from raw.transactions where batch_date = ?", [days[-1]])
        published = con.frame("select batch_date, count(*) as n from published.transaction_features group by 1 order by 1")
    assert raw_rows == extras["relanded_rows"]  # re-landed day replaced, not doubled
    assert published["n"].tolist() == [extras[d]["feature_rows"] for d in days]

    # predictions written through the seam (twice: a re-run replaces), then read by the monitoring join
    feats = inference.read_interval(state, days[0])
    start, end = _bounds(days[0])
    preds = pd.DataFrame({
        "model_name": cfg.model.name, "model_version": "1", "alias": "champion",
        "transaction_id": feats[cfg.model.id_column].astype(str), "batch_date": days[0],
        "score": np.random.default_rng(0).random(len(feats)), "decision": "allow", "threshold": 0.5,
        "data_interval_start": start, "data_interval_end": end, "scored_at": dt.datetime(2026, 1, 2),
    })[inference.PREDICTION_COLUMNS]
    for _ in range(2):
        inference.write_predictions(state, days[0], {"champion": preds, "challenger": None})
    window = windows.load_current_window(state, cfg, days[0], days[0])
    assert len(window) == len(feats) and set(window["model_version"]) == {"1"}

    # keep the published training set for the cross-backend comparison below
    snapshot = pd.read_parquet(state.published / "training_set.parquet")
    assert len(snapshot) == extras[days[-1]]["training_rows"]
    snapshot.to_parquet(state.root.parent.parent / f"training_set_{backend}.parquet")


def test_both_backends_publish_the_same_training_set(tmp_path_factory, request):
    """Runs after the two parametrised runs above (same module, file order)."""
    base = tmp_path_factory.getbasetemp()
    files = {b: list(base.glob(f"**/training_set_{b}.parquet")) for b in ("duckdb", "postgres")}
    if not all(files.values()):
        pytest.skip("needs both backend runs of test_data_side_runs_on_each_backend in this session")
    duck = pd.read_parquet(files["duckdb"][0]).sort_values("transaction_id").reset_index(drop=True)
    pg = pd.read_parquet(files["postgres"][0]).sort_values("transaction_id").reset_index(drop=True)
    assert list(pg.columns) == list(duck.columns)
    assert pg.dtypes.to_dict() == duck.dtypes.to_dict()
    pd.testing.assert_frame_equal(pg, duck, check_exact=False, rtol=1e-9)
