"""GXValidateCheckpointOperator inside a real Airflow run (`dag.test()` on the session's SQLite DB).

One tiny DAG with two gates over the same interval: a clean landed batch (named `parquet` loader) and
a duplicate delivery (callable loader). The clean gate succeeds and pushes its summary; the bad one
fails without retrying, with the GX message, and its batch lands in quarantine.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from examples.card_fraud import simulator
from training.config import Config, with_overrides
from training.paths import StatePaths

DAY = dt.date(2026, 1, 9)

DAG_FILE = '''
"""Tiny airflow DAG for the GX operator test."""
import datetime as dt

import pandas as pd
from airflow.sdk import DAG

from closedloop.operators.gx_validate import GXValidateCheckpointOperator


def load_bad(batch_date, paths, *, path):
    return pd.read_parquet(path)


with DAG(
    "gx_operator_test",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
) as dag:
    GXValidateCheckpointOperator(
        task_id="gate_clean",
        suite_name="raw_transactions",
        load_dataframe="parquet",
        loader_kwargs={{"path": "{clean}"}},
        expect_parameters={{"min_rows": "{{{{ params.min_rows }}}}"}},
        params={{"min_rows": 100}},
    )
    GXValidateCheckpointOperator(
        task_id="gate_bad",
        suite_name="raw_transactions",
        load_dataframe=load_bad,
        loader_kwargs={{"path": "{bad}"}},
        retries=3,
    )
'''


@pytest.fixture
def batches(state: StatePaths, small_config: Config) -> dict[str, Path]:
    out = {}
    for name, scenarios in {"clean": [], "bad": [{"kind": "duplicate_delivery", "from_day": 0}]}.items():
        cfg = with_overrides(small_config, simulator={"transactions_per_day": 800, "scenarios": scenarios})
        frame = simulator.generate_transactions(cfg.simulator, DAY)
        frame["batch_date"] = DAY
        out[name] = state.raw / name / f"batch_date={DAY}.parquet"
        out[name].parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(out[name], index=False)
    return out


@pytest.mark.timeout(300)
def test_operator_gates_a_real_dag_run(
    airflow_db: Path, state: StatePaths, batches: dict[str, Path], tmp_path: Path
) -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.utils.state import DagRunState, TaskInstanceState

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "gx_operator_test.py").write_text(
        textwrap.dedent(DAG_FILE.format(clean=batches["clean"], bad=batches["bad"]))
    )
    bag = DagBag(dag_folder=str(dags))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("gx_operator_test")
    # dag.test() needs the DAG serialized in the metadata DB; register it under the configured bundle.
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)

    run = dag.test(logical_date=dt.datetime.combine(DAY, dt.time(), tzinfo=dt.UTC))

    assert run.state == DagRunState.FAILED
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert tis["gate_clean"].state == TaskInstanceState.SUCCESS
    # bad data fails at once: AirflowFailException skips the 3 retries
    assert tis["gate_bad"].state == TaskInstanceState.FAILED
    assert tis["gate_bad"].try_number == 1

    clean = tis["gate_clean"].xcom_pull(task_ids="gate_clean", key="return_value")
    assert clean["success"] is True and clean["failed_count"] == 0
    assert clean["batch_id"] == f"raw_transactions/{DAY}"
    assert Path(clean["data_docs_path"]).is_file()
    assert clean["run_id"].startswith(run.run_id.replace(":", "_").replace("+", "_")[:20])
    bad = tis["gate_bad"].xcom_pull(task_ids="gate_bad", key="gx_result")
    assert bad["success"] is False and bad["failed_expectations"] == ["expect_column_values_to_be_unique"]

    con = duckdb.connect(str(state.warehouse), read_only=True)
    try:
        rows = con.execute(
            "select table_name, reason from quarantine.rejected_batches where batch_date = ?", [DAY]
        ).fetchall()
    finally:
        con.close()
    assert [r[0] for r in rows] == ["raw.transactions"]
    duplicates = len(pd.read_parquet(batches["bad"])) // 2
    assert f"expect_column_values_to_be_unique(transaction_id: {duplicates} duplicates)" in rows[0][1]


def test_operator_is_cheap_to_construct_and_templated() -> None:
    from closedloop.operators.gx_validate import GXValidateCheckpointOperator

    op = GXValidateCheckpointOperator(task_id="t", suite_name="raw_transactions", load_dataframe="parquet")
    assert {"batch_date", "interval_start", "interval_end", "expect_parameters", "loader_kwargs"} <= set(
        op.template_fields
    )
    assert op.batch_date == "{{ data_interval_start | ds }}"
    with pytest.raises(TypeError, match="load_dataframe"):
        GXValidateCheckpointOperator(task_id="u", suite_name="raw_transactions", load_dataframe=42)
