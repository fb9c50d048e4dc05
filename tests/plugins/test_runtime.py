"""closedloop.runtime.event_extras on Airflow's own triggering-events accessor."""

from __future__ import annotations

import datetime as dt

from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor
from closedloop.assets import FEATURES
from closedloop.runtime import batch_dates, event_extras, rescore_dates


def _event(extra: dict, minute: int, alias: str | None = None) -> AssetEventDagRunReferenceResult:
    return AssetEventDagRunReferenceResult(
        asset={"name": FEATURES.name, "uri": FEATURES.uri, "extra": {}},
        extra=extra,
        source_task_id="publish",
        source_dag_id="data_pipeline",
        source_run_id=f"day__{minute}",
        source_map_index=-1,
        source_aliases=[{"name": alias}] if alias else [],
        timestamp=dt.datetime(2026, 1, 2, 0, minute, tzinfo=dt.UTC),
    )


def test_extras_oldest_first_each_event_once():
    events = TriggeringAssetEventsAccessor.build([
        _event({"batch_date": "2026-01-02", "data_version": "b"}, minute=5, alias="features_alias"),
        _event({"batch_date": "2026-01-01", "data_version": "a"}, minute=1),
        _event({}, minute=3),  # an event without extra carries nothing to act on
    ])
    extras = event_extras({"triggering_asset_events": events})
    assert [x["data_version"] for x in extras] == ["a", "b"]


def test_a_backfill_names_the_later_days_to_score_again():
    """A backfilled day's features event lists the later days it re-published: batch_inference scores
    the backfilled day and re-scores those."""
    events = TriggeringAssetEventsAccessor.build([
        _event({"batch_date": "2026-01-12", "republished": [
            {"batch_date": "2026-01-13", "changed_rows": 3212}, {"batch_date": "2026-01-14", "changed_rows": 9},
        ]}, minute=5),
    ])
    context = {"triggering_asset_events": events}
    assert batch_dates(context, "features") == [dt.date(2026, 1, 12)]
    assert rescore_dates(context) == [dt.date(2026, 1, 13), dt.date(2026, 1, 14)]
    assert rescore_dates({}) == []


def test_a_run_not_triggered_by_assets_has_no_extras():
    assert event_extras({}) == []
    assert event_extras({"triggering_asset_events": TriggeringAssetEventsAccessor.build([])}) == []


def test_a_task_whose_mlflow_server_is_down_fails_with_the_clis_message(monkeypatch, tmp_path, airflow_db, capfd):
    """In a task (here rollback_champion under `dag.test()`): the message names the server and how to start it."""
    import socket
    from pathlib import Path

    import pytest
    from airflow.dag_processing.dagbag import DagBag
    from closedloop.runtime import load_runtime

    from training.outages import ServiceUnavailable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CLOSEDLOOP_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CLOSEDLOOP_SERVICE_WAIT_S", "1")
    with pytest.raises(ServiceUnavailable, match=rf"MLflow tracking server at http://127.0.0.1:{port} does not answer"):
        load_runtime()

    dags = Path(__file__).parents[2] / "dags"
    bag = DagBag(dag_folder=str(dags / "rollback_champion.py"), safe_mode=True)
    run = bag.get_dag("rollback_champion").test(run_conf={"reason": "test: MLflow is down"})
    assert run.state == "failed"
    logged = "".join(capfd.readouterr())
    assert f"http://127.0.0.1:{port} does not answer (connection refused" in logged
    assert "make up PROFILE=services" in logged


def test_only_the_first_promotion_of_an_event_run_scores_its_day_again():
    """The first champion's day: the newest day of the features events that started the training run."""
    from closedloop.runtime import first_champion_day

    events = TriggeringAssetEventsAccessor.build([
        _event({"batch_date": "2026-01-06"}, minute=5),
        _event({"batch_dates": ["2026-01-04", "2026-01-05"]}, minute=1),
    ])
    context = {"triggering_asset_events": events}
    assert first_champion_day({"action": "first_promote"}, context) == dt.date(2026, 1, 6)
    assert first_champion_day({"action": "promote"}, context) is None  # a champion scored that day
    assert first_champion_day({"action": "first_promote"}, {}) is None  # a manual run names no day
