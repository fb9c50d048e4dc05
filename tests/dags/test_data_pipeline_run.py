"""`dag.test()` runs of data_pipeline against real DuckDB, dbt (via cosmos), GX and DVC.

One module-scoped state directory carries a small story: a clean day is published, re-running it
changes nothing, and a bad batch on the next day fails the run, is quarantined, and leaves the
published features and data versions exactly as they were.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import duckdb
import pytest
import yaml

from training.config import load_config, with_overrides

pytestmark = pytest.mark.timeout(900)

DAY1 = dt.date(2026, 1, 3)
DAY2 = dt.date(2026, 1, 4)


@pytest.fixture(scope="module")
def pipeline_env(tmp_path_factory, airflow_db, dbt_manifest):
    """State dir + small config exported for the run-time code of every task."""
    root = tmp_path_factory.mktemp("pipeline")
    base = load_config()
    start = base.simulator.start_date
    cfg = with_overrides(
        base,
        simulator={
            "transactions_per_day": 1500,
            "n_customers": 400,
            "n_merchants": 80,
            "scenarios": [
                {"kind": "duplicate_delivery", "from_day": (DAY2 - start).days, "until_day": (DAY2 - start).days + 1}
            ],
        },
    )
    cfg_file = root / "closedloop.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    saved = {k: os.environ.get(k) for k in ("CLOSEDLOOP_HOME", "CLOSEDLOOP_CONFIG")}
    os.environ["CLOSEDLOOP_HOME"] = str(root / "state")
    os.environ["CLOSEDLOOP_CONFIG"] = str(cfg_file)
    yield root / "state"
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def dag(pipeline_env):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).parents[2] / "dags" / "data_pipeline.py"), safe_mode=True)
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("data_pipeline")


def _run(dag, day: dt.date):
    # The data interval of a manual run ends at its logical date: run day+1 to process `day`.
    logical = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return dag.test(logical_date=logical)


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _query(state: Path, sql: str, params=None):
    con = duckdb.connect(str(state / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _ledger_versions(state: Path) -> list[tuple]:
    import sqlalchemy as sa

    eng = sa.create_engine(f"sqlite:///{state / 'ops.db'}")
    with eng.connect() as conn:
        return conn.execute(sa.text("select data_version, batch_date, feature_rows from data_versions")).fetchall()


@pytest.fixture(scope="module")
def first_day(dag, pipeline_env):
    run = _run(dag, DAY1)
    return run


def test_clean_day_is_published_with_a_data_version(first_day, pipeline_env):
    states = _states(first_day)
    assert first_day.state == "success", {k: v for k, v in states.items() if v != "success"}
    published = _query(pipeline_env, "select count(*) from published.transaction_features where batch_date = ?", [DAY1])
    raw = _query(pipeline_env, "select count(*) from raw.transactions where batch_date = ?", [DAY1])
    assert published[0][0] == raw[0][0] > 1000
    versions = _ledger_versions(pipeline_env)
    assert len(versions) == 1 and len(versions[0][0]) == 32  # a DVC md5
    # the landed raw snapshot is DVC-tracked too
    assert list((pipeline_env / "data" / "raw" / "transactions").glob("*.parquet.dvc"))


def test_features_asset_event_carries_interval_rows_and_version(first_day, pipeline_env):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetEvent.source_run_id == first_day.run_id, AssetModel.name == "closedloop_features")
            .all()
        )
        extras = [dict(e.extra) for e in events]
    assert len(extras) == 1
    extra = extras[0]
    assert extra["batch_date"] == DAY1.isoformat()
    assert extra["feature_rows"] > 1000
    assert extra["data_version"] == _ledger_versions(pipeline_env)[0][0]
    assert extra["dbt_invocation_id"] and extra["gx_success"] is True


def test_rerunning_the_same_interval_is_idempotent(first_day, dag, pipeline_env):
    before = _query(pipeline_env, "select count(*), count(distinct transaction_id) from published.transaction_features")
    raw_before = _query(pipeline_env, "select count(*) from raw.transactions")
    run = _run(dag, DAY1)
    assert run.state == "success"
    assert _query(pipeline_env, "select count(*), count(distinct transaction_id) from published.transaction_features") == before
    assert _query(pipeline_env, "select count(*) from raw.transactions") == raw_before
    # same bytes -> same data version: still one row in the ledger
    assert len(_ledger_versions(pipeline_env)) == 1


def test_bad_batch_stops_at_the_raw_gate_and_nothing_is_published(first_day, dag, pipeline_env):
    published_before = _query(
        pipeline_env, "select batch_date, count(*) from published.transaction_features group by 1 order by 1"
    )
    versions_before = _ledger_versions(pipeline_env)
    run = _run(dag, DAY2)
    states = _states(run)
    assert run.state == "failed"
    assert states["raw_gate"] == "failed"
    assert states["load_raw"] == "upstream_failed" and states["publish"] == "upstream_failed"
    assert states["verify_published"] == "failed"  # the run names what stopped the day
    rejected = _query(
        pipeline_env,
        "select table_name, reason, row_count from quarantine.rejected_batches where batch_date = ?",
        [DAY2],
    )
    assert len(rejected) == 1
    table_name, reason, row_count = rejected[0]
    assert "expect_column_values_to_be_unique" in reason and "transaction_id" in reason
    assert row_count > 0
    # nothing already published moved, and the bad day reached neither raw nor published
    assert _query(
        pipeline_env, "select batch_date, count(*) from published.transaction_features group by 1 order by 1"
    ) == published_before
    assert _query(pipeline_env, "select count(*) from raw.transactions where batch_date = ?", [DAY2])[0][0] == 0
    assert _ledger_versions(pipeline_env) == versions_before


def test_a_failing_dbt_data_test_stops_the_day_in_the_one_build(first_day, dag, pipeline_env, caplog):
    """Watcher mode: the data tests run inside the producer's single `dbt build`, not as tasks.

    A raw row that bypassed the front door (NULL customer, a later day that re-running DAY1 rebuilds)
    fails `not_null` in that build: the producer fails naming the test, the model tasks never run, and
    nothing is published.
    """
    published_before = _query(
        pipeline_env, "select batch_date, count(*) from published.transaction_features group by 1 order by 1"
    )
    versions_before = _ledger_versions(pipeline_env)
    later = DAY1 + dt.timedelta(days=5)
    con = duckdb.connect(str(pipeline_env / "warehouse.duckdb"))
    try:
        con.execute(
            "insert into raw.transactions select * replace ('bypassed-the-gate' as transaction_id, null as customer_id, "
            "event_ts + interval 5 day as event_ts, ?::date as batch_date) from raw.transactions "
            "where batch_date = ? limit 1", [later, DAY1])
    finally:
        con.close()
    caplog.set_level("INFO")
    try:
        run = _run(dag, DAY1)
    finally:
        con = duckdb.connect(str(pipeline_env / "warehouse.duckdb"))
        con.execute("delete from raw.transactions where transaction_id = 'bypassed-the-gate'")
        con.close()
    states = _states(run)
    assert run.state == "failed"
    assert states["dbt.dbt_producer_watcher"] == "failed"
    assert "Failure in test not_null_stg_raw__transactions_customer_id" in caplog.text  # the producer's log
    model_tasks = {t: s for t, s in states.items() if t.startswith("dbt.") and t.endswith("_run")}
    assert model_tasks and set(model_tasks.values()) == {"upstream_failed"}, model_tasks
    assert states["feature_gate"] == states["publish"] == "upstream_failed"
    assert states["verify_published"] == "failed"
    assert _query(
        pipeline_env, "select batch_date, count(*) from published.transaction_features group by 1 order by 1"
    ) == published_before
    assert _ledger_versions(pipeline_env) == versions_before
