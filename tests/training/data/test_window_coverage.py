"""A training window that reaches back before the published data is trained on, but not silently."""

from __future__ import annotations

import datetime as dt
import logging

import pandas as pd
import pytest

from training.config import WindowSpec
from training.data.datasets import BATCH_DATE, DatasetError, split_windows

FIRST = dt.date(2026, 1, 1)


def _days(n: int) -> pd.DataFrame:
    return pd.DataFrame({BATCH_DATE: [FIRST + dt.timedelta(days=i) for i in range(n) for _ in range(3)], "x": 1})


def test_a_window_partly_before_the_data_is_warned_about(caplog):
    windows = WindowSpec(training_days=21, validation_days=3, holdout_days=3, label_maturity_days=5)
    with caplog.at_level(logging.WARNING, logger="training.data.datasets"):
        splits = split_windows(_days(12), windows)  # the project's windows over a 12-day demo
    assert splits.train_range[0] < FIRST
    assert "starts before the first published day 2026-01-01: only 6 of its 21 days hold data" in caplog.text


def test_a_window_the_data_covers_is_not_warned_about(caplog):
    windows = WindowSpec(training_days=5, validation_days=1, holdout_days=1, label_maturity_days=2)
    with caplog.at_level(logging.WARNING, logger="training.data.datasets"):
        split_windows(_days(12), windows)
    assert "starts before" not in caplog.text


def test_a_window_wholly_before_the_data_is_refused():
    windows = WindowSpec(training_days=5, validation_days=3, holdout_days=3, label_maturity_days=2)
    with pytest.raises(DatasetError, match="train window .* has no rows"):
        split_windows(_days(6), windows)
