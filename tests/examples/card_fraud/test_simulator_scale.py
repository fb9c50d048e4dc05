"""The simulator at 10M+ rows a day: ids stay unique and on the contract's regex.

Generating 10M rows takes longer than a test may (benchmarks/simulator_throughput.py measures it);
these check the id width rule and the volume limit directly.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pytest

from examples.card_fraud import simulator
from examples.card_fraud.simulator import SimulatorError
from training.config import Config, with_overrides

DAY = dt.date(2026, 3, 1)


def _regex(cfg: Config) -> re.Pattern[str]:
    events = cfg.contract.events
    pattern = events.columns[events.id].regex
    assert pattern is not None
    return re.compile(pattern)


@pytest.mark.parametrize(
    ("n_total", "digits"), [(929_381, 7), (9_999_999, 7), (10_000_000, 8), (99_999_999, 8), (120_000_000, 9)]
)
def test_a_days_ids_widen_with_its_volume_and_match_the_contract(base_config, n_total, digits):
    numbers = np.array([1, n_total // 2, n_total], dtype=np.uint64)
    ids = simulator._tx_ids(DAY, numbers, n_total)
    assert [len(i.rsplit("-", 1)[1]) for i in ids] == [digits] * 3
    assert all(_regex(base_config).match(i) for i in ids)
    assert len(set(ids)) == 3


def test_a_day_under_ten_million_rows_keeps_its_seven_digit_ids(small_config):
    spec = small_config.simulator
    tx = simulator.generate_transactions(spec, spec.start_date)
    assert tx["transaction_id"].str.fullmatch(r"tx-\d{8}-\d{7}").all()
    assert tx["transaction_id"].is_unique


def test_ten_million_rows_a_day_are_allowed_and_a_billion_refused(base_config):
    big = with_overrides(base_config, simulator={"transactions_per_day": 12_000_000}).simulator
    assert simulator._day_volume(big, DAY) > 10_000_000
    huge = with_overrides(base_config, simulator={"transactions_per_day": 1_100_000_000}).simulator
    with pytest.raises(SimulatorError, match="9-digit transaction id"):
        simulator._day_volume(huge, DAY)
