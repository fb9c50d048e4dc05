"""The config is validated once, with errors that name the key and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import ConfigError, load_config, with_overrides


def test_project_config_loads(base_config):
    assert base_config.model.name
    assert base_config.model.target not in base_config.model.features


def test_unknown_key_is_an_error(tmp_path: Path):
    bad = tmp_path / "c.yaml"
    text = (Path(__file__).parents[2] / "config" / "closedloop.yaml").read_text()
    bad.write_text(text.replace("cooldown_days: 3", "cooldown_days: 3\n  coldown: 4"))
    with pytest.raises(ConfigError, match=r"drift\.coldown"):
        load_config(bad)


def test_missing_file_names_the_env_var(tmp_path: Path):
    with pytest.raises(ConfigError, match="CLOSEDLOOP_CONFIG"):
        load_config(tmp_path / "nope.yaml")


def test_not_yaml_mapping(tmp_path: Path):
    bad = tmp_path / "c.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_k_greater_than_n_rejected(base_config):
    with pytest.raises(ConfigError, match="k_of_n"):
        with_overrides(base_config, drift={"k_of_n": {"k": 4, "n": 3}})


def test_shadow_section_is_typed_with_defaults(base_config):
    assert base_config.shadow.rollback.enabled and not base_config.shadow.promote_challenger
    assert load_config(Path(__file__).parents[2] / "config" / "models" / "loans.yaml").shadow.min_positives == 30
    with pytest.raises(ConfigError, match=r"shadow\.confidence"):
        with_overrides(base_config, shadow={"confidence": 1.5})
    with pytest.raises(ConfigError, match=r"shadow\.rollback\.enabeld"):
        with_overrides(base_config, shadow={"rollback": {"enabeld": False}})
