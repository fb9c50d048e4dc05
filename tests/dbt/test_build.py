"""`dbt build` on simulated days: models, data_tests and unit_tests pass; the marts hold the contract's
columns; features agree with an independent pandas computation; dbt failures surface as DbtError."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from tests.dbt.conftest import BuiltWarehouse, load_raw_batch, read_table, utc_now
from training.config import PROJECT_ROOT, load_config
from training.data.dbt import DbtError, dbt_env, run_dbt
from training.paths import StatePaths

# docs/contracts.md, "Warehouse": the mart columns, in order.
FEATURE_COLUMNS = [
    "transaction_id",
    "customer_id",
    "event_ts",
    "batch_date",
    "channel",
    "merchant_category",
    "country",
    "customer_home_country",
    "country_bucket",
    "amount",
    "log_amount",
    "amount_band",
    "hour_of_day",
    "is_weekend",
    "tx_count_1h",
    "tx_count_24h",
    "amount_to_customer_avg",
    "is_new_country",
    "is_new_device",
    "category_fraud_rate",
]
TRAINING_COLUMNS = [*FEATURE_COLUMNS, "is_fraud", "label_reported_at"]


def test_build_runs_models_data_tests_and_unit_tests(built_warehouse: BuiltWarehouse) -> None:
    result = built_warehouse.result
    assert result.success
    kinds = pd.Series([r.unique_id.split(".")[0] for r in result.results]).value_counts()
    assert kinds.get("model", 0) == 11  # 7 models + 4 incremental state models
    assert kinds.get("unit_test", 0) >= 9, "the unit tests on the feature logic must run in `dbt build`"
    assert kinds.get("test", 0) >= 40
    assert not result.failed
    # The relationships / reason-code tests are warn-only; on clean simulated data they must pass.
    assert not result.warned, [r.unique_id for r in result.warned]


def test_marts_have_exactly_the_contract_columns(built_warehouse: BuiltWarehouse) -> None:
    features = read_table(built_warehouse.paths, "ml.ml_transaction_features")
    training = read_table(built_warehouse.paths, "ml.ml_training_set")
    assert list(features.columns) == FEATURE_COLUMNS
    assert list(training.columns) == TRAINING_COLUMNS
    model = built_warehouse.cfg.model
    assert set(model.features) | set(model.slice_columns) | {model.id_column, model.time_column} <= set(
        FEATURE_COLUMNS
    )
    assert model.target in training.columns


def test_features_cover_every_loaded_transaction_once(built_warehouse: BuiltWarehouse) -> None:
    paths = built_warehouse.paths
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        raw = con.execute("select count(*), count(distinct transaction_id) from raw.transactions").fetchone()
        feats = con.execute(
            "select count(*), count(distinct transaction_id), min(batch_date), max(batch_date) "
            "from ml.ml_transaction_features"
        ).fetchone()
        nulls = con.execute(
            "select count(*) from ml.ml_transaction_features where "
            + " or ".join(f"{c} is null" for c in FEATURE_COLUMNS)
        ).fetchone()[0]
    assert raw[0] == raw[1] > 15_000
    assert feats[:2] == (raw[0], raw[0])
    assert (feats[2], feats[3]) == (built_warehouse.days[0], built_warehouse.days[-1])
    assert nulls == 0


def test_features_are_informative_on_simulated_data(built_warehouse: BuiltWarehouse) -> None:
    """Cheap guard against a feature collapsing to a constant (e.g. a window that sees only itself)."""
    f = read_table(built_warehouse.paths, "ml.ml_transaction_features")
    assert f["tx_count_1h"].max() >= 3
    assert (f["tx_count_24h"] > f["tx_count_1h"]).mean() > 0.3
    assert f["amount_to_customer_avg"].std() > 0.1
    later = f[f["event_ts"] >= pd.Timestamp(built_warehouse.days[-1])]
    assert 0 < later["is_new_device"].mean() < 0.5
    assert later["category_fraud_rate"].nunique() > 3, "with matured history, categories must differ"
    assert set(f["country_bucket"]) == {"domestic", "foreign"}
    assert set(f["amount_band"]) == {"lt_10", "10_100", "100_500", "ge_500"}


def _oracle(
    tx: pd.DataFrame, labels: pd.DataFrame, row: pd.Series, lag: int, window: int, k: float, prior: float
) -> dict:
    """The features of one transaction, recomputed naively from everything strictly known at its time."""
    t = row["event_ts"]
    mine = tx[tx["customer_id"] == row["customer_id"]]
    others = mine[mine["transaction_id"] != row["transaction_id"]]
    past30 = others[(others["event_ts"] >= t - pd.Timedelta(days=30)) & (others["event_ts"] <= t)]
    earlier = mine[mine["event_ts"] < t]

    day = pd.Timestamp(t.date())
    pop = tx[
        (tx["event_ts"] >= day - pd.Timedelta(days=lag + window))
        & (tx["event_ts"] < day - pd.Timedelta(days=lag))
    ]
    known = labels[labels["label_reported_at"] < day]["transaction_id"]
    frauds = pop["transaction_id"].isin(known)
    in_cat = pop["merchant_category"] == row["merchant_category"]
    global_rate = (frauds.sum() + k * prior) / (len(pop) + k)
    return {
        "tx_count_1h": int(((mine["event_ts"] >= t - pd.Timedelta(hours=1)) & (mine["event_ts"] <= t)).sum()),
        "tx_count_24h": int(
            ((mine["event_ts"] >= t - pd.Timedelta(hours=24)) & (mine["event_ts"] <= t)).sum()
        ),
        "amount_to_customer_avg": row["amount"] / past30["amount"].mean() if len(past30) else 1.0,
        "is_new_country": int(not (earlier["country"] == row["country"]).any()),
        "is_new_device": int(not (earlier["device_id"] == row["device_id"]).any()),
        "category_fraud_rate": (frauds[in_cat].sum() + k * global_rate) / (in_cat.sum() + k),
    }


def test_features_match_a_naive_point_in_time_recomputation(built_warehouse: BuiltWarehouse) -> None:
    paths = built_warehouse.paths
    tx = read_table(paths, "staging.stg_raw__transactions")
    labels = read_table(paths, "intermediate.int_transaction_labels")
    features = read_table(paths, "ml.ml_transaction_features").set_index("transaction_id")
    rng = np.random.default_rng(0)
    late = features[features["event_ts"] >= pd.Timestamp(built_warehouse.days[6])].index
    bursts = features[features["tx_count_1h"] >= 2].index
    sample = set(rng.choice(features.index, 25, replace=False))
    sample |= set(rng.choice(late, 25, replace=False)) | set(rng.choice(bursts, 10, replace=False))

    lag = built_warehouse.cfg.windows.label_maturity_days
    for tid in sorted(sample):
        row = tx.loc[tx["transaction_id"] == tid].iloc[0]
        expected = _oracle(tx, labels, row, lag=lag, window=30, k=100.0, prior=0.01)
        got = features.loc[tid]
        for name, value in expected.items():
            assert math.isclose(float(got[name]), float(value), rel_tol=1e-9), (tid, name, got[name], value)


def test_nothing_is_written_into_the_source_tree(built_warehouse: BuiltWarehouse) -> None:
    for leftover in ("target", "logs", "dbt_packages", ".user.yml"):
        assert not (load_config().project.dbt_path / leftover).exists(), f"dbt wrote {leftover} into the source tree"
    assert not (PROJECT_ROOT / "logs").exists()
    assert (built_warehouse.paths.dbt_target / "manifest.json").is_file()
    assert (built_warehouse.paths.dbt_target.parent / "logs" / "dbt.log").is_file()


def test_dbt_env_points_the_profile_at_the_state_dir(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    env = dbt_env(paths)
    assert env["CLOSEDLOOP_WAREHOUSE"] == str(paths.warehouse)
    assert env["DBT_TARGET_PATH"] == str(paths.dbt_target)
    assert Path(env["DBT_LOG_PATH"]).is_relative_to(paths.root)


def test_run_dbt_rejects_unknown_target(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dbt target"):
        run_dbt(["build"], StatePaths(tmp_path), None, target="snowflake")  # type: ignore[arg-type]


# ------------------------------------------------------------------- failures and freshness


@pytest.fixture(scope="module")
def tiny_state(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    """Hand-made rows loaded three days ago: tx-1 delivered twice identically (safe to collapse),
    tx-2 delivered twice with different amounts (a conflict nobody may resolve silently)."""
    paths = StatePaths(tmp_path_factory.mktemp("dbt-tiny")).ensure()
    day = dt.date(2026, 1, 1)
    tx1 = {
        "transaction_id": "tx-20260101-0000001",
        "event_ts": dt.datetime(2026, 1, 1, 10),
        "customer_id": "c-00001",
        "customer_home_country": "DE",
        "merchant_id": "m-0001",
        "merchant_category": "grocery",
        "channel": "in_store",
        "country": "DE",
        "device_id": "pos-m-0001",
        "amount": 12.5,
        "currency": "EUR",
    }
    tx2 = {**tx1, "transaction_id": "tx-20260101-0000002", "event_ts": dt.datetime(2026, 1, 1, 11)}
    tx2_conflict = {**tx2, "amount": 1250.0}
    stale = utc_now() - dt.timedelta(days=3)
    cb = {
        "chargeback_id": "cb-1",
        "transaction_id": tx1["transaction_id"],
        "reported_at": dt.datetime(2026, 1, 1, 18),
        "reason_code": "fraud",
    }
    with duckdb.connect(str(paths.warehouse)) as con:
        load_raw_batch(con, "transactions", pd.DataFrame([tx1, tx1, tx2, tx2_conflict]), day, stale)
        load_raw_batch(con, "chargebacks", pd.DataFrame([cb]), day, stale)
    return paths


def test_conflicting_duplicates_fail_unique_and_name_the_test(tiny_state: StatePaths) -> None:
    with pytest.raises(DbtError) as err:
        run_dbt(["build", "--select", "staging", "--indirect-selection", "cautious"], tiny_state, None)
    unique_test = "unique_stg_raw__transactions_transaction_id"
    assert [n.split(".")[2] for n in err.value.failed_nodes] == [unique_test]
    assert unique_test in str(err.value)
    # Exactly one duplicated id: tx-1's identical re-delivery was collapsed, tx-2's conflict kept.
    assert err.value.result is not None
    (failed,) = err.value.result.failed
    assert failed.failures == 1


def test_data_tests_of_a_day_read_only_the_partitions_it_rebuilt(tiny_state: StatePaths) -> None:
    """With rebuild_from (the pipeline's day) a model's data tests read the rebuilt partitions only
    (macros/incremental.sql, get_where_subquery): the conflicting rows of 2026-01-01 fail a run from
    that day and are not re-read by a run from the next day (they were tested when they were built).
    The day arrives as the pipeline passes it (an environment value) or as a user's `--vars`."""
    select = ["build", "--select", "staging", "--indirect-selection", "cautious"]
    unique_test = "unique_stg_raw__transactions_transaction_id"
    with pytest.raises(DbtError) as err:
        run_dbt(select, tiny_state, None, rebuild_from=dt.date(2026, 1, 1))
    assert [n.split(".")[2] for n in err.value.failed_nodes] == [unique_test]

    later = run_dbt(select, tiny_state, None, extra_vars={"rebuild_from": "2026-01-02"})
    assert later.status_of(unique_test) == "pass"
    compiled = next(tiny_state.dbt_target.glob(f"compiled/**/{unique_test}.sql")).read_text()
    assert "event_ts >= cast('2026-01-02' as date)" in compiled


def test_a_new_day_keeps_dbts_partial_parse(tiny_state: StatePaths) -> None:
    """The pipeline's day changes every run; as a --vars entry it made dbt re-parse the whole project
    each time (about 2 CPU s of every build). As an environment value read while executing, the next
    day's run reuses the parse (that the day is still honoured: the test above)."""
    select = ["build", "--select", "stg_raw__transactions", "--exclude", "test_type:data"]
    run_dbt(select, tiny_state, None, rebuild_from=dt.date(2026, 1, 1))
    log = tiny_state.dbt_target.parent / "logs" / "dbt.log"
    log.unlink()
    run_dbt(select, tiny_state, None, rebuild_from=dt.date(2026, 1, 2))
    text = log.read_text()
    assert "Unable to do partial parsing" not in text
    assert "Nothing changed, skipping partial parsing" in text or "Partial parsing enabled" in text, text[-2000:]


def test_an_invalid_rebuild_day_names_both_ways_to_pass_it(tiny_state: StatePaths) -> None:
    with pytest.raises(DbtError) as err:
        run_dbt(["build", "--select", "staging"], tiny_state, None, env={"CLOSEDLOOP_DBT_REBUILD_FROM": "Jan 5"})
    assert 'invalid rebuild_from "Jan 5" (var rebuild_from or CLOSEDLOOP_DBT_REBUILD_FROM)' in str(err.value), err.value


def test_source_freshness_uses_load_time(tiny_state: StatePaths, built_warehouse: BuiltWarehouse) -> None:
    """Data from January, loaded just now: fresh. Loaded three days ago (tiny_state): an error.

    Only the transactions feed has a freshness check: an empty chargeback day is normal.
    """
    fresh = run_dbt(["source", "freshness"], built_warehouse.paths, built_warehouse.cfg)
    assert {r.status for r in fresh.results} == {"pass"} and len(fresh.results) == 1

    with pytest.raises(DbtError) as err:
        run_dbt(["source", "freshness"], tiny_state, None)
    assert sorted(err.value.failed_nodes) == ["source.closedloop.raw.transactions"]
