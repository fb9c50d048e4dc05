"""The card-fraud simulator's `simulator:` section (examples/card_fraud/spec.py): the loop validates it
with the schema the example's source module declares, and today's cross-checks keep their messages."""

from __future__ import annotations

import datetime as dt

import pytest

from examples.card_fraud import source
from examples.card_fraud.spec import SimulatorSpec, simulator_spec
from training.config import ConfigError, parse_config, with_overrides


def test_the_source_module_declares_the_schema(base_config):
    assert source.SIMULATOR_SPEC is SimulatorSpec
    assert isinstance(base_config.simulator, SimulatorSpec)
    assert simulator_spec(base_config) is base_config.simulator


def test_overrides_are_validated_by_the_schema(small_config):
    cfg = with_overrides(small_config, simulator={"seed": 7, "label_delay_days": {"min": 0, "max": 2}})
    assert isinstance(cfg.simulator, SimulatorSpec)
    assert (cfg.simulator.seed, cfg.simulator.label_delay_days.max) == (7, 2)
    with pytest.raises(ConfigError, match=r"simulator\.fraud_rate: Input should be less than 0\.2"):
        with_overrides(small_config, simulator={"fraud_rate": 0.5})
    with pytest.raises(ConfigError, match=r"label_delay_days\.max \(1\) < min \(2\)"):
        with_overrides(small_config, simulator={"label_delay_days": {"min": 2, "max": 1}})


def test_immature_labels_rejected(base_config):
    with pytest.raises(ConfigError) as info:
        with_overrides(base_config, windows={"label_maturity_days": 1})
    assert (
        "windows.label_maturity_days (1) is shorter than simulator.label_delay_days.max (5): "
        "immature labels would be treated as negatives"
    ) in str(info.value)


def test_the_world_starts_on_the_first_interval(base_config):
    with pytest.raises(ConfigError) as info:
        with_overrides(base_config, simulator={"start_date": "2026-01-02"})
    assert (
        "simulator.start_date (2026-01-02) differs from contract.start_date (2026-01-01): "
        "the simulated world starts on the first data interval"
    ) in str(info.value)


def test_scenarios_are_the_known_events(base_config):
    cfg = with_overrides(base_config, simulator={"scenarios": [
        {"kind": "fraud_mechanism_shift", "from_day": 8}, {"kind": "holiday", "from_day": 3, "until_day": 5}]})
    start = cfg.contract.start_date
    assert cfg.simulator.known_events() == [
        (start + dt.timedelta(days=8), "fraud_mechanism_shift"), (start + dt.timedelta(days=3), "holiday")]


def test_a_source_without_the_section_is_a_clear_error(base_config):
    data = base_config.model_dump(mode="json")
    data["contract"]["source"] = {"kind": "file_drop", "url": "memory://x"}
    data["simulator"] = None
    cfg = parse_config(data)
    with pytest.raises(ConfigError, match="needs the card-fraud simulator source, but contract.source is 'file_drop'"):
        simulator_spec(cfg)
    del data["simulator"]
    data["contract"]["source"] = {"kind": "simulator", "entry_point": "examples.card_fraud.source:extract"}
    with pytest.raises(ConfigError, match="contract.source.kind is simulator but there is no `simulator:` section"):
        parse_config(data)
