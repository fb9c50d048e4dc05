"""Train a challenger at a pinned data version, track it in MLflow and register it `@challenger`.

One call = one MLflow run: candidate families (logistic regression, XGBoost) each get a small,
seeded hyperparameter search scored on the validation window; the best by validation PR-AUC is
refitted on train + validation as a cross-fitted calibrated ensemble (each fold's model calibrated
on the fold it did not see, so scores are probabilities of the positive class), its decision threshold is set at the
configured operating point (recall at precision) on those out-of-fold scores, and it is scored on
the frozen holdout, logged with its data lineage, threshold and training method and registered.

A retrain triggered by a drift or performance breach anchors its windows at the change the trigger
points at (`datasets.training_frames`, method `onset_anchored`): it learns from after the onset and
is judged on a holdout from after it. The same request (same idempotency key) never trains twice: it returns the version
registered the first time, so a retried Airflow task cannot create a second challenger.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import ParameterSampler, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from training.config import Config, ModelSpec
from training.contract import Decisions
from training.data import datasets
from training.data.downsample import Downsample, downsample_negatives
from training.errors import ClosedloopError
from training.model import distributed_fit, metrics, registry, tracking
from training.paths import StatePaths

log = logging.getLogger(__name__)

#: One thread: on a shared 2-core box OpenMP busy-waiting makes 2 threads ~8x slower than 1.
XGB_N_JOBS = 1

#: Folds of the cross-fitted calibration: each fold's model is calibrated on the rows it did not see.
CALIBRATION_FOLDS = 3
#: sklearn types of the calibrated ensemble skops must be told to load (beside tracking's list).
CALIBRATION_TRUSTED_TYPES = [
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.model_selection._split.StratifiedKFold",
]
#: Model version / run tags written beside the lineage tags.
THRESHOLD_TAG = "decision_threshold"
#: holdout scores of the recovery baseline (`gates.recovery.relative_to: baseline`), keyed by id
BASELINE_ARTIFACT = "recovery/baseline_holdout_scores.parquet"
BASELINE_TAG = "recovery_baseline"
METHOD_TAG = "training_method"
#: what `reproduce` retrains from: data version, seed, chosen candidate, git commit, evidence, resolved config
LINEAGE_ARTIFACT = "lineage/training.json"

#: Hyperparameter grids; `cfg.training.search_budget` points are sampled from each with the seed.
SEARCH_SPACES: dict[str, dict[str, list[Any]]] = {
    "logistic_regression": {"C": [0.01, 0.1, 1.0, 10.0]},
    "xgboost": {
        "n_estimators": [60, 120],
        "max_depth": [3, 4, 5],
        "learning_rate": [0.05, 0.1, 0.2],
        "min_child_weight": [1, 5],
        "subsample": [0.8, 1.0],
        "colsample_bytree": [0.8, 1.0],
    },
}


class TrainingError(ClosedloopError, RuntimeError):
    """Training could not produce a usable challenger; the message says why."""


@dataclass(frozen=True)
class TrainRequest:
    """Why and on what to train: the trigger, its evidence and the lineage of the input data.

    Missing lineage (dbt invocation, GX run) is filled from the data version's ledger row.
    `data_version=None` means the newest published version on or before `as_of`.
    """

    reason: str = "scheduled"
    evidence: dict[str, Any] = field(default_factory=dict)
    data_version: str | None = None
    as_of: dt.date | None = None
    dbt_invocation_id: str | None = None
    gx_run_id: str | None = None
    gx_success: bool | None = None
    airflow_dag_id: str | None = None
    airflow_run_id: str | None = None
    seed: int | None = None
    idempotency_key: str | None = None

    def key_for(self, data_version: str) -> str:
        """Same key = same training: the Airflow run if there is one, else data version + reason."""
        if self.idempotency_key:
            return self.idempotency_key
        if self.airflow_run_id:
            return f"{self.airflow_dag_id or 'dag'}/{self.airflow_run_id}"
        return f"{data_version}:{self.reason}"


@dataclass(frozen=True)
class TrainResult:
    model_name: str
    version: str
    run_id: str
    model_uri: str
    data_version: str
    holdout_hash: str
    family: str
    params: dict[str, Any]
    validation_metrics: dict[str, float]
    holdout_metrics: dict[str, float]
    idempotency_key: str
    reused: bool = False
    decision_threshold: float | None = None
    training_method: str = ""


    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Trial:
    family: str
    params: dict[str, Any]
    validation_metrics: dict[str, float]
    fit_seconds: float


def build_pipeline(
    family: str, params: dict[str, Any], spec: ModelSpec, seed: int, pos_weight: float, engine: str = "local"
) -> Pipeline:
    """A fresh, unfitted pipeline: preprocessing (one-hot for categoricals) + classifier.

    `engine` (`training.engine`) `dask`: the XGBoost classifier fits through `xgboost.dask` on the
    open Dask client (`distributed_fit`), with the same parameters.
    """
    onehot = OneHotEncoder(handle_unknown="ignore")
    if family == "logistic_regression":
        pre = ColumnTransformer(
            [
                (
                    "num",
                    Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                    spec.numeric_features,
                ),
                ("cat", onehot, spec.categorical_features),
            ]
        )
        # sklearn's "balanced" (n / (2 n_class)) from `pos_weight` = n_neg / n_pos, so it follows
        # the weighted class counts of `_pos_weight` rather than the (down-sampled) row counts
        balanced = {0: (1.0 + 1.0 / pos_weight) / 2.0, 1: (1.0 + pos_weight) / 2.0}
        clf: Any = LogisticRegression(
            C=float(params["C"]), class_weight=balanced, max_iter=2000, random_state=seed
        )
    elif family == "xgboost":
        from xgboost import XGBClassifier

        pre = ColumnTransformer(
            [("num", "passthrough", spec.numeric_features), ("cat", onehot, spec.categorical_features)]
        )
        clf = (distributed_fit.DaskFittedXGBClassifier if engine == "dask" else XGBClassifier)(
            **params,
            tree_method="hist",
            n_jobs=XGB_N_JOBS,
            random_state=seed,
            scale_pos_weight=pos_weight,
            eval_metric="aucpr",
        )
    else:
        raise TrainingError(f"unknown candidate family {family!r}; use logistic_regression or xgboost")
    if engine == "dask" and family != "xgboost":
        raise TrainingError(f"training.engine: dask fits xgboost only, not {family}; use engine: local")
    return Pipeline([("pre", pre), ("clf", clf)])


def sample_params(family: str, budget: int, seed: int) -> list[dict[str, Any]]:
    """`budget` hyperparameter points for a family, the same ones for the same seed."""
    space = SEARCH_SPACES[family]
    grid_size = int(np.prod([len(v) for v in space.values()]))
    points = ParameterSampler(space, n_iter=min(budget, grid_size), random_state=seed)
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in p.items()} for p in points]


def _pos_weight(y: pd.Series, weight: np.ndarray | None = None) -> float:
    """Negatives per positive, counted by row weight (the classes' balance as the fit sees it).

    Counted by weight so that down-sampled negatives (`training.data.downsample`, weight 1 / rate)
    stand for the rows they replace: counting the kept rows would set the class weighting from
    the sampled balance while the weights already restore the full one, double-counting the rate.
    """
    y_arr = np.asarray(y).astype(int)
    w = np.ones(len(y_arr)) if weight is None else np.asarray(weight, dtype="float64")
    pos = float(w[y_arr == 1].sum())
    if int(y_arr.sum()) == 0 or pos <= 0:
        raise TrainingError("the training window has no positive labels; widen config.windows.training_days")
    return float(w[y_arr == 0].sum() / pos)


def _fit_kwargs(weight: np.ndarray | None) -> dict[str, Any]:
    """Sample weights routed to the classifier step (None: unweighted, the sklearn default)."""
    return {} if weight is None else {"clf__sample_weight": np.asarray(weight, dtype="float64")}


def search(
    cfg: Config,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    seed: int,
    train_weight: np.ndarray | None = None,
) -> list[Trial]:
    """Fit every sampled point of every candidate family on train, score it on validation."""
    spec = cfg.model
    if train_weight is not None and np.any(train_weight <= 0):
        keep = np.asarray(train_weight) > 0
        train, train_weight = train.loc[keep].reset_index(drop=True), np.asarray(train_weight)[keep]
    X_tr, y_tr = datasets.prepare_features(train, spec), train[spec.target].astype(int)
    X_va, y_va = datasets.prepare_features(validation, spec), validation[spec.target].astype(int)
    if y_va.nunique() < 2:
        raise TrainingError(
            "the validation window holds a single class; widen config.windows.validation_days"
        )
    pos_weight = _pos_weight(y_tr, train_weight)
    trials = []
    for family in cfg.training.candidates:
        for params in sample_params(family, cfg.training.search_budget, seed):
            t0 = time.perf_counter()
            model = build_pipeline(family, params, spec, seed, pos_weight, cfg.training.engine).fit(
                X_tr, y_tr, **_fit_kwargs(train_weight)
            )
            fit_s = time.perf_counter() - t0
            m = metrics.compute_metrics(y_va.to_numpy(), tracking.score(model, X_va), spec)
            trials.append(Trial(family, params, m, fit_s))
            log.info("trial %s %s: val %s=%.4f", family, params, spec.primary_metric, m[spec.primary_metric])
    return trials


def best_trial(trials: list[Trial], metric: str) -> Trial:
    """Highest validation metric; ties go to the earlier (simpler-first) candidate."""
    return max(enumerate(trials), key=lambda it: (it[1].validation_metrics[metric], -it[0]))[1]


def _lineage(paths: StatePaths, request: TrainRequest) -> tuple[str, dict[str, Any]]:
    """The data version to train on and the lineage recorded with it."""
    from training.storage import versioning

    record = None
    if request.data_version:
        data_version = request.data_version
        try:
            record = versioning.get_version(paths, data_version)
        except versioning.DataVersionNotFound:
            log.warning(
                "data version %s has no ledger row; lineage comes from the request only", data_version
            )
    else:
        record = versioning.latest_data_version(paths, request.as_of)
        data_version = record.data_version
    gx_success = request.gx_success if request.gx_success is not None else getattr(record, "gx_success", None)
    if gx_success is False:
        raise TrainingError(
            f"data version {data_version} failed its Great Expectations gate (gx_run_id "
            f"{request.gx_run_id or getattr(record, 'gx_run_id', None)}); fix the data and re-publish"
        )
    return data_version, {
        "data_version": data_version,
        "dbt_invocation_id": request.dbt_invocation_id or getattr(record, "dbt_invocation_id", None),
        "gx_run_id": request.gx_run_id or getattr(record, "gx_run_id", None),
        "gx_success": None if gx_success is None else str(bool(gx_success)).lower(),
        "git_commit": tracking.git_commit(),
        "airflow_dag_id": request.airflow_dag_id,
        "airflow_run_id": request.airflow_run_id,
        "trigger_reason": request.reason,
        "trigger_evidence": request.evidence or {},
    }


@dataclass(frozen=True)
class FinalModel:
    """The model that is logged, and the out-of-fold scores its threshold was set on."""

    model: Any
    oof_scores: np.ndarray
    oof_labels: np.ndarray
    operating_point: metrics.OperatingPoint


def bound_train(cfg: Config, splits: datasets.Splits, seed: int) -> tuple[datasets.Splits, Downsample | None]:
    """The splits with the train split down-sampled to `training.max_train_rows` (None: unchanged).

    Only train: validation picks the candidate and holdout gates it, both on every row.
    """
    train, weight, sampled = downsample_negatives(
        splits.train, splits.train_weight, cfg.model.target, cfg.training.max_train_rows, seed
    )
    if sampled is None:
        return splits, None
    log.info(
        "train split down-sampled to %d of %d rows (negatives kept at rate %.4g, weighted 1/rate)",
        sampled.rows_after, sampled.rows_before, sampled.rate,
    )
    return dataclasses.replace(splits, train=train, train_weight=weight), sampled


def fit_rows(splits: datasets.Splits) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The rows (train + validation) the final model is fitted on, and their weights."""
    frame = pd.concat([splits.train, splits.validation], ignore_index=True)
    if splits.train_weight is None:
        return frame, None
    return frame, np.concatenate([splits.train_weight, np.ones(len(splits.validation))])


def fit_final(
    cfg: Config,
    family: str,
    params: dict[str, Any],
    frame: pd.DataFrame,
    seed: int,
    weight: np.ndarray | None = None,
) -> FinalModel:
    """Refit the chosen candidate on `frame` as a calibrated model and set its decision threshold.

    `model.calibration` sigmoid/isotonic: sklearn's `CalibratedClassifierCV` with `ensemble=True`
    over `CALIBRATION_FOLDS` stratified folds - each fold's pipeline is fitted on the other folds
    and its calibrator on this fold, predictions average the folds. Every row thus gets an
    out-of-fold calibrated score, and the threshold is the operating point "recall at precision
    `model.recall_at_precision`" on those scores (`metrics.operating_point`). With `none`, one
    pipeline is fitted and the threshold comes from out-of-fold raw scores of the same folds.

    `weight` reaches the classifier, the calibrator and the operating point. Down-sampled negatives
    (weight 1 / rate) are not double-counted: the class weighting counts them by weight
    (`_pos_weight`), and the calibrator, which has no class weighting of its own, needs the
    weights to map scores to the full split's base rate rather than the sample's.
    """
    spec = cfg.model
    if weight is not None and np.any(np.asarray(weight) <= 0):
        keep = np.asarray(weight) > 0
        frame, weight = frame.loc[keep].reset_index(drop=True), np.asarray(weight)[keep]
    if weight is not None and np.all(np.asarray(weight) == 1.0):
        weight = None
    X, y = datasets.prepare_features(frame, spec), frame[spec.target].astype(int)
    y_arr = y.to_numpy()
    folds = StratifiedKFold(n_splits=CALIBRATION_FOLDS, shuffle=True, random_state=seed)
    splits = list(folds.split(X, y_arr))
    oof = np.zeros(len(X), dtype="float64")
    engine = cfg.training.engine
    base = build_pipeline(family, params, spec, seed, _pos_weight(y, weight), engine)
    model: Any
    if spec.calibration == "none":
        for tr, te in splits:
            w = None if weight is None else np.asarray(weight)[tr]
            part = build_pipeline(family, params, spec, seed, _pos_weight(y.iloc[tr], w), engine)
            part.fit(X.iloc[tr], y.iloc[tr], **_fit_kwargs(w))
            oof[te] = tracking.score(part, X.iloc[te])
        model = base.fit(X, y, **_fit_kwargs(weight))
    else:
        model = CalibratedClassifierCV(base, method=spec.calibration, cv=folds, ensemble=True)
        with warnings.catch_warnings():
            # sklearn cannot see that a Pipeline takes weights; they reach the classifier step
            # through `clf__sample_weight` (sliced per fold) - the warning does not apply
            warnings.filterwarnings("ignore", message="Since Pipeline does not appear to accept sample_weight")
            model.fit(X, y, sample_weight=weight, **_fit_kwargs(weight))
        for (_, te), fold_model in zip(splits, model.calibrated_classifiers_, strict=True):
            oof[te] = np.asarray(fold_model.predict_proba(X.iloc[te]))[:, 1]
    point = metrics.operating_point(y_arr, oof, spec.recall_at_precision, weight=weight)
    if engine == "dask":  # logged and served like the local engine's model
        model = distributed_fit.local_model(model)
    return FinalModel(model, oof, y_arr, point)


def baseline_holdout_scores(
    cfg: Config,
    trials: list[Trial],
    best: Trial,
    fit_frame: pd.DataFrame,
    fit_weight: np.ndarray | None,
    holdout: pd.DataFrame,
    challenger_scores: np.ndarray,
    seed: int,
) -> tuple[dict[str, Any], np.ndarray]:
    """The recovery baseline: `gates.recovery.baseline_family` fitted on the challenger's own days.

    What a simple model reaches on the same (post-onset) days is the bar a recovering challenger is
    held to instead of absolute floors. Its best searched point is reused (the first point of its
    space when it was not a candidate); when it is the challenger's own family and point, the
    challenger's scores are the baseline's. Uncalibrated: the gate compares rankings (PR-AUC).
    """
    spec = cfg.model
    family = cfg.gates.recovery.baseline_family
    own = [t for t in trials if t.family == family]
    params = best_trial(own, spec.primary_metric).params if own else sample_params(family, 1, seed)[0]
    info = {"family": family, "params": params}
    if best.family == family and best.params == params:
        return {**info, "source": "the challenger itself (the baseline won the search)"}, challenger_scores
    frame, weight = fit_frame, fit_weight
    if weight is not None and np.any(np.asarray(weight) <= 0):
        keep = np.asarray(weight) > 0
        frame, weight = frame.loc[keep].reset_index(drop=True), np.asarray(weight)[keep]
    X, y = datasets.prepare_features(frame, spec), frame[spec.target].astype(int)
    model = build_pipeline(family, params, spec, seed, _pos_weight(y, weight), cfg.training.engine).fit(
        X, y, **_fit_kwargs(weight)
    )
    scores = np.asarray(tracking.score(model, datasets.prepare_features(holdout, spec)), dtype="float64")
    return {**info, "source": "fitted on the challenger's training + validation days"}, scores


def _log_baseline(cfg: Config, info: dict[str, Any], holdout: pd.DataFrame, scores: np.ndarray) -> None:
    """Store the baseline's holdout scores with the run, keyed by id, for `evaluate`'s recovery gate."""
    import tempfile
    from pathlib import Path

    import mlflow

    spec = cfg.model
    y = holdout[spec.target].astype(int).to_numpy()
    mlflow.set_tag(BASELINE_TAG, tracking.tag_value(info))
    mlflow.log_metric(f"baseline_holdout_{spec.primary_metric}", metrics.compute_metrics(y, scores, spec)[spec.primary_metric])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(BASELINE_ARTIFACT).name
        pd.DataFrame({spec.id_column: holdout[spec.id_column].astype(str), "score": scores}).to_parquet(path)
        mlflow.log_artifact(str(path), artifact_path=str(Path(BASELINE_ARTIFACT).parent))


def _fitted_pipeline(model: Any) -> Pipeline:
    """The preprocessing + classifier pipeline inside a (possibly calibrated) model."""
    if isinstance(model, CalibratedClassifierCV):
        return model.calibrated_classifiers_[0].estimator  # type: ignore[no-any-return]
    return model  # type: ignore[no-any-return]


def _feature_importances(model: Any) -> tuple[list[str], list[float]]:
    model = _fitted_pipeline(model)
    names = [str(n) for n in model.named_steps["pre"].get_feature_names_out()]
    clf = model.named_steps["clf"]
    if hasattr(clf, "feature_importances_"):
        values = np.asarray(clf.feature_importances_, dtype=float)
    else:
        values = np.abs(np.asarray(clf.coef_, dtype=float)).ravel()
    return names, values.tolist()


def _dataset(df: pd.DataFrame, name: str, digest: str, target: str) -> Any:
    """An MLflow dataset for `log_input`, with its schema inferred in O(columns), not O(cells).

    MLflow infers the schema value by value (seconds per 100k rows); here the column types come
    from a sample and `required` from a vectorised null check, stored where the dataset caches
    its schema. Object columns go in as Arrow types so their type inference is per column too.
    """
    import pyarrow as pa
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.types import ColSpec, Schema
    from mlflow.types.utils import _infer_schema

    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            arr = pa.array(out[col], from_pandas=True)
            out[col] = pd.Series(arr.to_pandas(types_mapper=pd.ArrowDtype), index=out.index)
    ds = from_pandas(out, name=name, digest=digest, targets=target)
    with warnings.catch_warnings():  # MLflow's hint about integer columns concerns serving, not data
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        sampled = _infer_schema(out.head(1000))
    nulls = out.isna().any()
    ds.__dict__["schema"] = Schema(
        [ColSpec(type=c.type, name=c.name, required=not bool(nulls[c.name])) for c in sampled.inputs]  # type: ignore[arg-type]
    )
    return ds


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "xgboost", "skops", "pandas", "numpy")]


def log_model(model: Any, spec: ModelSpec, example: pd.DataFrame, threshold: float, words: Decisions) -> Any:
    """Log the fitted estimator in the active run as a `pyfunc_model.ThresholdedClassifier`.

    Its pyfunc `predict(rows)` returns `score` (calibrated positive-class probability) and
    `decision` (at this version's `threshold`, also tagged `decision_threshold`), and its signature
    says so, with the optional `threshold` parameter; `tracking.load_model` returns the estimator.
    """
    import tempfile
    from pathlib import Path

    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec

    from training.model import pyfunc_model

    scores = tracking.score(model, example)
    output = pd.DataFrame({"score": scores, "decision": tracking.decisions(scores, threshold, words)})
    sig = datasets.model_signature(spec, example, output)
    params = ParamSchema([ParamSpec(pyfunc_model.THRESHOLD, "double", float(threshold))])
    with tempfile.TemporaryDirectory() as tmp, tracking.quiet_skops():
        estimator = Path(tmp) / pyfunc_model.ESTIMATOR_ARTIFACT
        mlflow.sklearn.save_model(
            model,
            str(estimator),
            skops_trusted_types=[*tracking.SKOPS_TRUSTED_TYPES, *CALIBRATION_TRUSTED_TYPES],
            pip_requirements=_pip_requirements(),
        )
        return mlflow.pyfunc.log_model(
            name=tracking.MODEL_ARTIFACT,
            python_model=pyfunc_model.__file__,
            artifacts={pyfunc_model.ESTIMATOR_ARTIFACT: str(estimator)},
            model_config={
                pyfunc_model.THRESHOLD: float(threshold),
                pyfunc_model.POSITIVE: words.positive,
                pyfunc_model.NEGATIVE: words.negative,
            },
            signature=ModelSignature(inputs=sig.inputs, outputs=sig.outputs, params=params),
            input_example=example,
            pip_requirements=_pip_requirements(),
        )


def _existing(mc: Any, cfg: Config, key: str) -> TrainResult | None:
    found = tracking.versions_with_tag(mc, cfg.model.name, tracking.IDEMPOTENCY_TAG, key)
    if not found:
        return None
    mv = found[0]
    run = mc.get_run(mv.run_id)
    m = run.data.metrics
    return TrainResult(
        model_name=cfg.model.name,
        version=str(mv.version),
        run_id=mv.run_id,
        model_uri=tracking.model_uri(cfg.model.name, version=mv.version),
        data_version=mv.tags.get("data_version", ""),
        holdout_hash=mv.tags.get("holdout_hash", ""),
        family=run.data.params.get("family", ""),
        params={k[len("hp_") :]: v for k, v in run.data.params.items() if k.startswith("hp_")},
        validation_metrics={k[4:]: v for k, v in m.items() if k.startswith("val_")},
        holdout_metrics={k[8:]: v for k, v in m.items() if k.startswith("holdout_")},
        idempotency_key=key,
        reused=True,
        decision_threshold=float(mv.tags[THRESHOLD_TAG]) if THRESHOLD_TAG in mv.tags else None,
        training_method=mv.tags.get(METHOD_TAG, ""),
    )


def train_model(paths: StatePaths, cfg: Config, request: TrainRequest) -> TrainResult:
    """Train, log and register a challenger; idempotent on `request.key_for(data_version)`.

    One request trains once: a finished one returns its version; one being trained by another
    process right now is refused (`registry.TrainingInProgress`, naming that process's run) - it
    holds the request's `registry.training_lease` from before its MLflow run opens until its
    version is registered.
    """
    import mlflow

    seed = cfg.training.seed if request.seed is None else int(request.seed)
    mc = tracking.client(paths)
    data_version, lineage = _lineage(paths, request)
    key = request.key_for(data_version)
    previous = _existing(mc, cfg, key)
    if previous is None:
        with registry.training_lease(paths, cfg, key):
            previous = _existing(mc, cfg, key)  # registered by the lease's previous holder
            if previous is None:
                registry.end_abandoned_runs(paths, cfg, key)  # an earlier attempt killed mid-run
                exp_id = tracking.ensure_experiment(paths, cfg)
                with mlflow.start_run(
                    experiment_id=exp_id, run_name=f"train-{data_version[:8]}", tags={tracking.IDEMPOTENCY_TAG: key}
                ) as run, distributed_fit.engine_client(cfg.training) as engine:
                    mlflow.log_params(engine)
                    return _train_in_run(paths, cfg, request, run.info.run_id, data_version, lineage, key, seed)
    log.info("idempotency key %s already trained version %s; not retraining", key, previous.version)
    return previous


def _train_in_run(
    paths: StatePaths,
    cfg: Config,
    request: TrainRequest,
    run_id: str,
    data_version: str,
    lineage: dict[str, Any],
    key: str,
    seed: int,
) -> TrainResult:
    """Search, fit, log into the active MLflow run `run_id`, register `@challenger`."""
    import mlflow

    spec = cfg.model
    mc = tracking.client(paths)
    splits = datasets.training_frames(paths, cfg, data_version, evidence=request.evidence, seed=seed)
    log.info("training windows (%s): %s", splits.method, splits.method_detail)
    splits, sampled = bound_train(cfg, splits, seed)
    digest, holdout = datasets.freeze_holdout(paths, splits.holdout, spec.id_column)
    trials = search(cfg, splits.train, splits.validation, seed, splits.train_weight)
    best = best_trial(trials, spec.primary_metric)

    fit_frame, fit_weight = fit_rows(splits)
    final = fit_final(cfg, best.family, best.params, fit_frame, seed, fit_weight)
    model, point = final.model, final.operating_point
    X_fit = datasets.prepare_features(fit_frame, spec)
    X_ho, y_ho = datasets.prepare_features(holdout, spec), holdout[spec.target].astype(int).to_numpy()
    ho_scores = tracking.score(model, X_ho)
    holdout_metrics = metrics.compute_metrics(y_ho, ho_scores, spec)
    if cfg.gates.recovery.needs_baseline:
        info, baseline = baseline_holdout_scores(cfg, trials, best, fit_frame, fit_weight, holdout, ho_scores, seed)
        _log_baseline(cfg, info, holdout, baseline)

    tags = {
        **lineage,
        "holdout_hash": digest,
        "training_window_start": splits.train_range[0].isoformat(),
        "training_window_end": splits.validation_range[1].isoformat(),
        "seed": seed,
    }
    # no path of this machine in a tag (e.g. in trigger evidence): relative to the state directory
    tags = {k: tracking.tag_value(tracking.portable(tags.get(k), paths)) for k in tracking.LINEAGE_TAGS}
    tags[tracking.IDEMPOTENCY_TAG] = key
    tags["model_family"] = best.family
    tags[METHOD_TAG] = splits.method
    tags["training_method_detail"] = tracking.tag_value(splits.method_detail)
    tags["onset"] = tracking.tag_value(splits.onset.isoformat() if splits.onset else None)
    tags[THRESHOLD_TAG] = repr(point.threshold)
    tags["operating_point"] = tracking.tag_value(point.as_dict())
    tags["calibration"] = f"{spec.calibration} ({CALIBRATION_FOLDS}-fold cross-fitted)"

    mlflow.set_tags(tags)
    mlflow.set_tag("mlflow.runName", f"train-{best.family}-{data_version[:8]}")
    mlflow.log_params(
        {
            "family": best.family,
            **{f"hp_{k}": v for k, v in best.params.items()},
            "seed": seed,
            "search_budget": cfg.training.search_budget,
            "candidates": ",".join(cfg.training.candidates),
            "n_features": len(spec.features),
            "train_rows": len(splits.train),
            "validation_rows": len(splits.validation),
            "holdout_rows": len(holdout),
            "validation_window": f"{splits.validation_range[0]}..{splits.validation_range[1]}",
            "holdout_window": f"{splits.holdout_range[0]}..{splits.holdout_range[1]}",
            "training_method": splits.method,
            "calibration": spec.calibration,
            "decision_threshold": point.threshold,
            "threshold_rule": point.rule,
            **({"max_train_rows": cfg.training.max_train_rows} if cfg.training.max_train_rows else {}),
            **(sampled.as_params() if sampled else {}),
        }
    )
    mlflow.log_metrics(
        {
            "oof_precision_at_threshold": point.precision,
            "oof_recall_at_threshold": point.recall,
            "oof_flagged_share": point.flagged_share,
            "holdout_flagged_share": float(np.mean(ho_scores >= point.threshold)),
        }
    )
    mlflow.log_metrics({f"val_{k}": v for k, v in best.validation_metrics.items()})
    mlflow.log_metrics({f"holdout_{k}": v for k, v in holdout_metrics.items()})
    mlflow.log_dict(
        {"primary_metric": spec.primary_metric, "trials": [dataclasses.asdict(t) for t in trials]},
        "search/trials.json",
    )
    mlflow.log_dict(
        {
            "data_version": data_version,
            "seed": seed,
            "family": best.family,
            "params": best.params,
            "git_commit": lineage["git_commit"],
            "trigger_evidence": tracking.portable(request.evidence or {}, paths),
            "config": tracking.portable(cfg.model_dump(mode="json"), paths),
        },
        LINEAGE_ARTIFACT,
    )
    mlflow.log_input(_dataset(fit_frame, "training", data_version, spec.target), context="training")
    mlflow.log_input(_dataset(holdout, "holdout", digest, spec.target), context="holdout")
    mlflow.log_figure(tracking.pr_curve_figure(y_ho, ho_scores, "holdout PR curve"), "plots/pr_curve.png")
    mlflow.log_figure(
        tracking.calibration_figure(y_ho, ho_scores, "holdout calibration"), "plots/calibration.png"
    )
    names, importances = _feature_importances(model)
    mlflow.log_figure(
        tracking.importance_figure(names, importances, f"{best.family} feature importance"),
        "plots/feature_importance.png",
    )
    info = log_model(model, spec, X_fit.head(5), point.threshold, cfg.contract.decisions)
    mv = mlflow.register_model(info.model_uri, spec.name, tags=tags)
    version = str(mv.version)
    mc.set_registered_model_alias(spec.name, tracking.CHALLENGER, version)
    mc.set_tag(run_id, "registered_version", version)
    mc.update_model_version(
        spec.name,
        version,
        description=(
            f"{best.family} trained on data version {data_version} "
            f"({tags['training_window_start']}..{tags['training_window_end']}), "
            f"reason: {tracking.portable(request.reason, paths)}; "
            f"windows: {splits.method_detail}; decision threshold {point.threshold:.4g} ({point.rule})"
        ),
    )
    log.info("registered %s version %s as challenger (run %s)", spec.name, version, run_id)
    return TrainResult(
        model_name=spec.name,
        version=version,
        run_id=run_id,
        model_uri=tracking.model_uri(spec.name, version=version),
        data_version=data_version,
        holdout_hash=digest,
        family=best.family,
        params=best.params,
        validation_metrics=best.validation_metrics,
        holdout_metrics=holdout_metrics,
        idempotency_key=key,
        decision_threshold=point.threshold,
        training_method=splits.method,
    )
