"""Day order and backfill (training/data/ingest.py) on real simulated days, DuckDB and the dbt build.

The story: days 1-3 and 5-6 are published while day 4 is missing (`admission.day_order:
allow_gaps`); the labels delivered on days 5-6 for day-4 events are held as orphans. Under the
strict policy a day after the hole is refused, naming the missing day and the command. Then day 4
is backfilled: its held labels load, the rebuilt mart changes the later days' point-in-time
features, and those days are re-published - after which every published day equals the mart.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from training import cli
from training.config import Config, with_overrides
from training.data import admission, ingest, quality
from training.data.dbt import run_dbt
from training.paths import StatePaths
from training.storage import versioning, warehouse

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def cfg(base_config: Config) -> Config:
    return with_overrides(
        base_config,
        simulator={"transactions_per_day": 800, "n_customers": 300, "n_merchants": 60, "fraud_rate": 0.02},
        admission={"day_order": "allow_gaps"},
    )


def _day(cfg: Config, i: int) -> dt.date:
    return cfg.start_date + dt.timedelta(days=i)


def _ingest(paths: StatePaths, cfg: Config, day: dt.date) -> dict:
    """What data_pipeline does up to the dbt build: day order, land, front door, load, held labels."""
    ingest.check_day_order(paths, cfg, day)
    admitted = admission.admit(paths, cfg, ingest.land(paths, cfg, day))
    return ingest.load_raw(paths, admitted.batch) | ingest.readmit_held_labels(paths, cfg, day)


def _publish(paths: StatePaths, cfg: Config, day: dt.date) -> dict:
    """What data_pipeline does after the dbt build: feature gate, publish, re-publish later days."""
    table = cfg.contract.marts.features
    quality.gate(table.split(".")[1], quality.load_warehouse_batch(day, paths, table=table), day, paths)
    start = dt.datetime.combine(day, dt.time())
    return ingest.publish(paths, cfg, day, start, start + dt.timedelta(days=1)) | ingest.republish_later_days(paths, cfg, day)


def _build(paths: StatePaths, cfg: Config) -> None:
    assert run_dbt(["build"], paths, cfg, env={"CLOSEDLOOP_DBT_UNIT_TESTS": "false"}).success


def _held(paths: StatePaths, cfg: Config) -> pd.DataFrame:
    with warehouse.connect(paths, read_only=True) as con:
        return con.frame(
            "select batch_date, row_id from quarantine.rejected_rows where table_name = ? "
            "and expectation = 'labels_refer_to_known_events'", [cfg.contract.labels.raw_table])


@pytest.fixture(scope="module")
def gap(module_state: StatePaths, cfg: Config) -> dict:
    """Days 1-3 and 5-6 published, day 4 missing."""
    days = [_day(cfg, i) for i in (0, 1, 2, 4, 5)]
    for day in days:
        _ingest(module_state, cfg, day)
    _build(module_state, cfg)
    published = {day: _publish(module_state, cfg, day) for day in days}
    return {"days": days, "published": published, "held": _held(module_state, cfg)}


def test_a_day_after_a_missing_day_is_refused_naming_it_and_the_command(module_state, cfg, gap, capsys):
    strict = with_overrides(cfg, admission={"day_order": "strict"})
    missing, after = _day(cfg, 3), _day(cfg, 4)
    with pytest.raises(ingest.DayOrderError) as err:
        ingest.check_day_order(module_state, strict, after)
    msg = str(err.value)
    assert msg.startswith(f"{after} was refused: the day before it was never published (missing: {missing}")
    assert f"airflow dags trigger data_pipeline --conf '{{\"batch_date\": \"{missing}\"}}'" in msg
    assert "admission.day_order: allow_gaps" in msg
    # the days around the hole are fine: the first day, a day after a published one, the backfill itself
    for ok in (_day(cfg, 0), _day(cfg, 3), _day(cfg, 5), _day(cfg, 6)):
        ingest.check_day_order(module_state, strict, ok)
    # the CLI refuses before landing anything (the default config is strict)
    assert cli.main(["ingest", "--date", after.isoformat()]) == 1
    assert f"DayOrderError: {after} was refused" in capsys.readouterr().err


def test_backfill_loads_held_labels_and_republishes_so_published_equals_the_mart(module_state, cfg, gap):
    paths, missing = module_state, _day(cfg, 3)
    held = gap["held"]
    # held label rows are named by their label id; the evidence says which event each refers to
    evidence = pd.concat([pd.read_parquet(f) for f in (paths.quarantine / "raw.chargebacks").glob("batch_date=*.parquet")])
    for_missing = set(evidence.loc[evidence["transaction_id"].str.startswith(f"tx-{missing:%Y%m%d}-"), "chargeback_id"])
    held_for_missing = held[held["row_id"].isin(for_missing)]
    assert len(held_for_missing) >= 2, "days 5-6 should deliver labels for day-4 events"
    assert ingest.changed_published_days(paths, cfg) == {}  # before the backfill, published = mart

    loaded = _ingest(paths, cfg, missing)
    assert loaded["readmitted_labels"] == len(held_for_missing)
    _build(paths, cfg)
    stale = ingest.changed_published_days(paths, cfg)
    assert _day(cfg, 4) in stale  # the rebuilt mart now disagrees with what serving read
    result = _publish(paths, cfg, missing)

    assert ingest.changed_published_days(paths, cfg) == {}  # every published day equals the mart
    assert {r["batch_date"] for r in result["republished"]} == {d.isoformat() for d in stale}
    with warehouse.connect(paths, read_only=True) as con:
        labels = con.frame("select chargeback_id, batch_date from raw.chargebacks")
    assert set(held_for_missing["row_id"]) <= set(labels["chargeback_id"])
    assert _held(paths, cfg)["row_id"].isin(for_missing).sum() == 0
    newest = versioning.latest_data_version(paths)
    assert newest.batch_date == _day(cfg, 5) and newest.data_version == result["republished_data_version"]

    # idempotent: a re-run of the backfilled day changes nothing more
    assert _ingest(paths, cfg, missing)["readmitted_labels"] == 0


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_published_versus_mart_comparison_on_each_backend(backend, state, base_config, request):
    """The comparison counts missing rows and real changes, not last-bit float differences."""
    if backend == "postgres":
        request.getfixturevalue("pg_warehouse")
    day = dt.date(2026, 1, 2)
    mart = pd.DataFrame({
        "transaction_id": ["a", "b", "c", "d"], "batch_date": [day] * 4,
        "channel": ["online", "in_store", "online", "online"], "amount": [1.0, 2.0, 3.0, 4.0],
    })
    served = mart.copy()
    served.loc[0, "amount"] = 1.0 * (1 + 1e-13)  # re-summed in another order: the same feature
    served.loc[1, "amount"] = 2.5  # a changed feature
    served.loc[2, "channel"] = "in_store"  # a changed category
    served = served.iloc[:3]  # and "d" was never published
    ddl = ["create schema if not exists ml", "create schema if not exists published",
           "create table ml.ml_transaction_features (transaction_id varchar, batch_date date, channel varchar, "
           "amount double precision)",
           "create table published.transaction_features (transaction_id varchar, batch_date date, channel varchar, "
           "amount double precision)"]
    with warehouse.transaction(state, ddl=ddl) as con:
        con.insert_frame("ml.ml_transaction_features", mart)
        con.insert_frame("published.transaction_features", served)
    assert ingest.changed_published_days(state, base_config) == {day: 3}
    assert ingest.changed_published_days(state, base_config, after=day) == {}
