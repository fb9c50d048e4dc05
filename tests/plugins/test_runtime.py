"""closedloop.runtime.event_extras on Airflow's own triggering-events accessor."""

from __future__ import annotations

import datetime as dt

from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor
from closedloop.assets import FEATURES
from closedloop.runtime import event_extras


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


def test_a_run_not_triggered_by_assets_has_no_extras():
    assert event_extras({}) == []
    assert event_extras({"triggering_asset_events": TriggeringAssetEventsAccessor.build([])}) == []
