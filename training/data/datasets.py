"""Training data at a pinned data version: time-based splits and a frozen, content-hashed holdout.

The published training set (the contract's `marts.training_set`) already holds only events whose
label has matured. Here it is cut by `batch_date` into train / validation / holdout, newest last,
and the holdout is frozen as Parquet under `StatePaths.holdouts/<hash>.parquet`. The hash is of
the rows' content, so two models that record the same holdout hash were scored on the same rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from training.config import Config, ModelSpec, WindowSpec
from training.errors import ClosedloopError
from training.paths import StatePaths

log = logging.getLogger(__name__)

BATCH_DATE = "batch_date"
MISSING_CATEGORY = "__missing__"


class DatasetError(ClosedloopError, ValueError):
    """The training set cannot be used as asked; the message says what is wrong and what to do."""


class LeakageError(DatasetError):
    """A holdout transaction also appears in the data a model was fitted or tuned on."""


class HoldoutNotFound(ClosedloopError, LookupError):
    """No frozen holdout is stored under the requested hash."""


METHOD_STANDARD = "standard_window"
METHOD_ANCHORED = "onset_anchored"


@dataclass(frozen=True)
class Splits:
    """Train / validation / holdout frames and the inclusive date range of each.

    `train_weight` (None = all 1) is the per-row weight of `train`; `method` names how the windows
    were cut and `method_detail` says it in a sentence (run tag and decision report).
    """

    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame
    train_range: tuple[dt.date, dt.date]
    validation_range: tuple[dt.date, dt.date]
    holdout_range: tuple[dt.date, dt.date]
    train_weight: np.ndarray | None = None
    method: str = METHOD_STANDARD
    method_detail: str = "time-based train | validation | holdout windows from config.windows"
    onset: dt.date | None = None


def training_set_path(paths: StatePaths, data_version: str) -> Path:
    """The local Parquet file or partition folder of a published data version, via
    `training.storage.versioning.open_version` (pandas and pyarrow read either as one table)."""
    from training.storage import versioning

    return versioning.open_version(paths, data_version)


def _parquet_schema(path: Path) -> pa.Schema:
    """The schema of a Parquet file, or of the first file of a partition folder (they share it)."""
    if path.is_dir():
        files = sorted(f for f in path.glob("*.parquet") if not f.name.startswith((".", "_")))
        if not files:
            raise DatasetError(f"{path} holds no Parquet file: re-open the data version")
        path = files[0]
    return pq.read_schema(path)


def _row_group_metadata(path: Path) -> list[pq.FileMetaData]:
    """The Parquet footers of a file or of every file of a partition folder."""
    files = sorted(f for f in path.glob("*.parquet") if not f.name.startswith((".", "_"))) if path.is_dir() else [path]
    return [pq.ParquetFile(f).metadata for f in files]


def load_training_set(
    paths: StatePaths, data_version: str, spec: ModelSpec, *, since: dt.date | None = None
) -> pd.DataFrame:
    """Read the training set at `data_version` and check it has the columns training needs.

    `since` reads only the rows of batch dates from it on: the filter is pushed into the Parquet
    scan (row groups of earlier days are skipped by their statistics, the snapshot is ordered by
    batch date), so memory follows the window, not the history. The rows and their order are the
    ones a full read cut at `since` gives.
    """
    path = training_set_path(paths, data_version)
    required = {spec.id_column, spec.target, BATCH_DATE, *spec.features, *spec.slice_columns}
    missing = sorted(required - set(_parquet_schema(path).names))
    if missing:
        raise DatasetError(
            f"data version {data_version} lacks columns {missing} required by config.model; "
            "re-publish the training set or fix config/closedloop.yaml"
        )
    df = read_dates_from(path, since)
    df[BATCH_DATE] = pd.to_datetime(df[BATCH_DATE]).dt.date
    return df


def read_dates_from(path: Path, since: dt.date | None, columns: list[str] | None = None) -> pd.DataFrame:
    """The rows of a published Parquet snapshot (file or partition folder) with `batch_date >= since`
    (all rows when None)."""
    if since is None:
        return pd.read_parquet(path, columns=columns)
    kind = _parquet_schema(path).field(BATCH_DATE).type
    bound: object = since
    if pa.types.is_timestamp(kind):  # a snapshot written by pandas from datetime64 batch dates
        bound = pd.Timestamp(since)
    elif not pa.types.is_date(kind):
        raise DatasetError(f"{path}: {BATCH_DATE} is {kind}, not a date; re-publish the training set")
    return pd.read_parquet(path, columns=columns, filters=[(BATCH_DATE, ">=", bound)])


def batch_date_range(paths: StatePaths, data_version: str) -> tuple[dt.date, dt.date]:
    """First and last batch date of a data version, from the Parquet footer's statistics.

    Reads no rows when every row group carries statistics for `batch_date` (DuckDB and pyarrow
    write them); otherwise falls back to reading that one column.
    """
    path = training_set_path(paths, data_version)
    metas = _row_group_metadata(path)
    names = [metas[0].schema.column(i).name for i in range(metas[0].num_columns)]
    if BATCH_DATE not in names:
        raise DatasetError(f"data version {data_version} has no {BATCH_DATE} column; re-publish the training set")
    col = names.index(BATCH_DATE)
    groups = [meta.row_group(i) for meta in metas for i in range(meta.num_row_groups)]
    stats = [g.column(col).statistics for g in groups if g.num_rows]
    if all(st is not None and st.has_min_max for st in stats):
        bounds = [(pd.Timestamp(st.min).date(), pd.Timestamp(st.max).date()) for st in stats]
    else:
        dates = pd.to_datetime(pd.read_parquet(path, columns=[BATCH_DATE])[BATCH_DATE]).dt.date
        bounds = [(min(dates), max(dates))] if len(dates) else []
    if not bounds:
        raise DatasetError("the training set is empty: publish at least one interval with matured labels")
    return min(lo for lo, _ in bounds), max(hi for _, hi in bounds)


def window_start(cfg: Config, last: dt.date, evidence: dict | None = None) -> dt.date:
    """The first batch date any split of `training_frames` can use when the data ends at `last`.

    The standard windows reach back train + validation + holdout days; windows anchored at an
    onset in the trigger evidence reach back `training_days` before the onset.
    """
    w = cfg.windows
    start = last - dt.timedelta(days=w.training_days + w.validation_days + w.holdout_days - 1)
    if cfg.training.drift_aware.enabled and evidence:
        onset, _ = onset_from_evidence(evidence, w.label_maturity_days)
        if onset is not None:
            start = min(start, onset - dt.timedelta(days=w.training_days), onset)
    return start


def split_windows(
    df: pd.DataFrame, windows: WindowSpec, end: dt.date | None = None, *, first: dt.date | None = None
) -> Splits:
    """Cut by `batch_date` (calendar days, inclusive): ... train | validation | holdout ] end.

    `end` defaults to the newest batch date present; the published set holds matured labels only,
    so the holdout is the most recent window whose labels are final. `first` is the data version's
    first batch date when `df` was read from a later day on (default: the first in `df`).
    """
    if df.empty:
        raise DatasetError("the training set is empty: publish at least one interval with matured labels")
    dates = pd.to_datetime(df[BATCH_DATE]).dt.date
    end = end or max(dates)
    first = min(first, min(dates)) if first is not None else min(dates)
    day = dt.timedelta(days=1)
    h_start = end - (windows.holdout_days - 1) * day
    v_end = h_start - day
    v_start = v_end - (windows.validation_days - 1) * day
    t_end = v_start - day
    t_start = t_end - (windows.training_days - 1) * day

    def _between(a: dt.date, b: dt.date) -> pd.DataFrame:
        return df.loc[(dates >= a) & (dates <= b)].reset_index(drop=True)

    splits = Splits(
        train=_between(t_start, t_end),
        validation=_between(v_start, v_end),
        holdout=_between(h_start, end),
        train_range=(t_start, t_end),
        validation_range=(v_start, v_end),
        holdout_range=(h_start, end),
    )
    for name, frame, (a, b) in (
        ("train", splits.train, splits.train_range),
        ("validation", splits.validation, splits.validation_range),
        ("holdout", splits.holdout, splits.holdout_range),
    ):
        if frame.empty:
            raise DatasetError(
                f"{name} window {a}..{b} has no rows (data covers {first}..{max(dates)}); "
                "publish more intervals or shorten config.windows"
            )
    if t_start < first:
        # a config that does not match the published data (e.g. the project's after a demo's)
        covered = (t_end - first).days + 1
        log.warning(
            "the training window %s..%s starts before the first published day %s: only %d of its %d days hold data; "
            "is config.windows (training_days=%d) the config this data was published with?",
            t_start, t_end, first, covered, windows.training_days, windows.training_days,
        )
    return splits


def _iso_date(value: object) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def onset_from_evidence(evidence: dict | None, label_maturity_days: int) -> tuple[dt.date | None, str]:
    """The change point a retrain trigger points at, and where it was read from.

    `evidence["onset_window_start"]` (the first breaching day, set by the drift monitor) wins.
    Otherwise the earliest breaching window among the evidence's signals: a performance window
    recorded under a scored window is measured on days whose labels matured, i.e.
    `label_maturity_days` before it, so its start is moved back by that much.
    """
    if not evidence:
        return None, "no evidence"
    given = _iso_date(evidence.get("onset_window_start")) if evidence.get("onset_window_start") else None
    if given is not None:
        return given, "evidence.onset_window_start"
    starts: list[dt.date] = []
    signals = evidence.get("signals") or {}
    if isinstance(signals, dict):
        for name, sig in signals.items():
            for w in (sig or {}).get("windows") or []:
                if (w or {}).get("status") != "breach":
                    continue
                start = _iso_date(w.get("window_start"))
                if start is None:
                    continue
                if name == "performance":
                    start -= dt.timedelta(days=label_maturity_days)
                starts.append(start)
    if starts:
        return min(starts), "earliest breaching window in evidence.signals"
    return None, "evidence names no breaching window"


def split_anchored(
    df: pd.DataFrame, cfg: Config, onset: dt.date, seed: int, source: str = "evidence"
) -> Splits | None:
    """Windows anchored at a detected change (`onset`): learn the new world from after it.

    holdout = the newest `windows.holdout_days` days (all after the onset); validation = the
    `windows.validation_days` post-onset days before it when at least one more post-onset day is left
    for training, else a stratified random `validation_share` of the post-onset rows before the
    holdout; train = the rest of those rows plus, at `pre_onset_weight`, the `windows.training_days`
    days before the onset. None when the post-onset days cannot hold the holdout and one day more
    (the caller then uses the standard windows and says why). Whether there is *enough* post-onset
    evidence to train at all (`min_post_onset_days`) is decided before training, by
    `training.monitoring.retrain_deferral`: the train_model DAG defers a retrain that has too little.
    """
    spec = cfg.training.drift_aware
    w = cfg.windows
    dates = pd.to_datetime(df[BATCH_DATE]).dt.date
    end = max(dates)
    post_days = (end - onset).days + 1
    if post_days < w.holdout_days + 1:
        return None
    day = dt.timedelta(days=1)
    h_start = end - (w.holdout_days - 1) * day
    holdout = df.loc[dates >= h_start].reset_index(drop=True)
    post_pre_holdout = (h_start - onset).days
    short = (
        f" - below training.drift_aware.min_post_onset_days {spec.min_post_onset_days} "
        "(the train_model DAG would have deferred this retrain)"
        if post_days < spec.min_post_onset_days
        else ""
    )
    before = dates < h_start
    if post_pre_holdout >= w.validation_days + 1:
        v_start = h_start - w.validation_days * day
        validation = df.loc[before & (dates >= v_start)].reset_index(drop=True)
        post_train = df.loc[(dates >= onset) & (dates < v_start)]
        v_how = f"validation {v_start}..{h_start - day}"
        v_range = (v_start, h_start - day)
    else:
        pool = df.loc[before & (dates >= onset)]
        rng = np.random.default_rng(seed)
        target = pool[cfg.model.target].astype(int).to_numpy()
        pick = np.zeros(len(pool), dtype=bool)
        for cls in (0, 1):
            idx = np.flatnonzero(target == cls)
            n = int(round(len(idx) * spec.validation_share))
            pick[rng.choice(idx, size=n, replace=False)] = True
        validation = pool.loc[pick].reset_index(drop=True)
        post_train = pool.loc[~pick]
        v_range = (onset, h_start - day)
        v_how = (
            f"validation a stratified random {spec.validation_share:.0%} of {onset}..{h_start - day} "
            "(too few post-onset days for a time-based one)"
        )
    pre_start = onset - w.training_days * day
    similar = spec.pre_onset_weighting == "regime_similarity"
    weight = 1.0 if similar else spec.pre_onset_weight
    pre = df.loc[(dates >= pre_start) & (dates < onset)] if weight > 0 else df.iloc[:0]
    train = pd.concat([pre, post_train], ignore_index=True)
    if similar:
        from training.data.regime_weights import regime_similarity

        pre_weights = regime_similarity(pre, df.loc[before & (dates >= onset)], cfg.model, seed)  # not the holdout
        pre_how = (f"rows {pre_start}..{onset - day} weighted by regime similarity (mean "
                   f"{pre_weights.mean() if len(pre_weights) else 0:.2f})")
    else:
        pre_weights = np.full(len(pre), weight)
        pre_how = (
            f"rows {pre_start}..{onset - day} at weight {weight:g}" if weight > 0 else "rows before the onset left out"
        )
    weights = np.concatenate([pre_weights, np.ones(len(post_train))])
    t_start = pre_start if weight > 0 else onset
    detail = (
        f"onset {onset} ({source}; {post_days} matured days from it{short}); train from {t_start}, post-onset rows weight 1, {pre_how}; {v_how}; "
        f"holdout {h_start}..{end} (after the onset)"
    )
    splits = Splits(
        train=train,
        validation=validation,
        holdout=holdout,
        train_range=(t_start, h_start - day),
        validation_range=v_range,
        holdout_range=(h_start, end),
        train_weight=weights,
        method=METHOD_ANCHORED,
        method_detail=detail,
        onset=onset,
    )
    for name, frame in (("train", train), ("validation", validation), ("holdout", holdout)):
        if frame.empty:
            raise DatasetError(f"onset-anchored {name} window is empty ({detail})")
    return splits


def check_no_leakage(splits: Splits, id_column: str) -> None:
    """Raise `LeakageError` if any holdout (or validation) transaction is also in an earlier split."""
    hold = set(splits.holdout[id_column])
    val = set(splits.validation[id_column])
    train = set(splits.train[id_column])
    for name, ids in (("train", train), ("validation", val)):
        shared = hold & ids
        if shared:
            raise LeakageError(
                f"{len(shared)} holdout transactions also appear in {name} (e.g. {sorted(shared)[:3]}); "
                "the training set holds duplicated transactions across batch dates - deduplicate upstream"
            )
    shared = val & train
    if shared:
        raise LeakageError(
            f"{len(shared)} validation transactions also appear in train (e.g. {sorted(shared)[:3]})"
        )
    if splits.holdout[id_column].duplicated().any():
        raise LeakageError("the holdout holds duplicated transaction ids; deduplicate upstream")


def prepare_features(df: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The model input: configured features only, numerics as float64, categoricals as strings.

    Training, evaluation and inference all go through this, so the logged signature is stable
    whatever integer/boolean types the warehouse hands out.
    """
    missing = [c for c in spec.features if c not in df.columns]
    if missing:
        raise DatasetError(f"input lacks feature columns {missing} (config.model.*_features)")
    out = pd.DataFrame(index=df.index)
    for col in spec.numeric_features:
        out[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in spec.categorical_features:
        out[col] = df[col].astype("object").where(df[col].notna(), MISSING_CATEGORY).astype(str)
    return out.reset_index(drop=True)


def feature_schema(spec: ModelSpec):  # -> mlflow.types.Schema (mlflow is imported lazily: it is slow)
    """The model's input contract: numeric features `double`, categoricals `string`, in config order.

    The feature mart casts its columns to exactly these types (docs/contracts.md, "Feature types"),
    and `train` logs this schema as the signature, so rows read from the published features table
    pass MLflow's schema enforcement as they are (MLflow refuses int64 -> double as "unsafe").
    """
    from mlflow.types import ColSpec, DataType, Schema

    cols: list[Any] = [ColSpec(DataType.double, name) for name in spec.numeric_features]
    cols += [ColSpec(DataType.string, name) for name in spec.categorical_features]
    return Schema(cols)


def model_signature(spec: ModelSpec, example: pd.DataFrame, output: object):  # -> ModelSignature
    """The signature `train` logs: the declared input contract, outputs inferred from `output`.

    `example` must be `prepare_features` output; a type that differs from the contract is a bug
    here, not something to log silently.
    """
    from mlflow.models import ModelSignature, infer_signature

    inferred = infer_signature(example, output)
    declared = feature_schema(spec)
    got = [(c.name, c.type) for c in inferred.inputs.inputs]  # type: ignore[union-attr]
    want = [(c.name, c.type) for c in declared.inputs]
    if got != want:
        raise DatasetError(f"prepared features {got} do not match the feature contract {want}")
    return ModelSignature(inputs=declared, outputs=inferred.outputs)


NUMERIC_SIGNATURE_TYPES = {"double", "float", "long", "integer", "boolean"}


def prepare_for_signature(df: pd.DataFrame, signature: list[dict[str, str]]) -> pd.DataFrame:
    """The model input a registered model expects, built from its logged input signature.

    Champion and challenger may have been trained on different feature lists (config changes);
    each is fed exactly the columns, in the types, it was logged with.
    """
    if not signature:
        raise DatasetError("the model has no logged input signature; retrain it with closedloop")
    missing = [c["name"] for c in signature if c["name"] not in df.columns]
    if missing:
        raise DatasetError(f"input lacks columns {missing} that the model's signature requires")
    out = pd.DataFrame(index=df.index)
    for col in signature:
        name = col["name"]
        if col["type"] in NUMERIC_SIGNATURE_TYPES:
            out[name] = pd.to_numeric(df[name], errors="coerce").astype("float64")
        else:
            out[name] = df[name].astype("object").where(df[name].notna(), MISSING_CATEGORY).astype(str)
    return out.reset_index(drop=True)


def holdout_hash(holdout: pd.DataFrame, id_column: str) -> str:
    """Content hash of a holdout: independent of row and column order, sensitive to every value."""
    canon = holdout.sort_values(id_column, kind="mergesort").reset_index(drop=True)
    canon = canon[sorted(canon.columns)]
    h = hashlib.sha256()
    h.update(repr([(c, str(canon[c].dtype)) for c in canon.columns]).encode())
    h.update(pd.util.hash_pandas_object(canon, index=False).to_numpy(dtype=np.uint64).tobytes())
    return h.hexdigest()[:32]


def freeze_holdout(paths: StatePaths, holdout: pd.DataFrame, id_column: str) -> tuple[str, pd.DataFrame]:
    """Write the holdout once under its content hash; return the hash and the frame as stored.

    The hash is taken of the frame read back from Parquet, so the dtypes Parquet round-trips to
    are the ones hashed, and evaluation later re-reads exactly what training scored.
    """
    paths.holdouts.mkdir(parents=True, exist_ok=True)
    canon = holdout.sort_values(id_column, kind="mergesort").reset_index(drop=True)
    tmp = paths.holdouts / f".tmp-{os.getpid()}-{uuid.uuid4().hex}.parquet"
    try:
        canon.to_parquet(tmp, index=False)
        stored = pd.read_parquet(tmp)
        digest = holdout_hash(stored, id_column)
        path = paths.holdouts / f"{digest}.parquet"
        if path.is_file():
            tmp.unlink()
        else:
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return digest, stored


def load_holdout(paths: StatePaths, digest: str, id_column: str) -> pd.DataFrame:
    """Read a frozen holdout and verify its content still matches its hash."""
    path = paths.holdouts / f"{digest}.parquet"
    if not path.is_file():
        raise HoldoutNotFound(
            f"frozen holdout {digest} not found at {path}; retrain the challenger to re-freeze it"
        )
    df = pd.read_parquet(path)
    actual = holdout_hash(df, id_column)
    if actual != digest:
        raise DatasetError(f"holdout file {path} was modified: content hash {actual} != {digest}")
    return df


def training_frames(
    paths: StatePaths,
    cfg: Config,
    data_version: str,
    *,
    evidence: dict | None = None,
    seed: int | None = None,
) -> Splits:
    """Load the windows' rows of a data version, split them and check for leakage.

    Only the batch dates the splits can use are read (`window_start`, `load_training_set(since=)`):
    the same splits as cutting a full read, in memory bounded by the windows. With trigger `evidence` that points at a change (see `onset_from_evidence`) and
    `training.drift_aware.enabled`, the windows are anchored at it (`split_anchored`); otherwise, or
    when too few days follow it, the configured windows are used and `method_detail` says why.
    """
    first, last = batch_date_range(paths, data_version)
    df = load_training_set(paths, data_version, cfg.model, since=window_start(cfg, last, evidence))
    splits: Splits | None = None
    note = ""
    if cfg.training.drift_aware.enabled and evidence:
        onset, source = onset_from_evidence(evidence, cfg.windows.label_maturity_days)
        if onset is not None:
            splits = split_anchored(df, cfg, onset, cfg.training.seed if seed is None else seed, source)
            if splits is None:
                note = (
                    f"; onset {onset} ({source}) has too few matured days after it "
                    f"(fewer than holdout_days {cfg.windows.holdout_days} + 1), so not anchored"
                )
        else:
            note = f"; no onset in the trigger evidence ({source})"
    if splits is None:
        splits = split_windows(df, cfg.windows, first=first)
        if note:
            splits = dataclasses.replace(splits, method_detail=splits.method_detail + note)
    check_no_leakage(splits, cfg.model.id_column)
    return splits
