"""Measuring one monitoring window: drift against the champion's reference and matured performance.

One monitoring *window* (a range of batch dates, both ends inclusive) gives three signals, each
`breach`, `ok`, `insufficient` (too few rows / matured positives: never a breach) or `unavailable`
(an input is missing: never a breach):

* `data_drift` - share of monitored features whose Evidently drift test fires >= drift_share_threshold;
  features whose drift the config expects (`expected_drift: warmup|seasonal` with a reason) are
  reported with that reason and not counted (or counted at their relaxed threshold);
* `prediction_drift` - the score distribution moved (normed Wasserstein >= prediction_drift_threshold);
* `performance` - on matured labels, even the optimistic (bootstrap upper) end of the primary metric
  is below champion holdout value x (1 - performance_tolerance).

The drift reference covers whole weeks and each window is compared with the same weekdays of it
(`select_reference`): busier, pricier weekends are the world's rhythm, not drift.
`training.monitoring.retrain_trigger` decides on the evidence measured here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import Counter
from typing import Any

import pandas as pd

from training.config import Config
from training.monitoring import drift
from training.monitoring.retrain_trigger import MonitoringError, Signal, WindowEvidence, nan_if_none
from training.paths import StatePaths


class MonitoringDataError(MonitoringError):
    """The warehouse lacks the tables or columns the monitor reads."""


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


REFERENCE_DATE_COLUMN = "batch_date"


def select_reference(
    reference: pd.DataFrame, window_start: dt.date, window_end: dt.date, cfg: Config
) -> tuple[pd.DataFrame, str]:
    """The reference rows a window is compared with, and a sentence saying which (for the decision).

    Weekly seasonality (busier, pricier weekends) is not drift: with `drift.reference: day_of_week`
    a window is compared with the reference days of the same weekdays, in proportion (a window of
    Saturday+Sunday against reference Saturdays and Sundays). `whole_weeks` keeps the last whole
    weeks of the reference; `as_given` (or a reference without a `batch_date` column) uses it as is.
    A reference lacking one of the window's weekdays falls back to its whole weeks, and says so.
    """
    mode = cfg.drift.reference
    if mode == "as_given" or REFERENCE_DATE_COLUMN not in reference.columns or reference.empty:
        return reference, f"reference: {len(reference)} rows as given"
    dates = pd.to_datetime(reference[REFERENCE_DATE_COLUMN]).dt.date
    days = sorted(set(dates))
    span = f"{days[0]}..{days[-1]}"
    last = days[-1]
    keep_from = last - dt.timedelta(days=cfg.drift.reference_days - 1)
    whole = (days[-1] - days[0]).days + 1 >= 7
    recent = reference[dates >= keep_from] if whole else reference
    if not whole:
        note = f"reference {span} covers less than a week: all {len(reference)} rows (weekly seasonality not matched)"
        return reference, note
    if mode == "whole_weeks":
        return recent, f"reference: the last whole weeks {keep_from}..{last}, {len(recent)} rows"
    window_days = [window_start + dt.timedelta(days=i) for i in range((window_end - window_start).days + 1)]
    weekdays = {d.weekday() for d in window_days}
    recent_wd = pd.to_datetime(recent[REFERENCE_DATE_COLUMN]).dt.weekday
    available = set(recent_wd)
    if not weekdays <= available:
        missing = sorted(weekdays - available)
        return recent, (
            f"reference lacks weekday(s) {missing} of the window: the whole weeks {keep_from}..{last}, "
            f"{len(recent)} rows"
        )
    if len(weekdays) == 7:
        return recent, f"reference: the whole weeks {keep_from}..{last}, {len(recent)} rows"
    # same weekdays, weighted like the window (a 3-day window Fri-Sun: each weekday once)
    matched = recent[recent_wd.isin(weekdays).to_numpy()]
    names = ",".join(dt.date(2024, 1, 1 + wd).strftime("%a") for wd in sorted(weekdays))
    return matched, f"reference: {names} of {keep_from}..{last} (day-of-week matched), {len(matched)} rows"


def evaluate_window(
    paths: StatePaths,
    cfg: Config,
    window_start: dt.date,
    window_end: dt.date,
    reference_features: pd.DataFrame,
    reference_scores: Any,
    champion_holdout_metrics: dict[str, float],
    current: pd.DataFrame,
    labels: pd.DataFrame | None,
    *,
    champion_version: str,
    save_html: bool = True,
) -> WindowEvidence:
    """Measure one window: drift of `current` vs the champion's reference, and matured performance.

    `current`: the window's rows with the model features, `score` and `model_version` (what
    `load_current_window` returns). `labels`: `<id_column>, <target>, matured` - only rows with
    `matured` true count (an immature label is not a negative). `reference_scores` may be None
    (prediction drift then 'unavailable'); it need not be row-aligned with `reference_features`.
    The Evidently HTML report is written under `paths.reports / "drift"` when drift was computed.
    """
    if window_end < window_start:
        raise MonitoringError(f"window_end {window_end} is before window_start {window_start}")
    reference_features, reference_note = select_reference(reference_features, window_start, window_end, cfg)
    if reference_scores is None and "score" in reference_features.columns and len(reference_features):
        reference_scores = reference_features["score"].to_numpy(dtype="float64")  # row-aligned, same selection
    d = cfg.drift
    id_col, target = cfg.model.id_column, cfg.model.target
    for col in ("score", "model_version"):
        if col not in current.columns:
            raise MonitoringError(
                f"current window frame lacks column {col!r}; pass published predictions joined to "
                "features (load_current_window does)"
            )
    rows = len(current)
    versions = Counter(str(v) for v in current["model_version"].dropna())
    scored_by = tuple(sorted(versions))
    signals: dict[str, Signal] = {}

    # --- data drift and prediction drift ------------------------------------------------------
    drift_share: float | None = None
    features: tuple[drift.FeatureDrift, ...] = ()
    prediction: drift.FeatureDrift | None = None
    report_file: str | None = None
    if rows < d.min_rows or len(reference_features) < d.min_rows:
        why = (
            f"{rows} rows in the window" if rows < d.min_rows else f"{len(reference_features)} reference rows"
        ) + f" < min_rows {d.min_rows}"
        signals["data_drift"] = Signal("data_drift", "insufficient", reason=why)
        signals["prediction_drift"] = Signal("prediction_drift", "insufficient", reason=why)
    else:
        result = drift.data_drift(
            reference_features,
            current,
            cfg,
            reference_scores=reference_scores,
            current_scores=current["score"] if reference_scores is not None else None,
            tags=[f"champion:v{champion_version}", f"window:{window_start}..{window_end}"],
            render=save_html,  # no HTML wanted: the same scores without Evidently's plots
        )
        drift_share = result.drifted_share
        features = tuple(result.features)
        drifted = result.drifted_features
        counted = sum(f.counted for f in result.features)
        msg = (
            f"{len(drifted)} of {counted} counted features drifted"
            + (f" ({', '.join(drifted)})" if drifted else "")
            + f"; share {drift_share:.3f} vs threshold {d.drift_share_threshold}"
        )
        if result.expected_drifts:
            msg += "; expected drift, not counted: " + "; ".join(
                f"{f.feature} {_fmt(f.score)} ({f.expected})" for f in result.expected_drifts
            )
        critical = result.critical_drifts
        if critical:
            msg += f"; critical feature(s) drifted: {', '.join(critical)}"
        signals["data_drift"] = Signal(
            "data_drift",
            "breach" if drift_share >= d.drift_share_threshold or critical else "ok",
            drift_share,
            d.drift_share_threshold,
            msg,
        )
        prediction = result.prediction
        if prediction is None:
            signals["prediction_drift"] = Signal(
                "prediction_drift", "unavailable", reason="no reference scores for the champion"
            )
        else:
            signals["prediction_drift"] = Signal(
                "prediction_drift",
                "breach" if prediction.drifted else "ok",
                prediction.score,
                prediction.threshold,
                f"normed Wasserstein distance of scores {_fmt(prediction.score)} vs threshold "
                f"{prediction.threshold}",
            )
        if save_html and result.snapshot is not None:
            report_file = str(
                drift.save_report(
                    result.snapshot, drift.report_path(paths, champion_version, window_start, window_end)
                )
            )

    # --- matured performance ------------------------------------------------------------------
    performance: dict[str, float] = {}
    matured_rows = positives = 0
    primary = cfg.model.primary_metric
    champion_value = nan_if_none(champion_holdout_metrics.get(primary))
    if labels is None:
        signals["performance"] = Signal("performance", "unavailable", reason="no labels passed")
    else:
        for col in (id_col, target, "matured"):
            if col not in labels.columns:
                raise MonitoringError(
                    f"labels frame lacks column {col!r} (expected {id_col}, {target}, matured)"
                )
        if id_col not in current.columns:
            raise MonitoringError(f"current window frame lacks {id_col!r}, needed to join the labels")
        ok_labels = labels.loc[
            labels["matured"].fillna(False).astype(bool) & labels[target].notna(), [id_col, target]
        ]
        ok_labels = ok_labels.drop_duplicates(subset=[id_col], keep="last")
        joined = current[[id_col, "score"]].merge(ok_labels, on=id_col, how="inner")
        matured_rows = len(joined)
        y = joined[target].astype(int).to_numpy()
        positives = int(y.sum())
        negatives = matured_rows - positives
        floor = champion_value * (1 - d.performance_tolerance)
        if math.isnan(champion_value):
            signals["performance"] = Signal(
                "performance", "unavailable", reason=f"champion holdout {primary} not given"
            )
        elif positives < d.min_positives or negatives == 0:
            signals["performance"] = Signal(
                "performance",
                "insufficient",
                threshold=floor,
                reason=f"{positives} matured positives (min_positives {d.min_positives}), {negatives} negatives",
            )
        else:
            performance = drift.matured_performance(y, joined["score"].to_numpy(dtype="float64"), cfg)
            upper = performance[f"{primary}_upper"]
            breach = upper < floor
            signals["performance"] = Signal(
                "performance",
                "breach" if breach else "ok",
                performance[primary],
                floor,
                f"matured {primary} {_fmt(performance[primary])} (upper bound {_fmt(upper)} at "
                f"{d.performance_confidence:.0%}) {'<' if breach else '>='} floor {_fmt(floor)} = champion "
                f"holdout {_fmt(champion_value)} x (1 - {d.performance_tolerance}); "
                f"{positives} positives in {matured_rows} matured rows",
            )
    champion_metrics = {str(k): nan_if_none(v) for k, v in champion_holdout_metrics.items()}
    signals = {
        k: dataclasses.replace(v, start=v.start or window_start, end=v.end or window_end)
        for k, v in signals.items()
    }
    return WindowEvidence(
        window_start=window_start,
        window_end=window_end,
        champion_version=str(champion_version),
        scored_by_versions=scored_by,
        rows=rows,
        matured_rows=matured_rows,
        positives=positives,
        signals=signals,
        drift_share=drift_share,
        features=features,
        prediction=prediction,
        performance=performance,
        champion_metrics=champion_metrics,
        report_path=report_file,
        reference_note=reference_note,
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def load_current_window(paths: StatePaths, cfg: Config, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Champion predictions of batch dates [start, end] joined to their published features.

    Read-only connection to the warehouse. Columns: the id column (`cfg.model.id_column`; the
    predictions carry it as `entity_id`), `batch_date`, the model features, `score`,
    `model_version`. Empty frame when nothing was scored in the window.
    """
    from training.storage.warehouse import connect, is_missing_relation

    id_col = cfg.model.id_column
    published = cfg.contract.marts.published
    feats = ", ".join(f"f.{_quote(c)}" for c in cfg.model.features if c != id_col)
    sql = f"""
        select p.entity_id as {_quote(id_col)}, p.batch_date, {feats},
               p.score, cast(p.model_version as varchar) as model_version
        from published.predictions p
        join {published} f
          on cast(f.{_quote(id_col)} as varchar) = p.entity_id and f.batch_date = p.batch_date
        where p.alias = 'champion' and p.model_name = ? and p.batch_date between ? and ?
        order by p.batch_date, p.entity_id
    """
    with connect(paths, read_only=True) as con:
        for table in ("published.predictions", published):
            if not con.table_exists(*table.split(".", 1)):
                raise MonitoringDataError(
                    f"warehouse has no {table}: run data_pipeline and batch_inference first"
                )
        try:
            return con.frame(sql, [cfg.model.name, start, end])
        except Exception as exc:
            if is_missing_relation(exc):  # a contract column is missing
                raise MonitoringDataError(
                    f"published tables do not match the contract (docs/contracts.md): {exc}"
                ) from None
            raise

