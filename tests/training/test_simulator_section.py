"""The `simulator:` section is the source's: validated by the SIMULATOR_SPEC its entry point module
declares, with its own cross-checks and chart marks, and a clear error when no schema can be found.

The schema here is a tiny one defined in this module (a source with a `rate` knob and one switch day),
so nothing in this file leans on the card-fraud example's knobs.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from training.config import Config, ConfigError, SimulatorSection, parse_config, with_overrides
from training.monitoring.health_chart import scenario_onsets


class TinySpec(SimulatorSection):
    start_date: dt.date
    rate: float = 0.5
    switch_day: int | None = None

    def check_config(self, cfg: Config) -> None:
        if self.start_date != cfg.contract.start_date:
            raise ValueError("simulator.start_date must be contract.start_date (tiny source)")

    def known_events(self) -> list[tuple[dt.date, str]]:
        if self.switch_day is None:
            return []
        return [(self.start_date + dt.timedelta(days=self.switch_day), "switch")]


SIMULATOR_SPEC = TinySpec


def extract(cfg: Config, batch_date: dt.date) -> dict[str, pd.DataFrame]:
    raise AssertionError("not called: these tests only validate configs")


def _config(base: Config, entry_point: str | None, section: dict | None, kind: str = "python") -> Config:
    data = base.model_dump(mode="json")
    data["contract"]["source"] = {"kind": kind, "entry_point": entry_point} if entry_point else {
        "kind": "file_drop", "url": "memory://x"}
    data["simulator"] = section
    return parse_config(data, "models/tiny.yaml")


def test_the_entry_points_schema_validates_the_section(base_config):
    start = base_config.contract.start_date.isoformat()
    cfg = _config(base_config, f"{__name__}:extract", {"start_date": start, "rate": 0.25, "switch_day": 3})
    assert isinstance(cfg.simulator, TinySpec) and cfg.simulator.rate == 0.25
    assert scenario_onsets(cfg) == [(base_config.contract.start_date + dt.timedelta(days=3), "switch")]
    again = with_overrides(cfg, simulator={"rate": 0.75})  # dumped and re-validated by the same schema
    assert isinstance(again.simulator, TinySpec) and again.simulator.rate == 0.75
    assert again.simulator.start_date == base_config.contract.start_date


def test_the_schema_rejects_what_it_does_not_know(base_config):
    start = base_config.contract.start_date.isoformat()
    with pytest.raises(ConfigError) as info:
        _config(base_config, f"{__name__}:extract", {"start_date": start, "fraud_rat": 0.1})
    message = str(info.value)
    assert "models/tiny.yaml" in message and "simulator.fraud_rat: Extra inputs are not permitted" in message
    assert f"{__name__}.TinySpec" in message


def test_the_schemas_cross_check_runs(base_config):
    with pytest.raises(ConfigError, match=r"simulator.start_date must be contract.start_date \(tiny source\)"):
        _config(base_config, f"{__name__}:extract", {"start_date": "1999-01-01"})


def test_a_section_without_a_schema_is_a_clear_error(base_config):
    section = {"start_date": base_config.contract.start_date.isoformat()}
    with pytest.raises(ConfigError) as info:
        _config(base_config, None, section)  # a file drop has no entry point, so no schema
    message = str(info.value)
    assert "models/tiny.yaml" in message and "simulator" in message
    assert "kind file_drop names no `entry_point`: remove the `simulator:` section" in message

    with pytest.raises(ConfigError) as info:
        _config(base_config, "training.source.file_drop:read_interval", section)  # a module with no schema
    message = str(info.value)
    assert "module 'training.source.file_drop' (contract.source.entry_point) declares no SIMULATOR_SPEC" in message
    assert "add one to that module, or remove the `simulator:` section" in message


def test_a_schema_that_is_not_a_section_is_refused(base_config, monkeypatch):
    monkeypatch.setattr(f"{__name__}.SIMULATOR_SPEC", dict)
    with pytest.raises(ConfigError, match="declares no SIMULATOR_SPEC = <a subclass of training.config.SimulatorSection>"):
        _config(base_config, f"{__name__}:extract", {"start_date": "2026-01-01"})


def test_no_section_needs_no_schema(base_config):
    cfg = _config(base_config, f"{__name__}:extract", None)
    assert cfg.simulator is None and scenario_onsets(cfg) == []
