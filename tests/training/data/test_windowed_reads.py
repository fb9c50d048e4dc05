"""Windowed reads of a published data version return exactly what reading it whole and cutting gave.

Train (standard and onset-anchored windows), the drift reference and the matured-label lookup read
only their windows' rows through a filter pushed into the Parquet scan; the frames they build must
equal the old read-everything-then-cut frames, row for row and dtype for dtype.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from training.config import Config, with_overrides
from training.data import datasets
from training.monitoring import drift_job
from training.paths import StatePaths
from training.storage import versioning

N_DAYS = 45
PER_DAY = 40


def _training_set(cfg: Config, start: dt.date) -> pd.DataFrame:
    """A published-shaped training set: days in order, both classes every day, the model's columns."""
    spec = cfg.model
    rng = np.random.default_rng(7)
    n = N_DAYS * PER_DAY
    days = np.repeat([start + dt.timedelta(days=i) for i in range(N_DAYS)], PER_DAY)
    frame = pd.DataFrame({
        spec.id_column: [f"tx-{d:%Y%m%d}-{i:07d}" for i, d in enumerate(days)],
        "batch_date": days,
        spec.target: np.tile([True, False, False, False], n // 4),
    })
    for col in spec.numeric_features:
        frame[col] = rng.normal(size=n)
    for col in {*spec.categorical_features, *spec.slice_columns} - set(frame.columns):
        frame[col] = rng.choice(["a", "b", None], size=n)
    return frame


@pytest.fixture
def published(state: StatePaths, small_config: Config) -> tuple[Config, str]:
    cfg = small_config
    frame = _training_set(cfg, dt.date(2026, 1, 1))
    md5 = versioning.publish_frame(state, frame, "training_set", dbt_invocation_id="test", gx_run_id="test")
    return cfg, md5


def _old_read(paths: StatePaths, md5: str) -> pd.DataFrame:
    """The previous `load_training_set`: the whole snapshot, batch dates as dates."""
    df = pd.read_parquet(datasets.training_set_path(paths, md5))
    df["batch_date"] = pd.to_datetime(df["batch_date"]).dt.date
    return df


def _assert_same_splits(got: datasets.Splits, want: datasets.Splits) -> None:
    for name in ("train", "validation", "holdout"):
        pd.testing.assert_frame_equal(getattr(got, name), getattr(want, name), check_exact=True)
    for field in dataclasses.fields(datasets.Splits):
        if field.name not in ("train", "validation", "holdout", "train_weight"):
            assert getattr(got, field.name) == getattr(want, field.name), field.name
    if want.train_weight is None:
        assert got.train_weight is None
    else:
        np.testing.assert_array_equal(got.train_weight, want.train_weight)


def test_standard_windows_read_only_their_days_and_equal_the_full_read_cut(state, published):
    cfg, md5 = published
    full = _old_read(state, md5)
    got = datasets.training_frames(state, cfg, md5)
    _assert_same_splits(got, datasets.split_windows(full, cfg.windows))
    first, last = datasets.batch_date_range(state, md5)
    assert (first, last) == (min(full["batch_date"]), max(full["batch_date"]))
    since = datasets.window_start(cfg, last)
    bounded = datasets.load_training_set(state, md5, cfg.model, since=since)
    w = cfg.windows
    assert bounded["batch_date"].nunique() == w.training_days + w.validation_days + w.holdout_days < N_DAYS
    pd.testing.assert_frame_equal(bounded, full[full["batch_date"] >= since].reset_index(drop=True))


@pytest.mark.parametrize(("onset_day", "pre_onset_weight"), [(30, 0.0), (30, 0.3), (40, 0.0), (43, 0.0)])
def test_onset_anchored_windows_equal_the_full_read_cut(state, published, onset_day, pre_onset_weight):
    cfg, md5 = published
    cfg = with_overrides(cfg, training={"drift_aware": {"pre_onset_weight": pre_onset_weight}})
    onset = dt.date(2026, 1, 1) + dt.timedelta(days=onset_day)
    evidence = {"onset_window_start": onset.isoformat()}
    full = _old_read(state, md5)
    got = datasets.training_frames(state, cfg, md5, evidence=evidence, seed=3)
    want = datasets.split_anchored(full, cfg, onset, 3, "evidence.onset_window_start")
    if want is None:  # too few days after the onset: the standard windows, saying why
        want = datasets.split_windows(full, cfg.windows)
        assert got.method == datasets.METHOD_STANDARD and "not anchored" in got.method_detail
        got = dataclasses.replace(got, method_detail=want.method_detail)
    _assert_same_splits(got, want)


def test_the_first_day_warning_looks_at_the_data_version_not_the_read(state, small_config, caplog):
    """A window starting in a gap of the data is no 'window before the first day'; one before the data is."""
    frame = _training_set(small_config, dt.date(2026, 1, 1))
    gap = pd.to_datetime(frame["batch_date"]).dt.day.between(15, 20)  # the standard window starts on Jan 18
    md5 = versioning.publish_frame(state, frame[~gap], "training_set", dbt_invocation_id="t", gx_run_id="t")
    full = _old_read(state, md5)
    for cfg, warns in ((small_config, False), (with_overrides(small_config, windows={"training_days": 60}), True)):
        caplog.clear()
        with caplog.at_level("WARNING"):
            _assert_same_splits(datasets.training_frames(state, cfg, md5), datasets.split_windows(full, cfg.windows))
        assert ("starts before the first published day 2026-01-01" in caplog.text) is warns


def test_date_range_from_row_group_statistics_and_read_skips_earlier_row_groups(state, published):
    cfg, md5 = published
    path = datasets.training_set_path(state, md5)
    small_groups = state.root / "grouped.parquet"
    pq.write_table(pq.read_table(path), small_groups, row_group_size=PER_DAY)  # one day per row group
    since = dt.date(2026, 2, 1)
    got = datasets.read_dates_from(small_groups, since)
    full = pd.read_parquet(small_groups)
    want = full[pd.to_datetime(full["batch_date"]).dt.date >= since].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    assert len(got) == (N_DAYS - 31) * PER_DAY


def test_matured_label_lookup_filters_in_the_scan_with_the_same_rows(state, published):
    cfg, md5 = published
    id_col, target = cfg.model.id_column, cfg.model.target
    full = pd.read_parquet(datasets.training_set_path(state, md5), columns=[id_col, target])
    ids = pd.concat([full[id_col].iloc[100:400:3], pd.Series(["tx-unknown-0000001", None])], ignore_index=True)
    got = drift_job._labels_for(state, cfg, ids, dt.date(2026, 3, 1))
    old = full[full[id_col].isin(set(ids))].assign(matured=True)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), old.reset_index(drop=True))
    assert drift_job._labels_for(state, cfg, pd.Series([], dtype=object), dt.date(2026, 3, 1)).empty
