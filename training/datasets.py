"""Training data at a pinned data version: time-based splits and a frozen, content-hashed holdout.

The published training set (contract `ml_training_set`) already holds only transactions whose
label has matured. Here it is cut by `batch_date` into train / validation / holdout, newest last,
and the holdout is frozen as Parquet under `StatePaths.holdouts/<hash>.parquet`. The hash is of
the rows' content, so two models that record the same holdout hash were scored on the same rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.config import Config, ModelSpec, WindowSpec
from training.paths import StatePaths

BATCH_DATE = "batch_date"
MISSING_CATEGORY = "__missing__"


class DatasetError(ValueError):
    """The training set cannot be used as asked; the message says what is wrong and what to do."""


class LeakageError(DatasetError):
    """A holdout transaction also appears in the data a model was fitted or tuned on."""


class HoldoutNotFound(LookupError):
    """No frozen holdout is stored under the requested hash."""


@dataclass(frozen=True)
class Splits:
    """Train / validation / holdout frames and the inclusive date range of each."""

    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame
    train_range: tuple[dt.date, dt.date]
    validation_range: tuple[dt.date, dt.date]
    holdout_range: tuple[dt.date, dt.date]


def training_set_path(paths: StatePaths, data_version: str) -> Path:
    """The local Parquet file of a published data version (DVC md5), via `training.versioning`."""
    from training import versioning

    return versioning.open_version(paths, data_version)


def load_training_set(paths: StatePaths, data_version: str, spec: ModelSpec) -> pd.DataFrame:
    """Read the training set at `data_version` and check it has the columns training needs."""
    df = pd.read_parquet(training_set_path(paths, data_version))
    required = {spec.id_column, spec.target, BATCH_DATE, *spec.features, *spec.slice_columns}
    missing = sorted(required - set(df.columns))
    if missing:
        raise DatasetError(
            f"data version {data_version} lacks columns {missing} required by config.model; "
            "re-publish the training set or fix config/closedloop.yaml"
        )
    df[BATCH_DATE] = pd.to_datetime(df[BATCH_DATE]).dt.date
    return df


def split_windows(df: pd.DataFrame, windows: WindowSpec, end: dt.date | None = None) -> Splits:
    """Cut by `batch_date` (calendar days, inclusive): ... train | validation | holdout ] end.

    `end` defaults to the newest batch date present; the published set holds matured labels only,
    so the holdout is the most recent window whose labels are final.
    """
    if df.empty:
        raise DatasetError("the training set is empty: publish at least one interval with matured labels")
    dates = pd.to_datetime(df[BATCH_DATE]).dt.date
    end = end or max(dates)
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
                f"{name} window {a}..{b} has no rows (data covers {min(dates)}..{max(dates)}); "
                "publish more intervals or shorten config.windows"
            )
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
    and `train` logs this schema as the signature, so rows read from `published.transaction_features`
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


def training_frames(paths: StatePaths, cfg: Config, data_version: str) -> Splits:
    """Load a data version, split it by the configured windows and check for leakage."""
    df = load_training_set(paths, data_version, cfg.model)
    splits = split_windows(df, cfg.windows)
    check_no_leakage(splits, cfg.model.id_column)
    return splits
