"""The data side of the loop through the storage seam, on DuckDB and on a real PostgreSQL warehouse.

land → raw gate → load raw → dbt build (the same database) → feature gate → publish → predictions
→ monitoring read. Both backends must publish the same training set (the bytes a model trains on),
and a re-run of a day must replace, never duplicate, on both.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from tests.conftest import pg_warehouse_env
from training.config import Config, with_overrides
from training.data import ingest, quality
from training.data.dbt import default_target, run_dbt
from training.monitoring import windows
from training.paths import StatePaths
from training.serving import inference
from training.storage import versioning, warehouse

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
        quality.gate("raw_transactions", ingest.read_landed(landed.events), day, paths)
        ingest.load_raw(paths, landed)
    run_dbt(["build"], paths, cfg, env={"CLOSEDLOOP_DBT_UNIT_TESTS": "false"})
    extras = {}
    for day in days:
        feats = quality.load_warehouse_batch(day, paths, table="ml.ml_transaction_features")
        quality.gate("ml_transaction_features", feats, day, paths)
        # lineage as the DAG passes it: one GX run id per gated feed, joined (long on purpose)
        lineage = {"gx_run_id": ";".join(f"run__{day}__{suite}@20260101T000000.000000Z" for suite in "abcde")}
        extras[day] = ingest.publish(paths, cfg, day, *_bounds(day), lineage=lineage)
    extras["first_version_of_last_day"] = extras[days[-1]]["data_version"]
    # a re-run of the last day replaces its partitions
    relanded = ingest.land(paths, cfg, days[-1])
    ingest.load_raw(paths, relanded)
    extras[days[-1]] = ingest.publish(paths, cfg, days[-1], *_bounds(days[-1]))
    extras["relanded_rows"] = relanded.events.rows
    return extras


def _bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time())
    return start, start + dt.timedelta(days=1)


@dataclass(frozen=True)
class BackendRun:
    """One backend's data side, run once per module: its state dir, warehouse settings and results."""

    state: StatePaths
    env: dict[str, str | None]  # the warehouse settings it ran with (None: unset)
    extras: dict


def _set_env(mp: pytest.MonkeyPatch, env: dict[str, str | None]) -> None:
    for key, value in env.items():
        if value is None:
            mp.delenv(key, raising=False)
        else:
            mp.setenv(key, value)


def _days(cfg: Config) -> list[dt.date]:
    return [cfg.simulator.start_date + dt.timedelta(days=i) for i in range(N_DAYS)]


def _run_backend(env: dict[str, str | None], cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> BackendRun:
    """The data side on a fresh state dir with `env` (as the `state` fixture sets it) for the whole run."""
    root = tmp_path_factory.mktemp("pipeline-backend") / "state"
    env = {**env, "CLOSEDLOOP_HOME": str(root), "MLFLOW_TRACKING_URI": None, "MLFLOW_REGISTRY_URI": None}
    with pytest.MonkeyPatch.context() as mp:
        _set_env(mp, env)
        state = StatePaths(root).ensure()
        extras = _run_days(state, cfg, _days(cfg))
    return BackendRun(state=state, env=env, extras=extras)


def _training_set(run: BackendRun) -> pd.DataFrame:
    """The training set the last publish versioned, restored from its data version (manifest + partitions)."""
    return pd.read_parquet(versioning.open_version(run.state, run.extras[_days_of(run)[-1]]["data_version"]))


def _days_of(run: BackendRun) -> list[dt.date]:
    return sorted(d for d in run.extras if isinstance(d, dt.date))


@pytest.fixture(scope="module")
def duckdb_run(pipe_config, tmp_path_factory) -> BackendRun:
    return _run_backend({"CLOSEDLOOP_DBT_TARGET": None}, pipe_config, tmp_path_factory)


@pytest.fixture(scope="module")
def postgres_run(pg_database_factory, pipe_config, tmp_path_factory) -> BackendRun:
    return _run_backend(pg_warehouse_env(pg_database_factory("closedloop_wh")), pipe_config, tmp_path_factory)


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_data_side_runs_on_each_backend(backend, request, pipe_config, monkeypatch):
    run: BackendRun = request.getfixturevalue(f"{backend}_run")
    _set_env(monkeypatch, run.env)  # read back from the database the run wrote
    state, extras = run.state, run.extras
    assert default_target() == backend  # dbt builds into the database the stages use
    cfg = pipe_config
    days = _days(cfg)

    with warehouse.connect(state, read_only=True) as con:
        raw_rows = con.scalar("select count(*) from raw.transactions where batch_date = ?", [days[-1]])
        published = con.frame("select batch_date, count(*) as n from published.transaction_features group by 1 order by 1")
    assert raw_rows == extras["relanded_rows"]  # re-landed day replaced, not doubled
    assert published["n"].tolist() == [extras[d]["feature_rows"] for d in days]

    # predictions written through the seam (twice: a re-run replaces), then read by the monitoring join
    feats = inference.read_interval(state, cfg, days[0])
    start, end = _bounds(days[0])
    preds = pd.DataFrame({
        "model_name": cfg.model.name, "model_version": "1", "alias": "champion",
        "entity_id": feats[cfg.model.id_column].astype(str), "batch_date": days[0],
        "score": np.random.default_rng(0).random(len(feats)), "decision": "allow", "threshold": 0.5,
        "data_interval_start": start, "data_interval_end": end, "scored_at": dt.datetime(2026, 1, 2),
    })[inference.PREDICTION_COLUMNS]
    for _ in range(2):
        inference.write_predictions(state, days[0], {"champion": preds, "challenger": None})
    window = windows.load_current_window(state, cfg, days[0], days[0])
    assert len(window) == len(feats) and set(window["model_version"]) == {"1"}

    snapshot = _training_set(run)
    assert len(snapshot) == extras[days[-1]]["training_rows"]
    # the same training set re-published is the same data version (a manifest of the same partitions)
    assert extras[days[-1]]["data_version"] == extras["first_version_of_last_day"]


def test_both_backends_publish_the_same_training_set(duckdb_run, postgres_run):
    duck = _training_set(duckdb_run).sort_values("transaction_id").reset_index(drop=True)
    pg = _training_set(postgres_run).sort_values("transaction_id").reset_index(drop=True)
    assert list(pg.columns) == list(duck.columns)
    assert pg.dtypes.to_dict() == duck.dtypes.to_dict()
    pd.testing.assert_frame_equal(pg, duck, check_exact=False, rtol=1e-9)
