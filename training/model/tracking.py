"""MLflow plumbing shared by train, evaluate, registry and inference.

Where MLflow is: `MLFLOW_TRACKING_URI` when set (a tracking server, e.g. `mlflow server
--serve-artifacts` on the services profile), else the state directory's SQLite store (embedded
profile). `tracking_uri(paths)` is the one place that decides, from `settings()` at call time. MLflow keeps its
URI in process-global state, so every entry point calls `client(paths)` first (never at import
time): it points MLflow there and returns a client bound to it.

Nothing written into MLflow names a machine's files: links to run artifacts are `runs:/<run_id>/...`
URIs (`run_artifact_uri`) and paths under the state directory are stored relative to it
(`portable`), so a state directory or a server can move.

Also here: the lineage tag set of the contract, model look-ups by alias and by tag, and the figures
logged with each run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.figure import Figure

from training.config import PROJECT_ROOT, Config
from training.contract import Decisions
from training.errors import ClosedloopError
from training.paths import StatePaths
from training.settings import REGISTRY_URI_ENV_VAR, TRACKING_URI_ENV_VAR, settings

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"
TAG_VALUE_MAX = 4000
UNKNOWN = "unknown"

#: MLflow's experiment-type tag and the value for a classic (non-GenAI) model: what the experiment
#: header shows and keeps (unset, the UI infers a kind and writes its guess into the tag).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: The MLflow UI (3.x) opens GenAI pages (Traces, Assistant, no Model registry in the sidebar) unless
#: told otherwise: since 3.1x its sidebar switch "GenAI | Model training", kept per browser and
#: defaulting to GenAI, decides the view, not the experiment's tag; this query parameter overrides
#: it. Every UI route this module builds carries it.
UI_CLASSIC_VIEW = "workflowType=machine_learning"

#: Tags carried by the training run AND the registered model version (docs/contracts.md).
LINEAGE_TAGS: tuple[str, ...] = (
    "data_version",
    "dbt_invocation_id",
    "gx_run_id",
    "gx_success",
    "git_commit",
    "airflow_dag_id",
    "airflow_run_id",
    "trigger_reason",
    "trigger_evidence",
    "holdout_hash",
    "training_window_start",
    "training_window_end",
    "seed",
)
IDEMPOTENCY_TAG = "idempotency_key"

#: XGBoost types a skops-serialised pipeline may load (skops refuses unknown types by default).
SKOPS_TRUSTED_TYPES = ["numpy.dtype", "xgboost.core.Booster", "xgboost.sklearn.XGBClassifier"]


class ModelNotFound(ClosedloopError, LookupError):
    """No registered model version answers the requested name / alias / version."""


#: URI schemes with which the library writes MLflow's store itself (no server to place artifacts).
DIRECT_STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "file")


def tracking_uri(paths: StatePaths) -> str:
    """`$MLFLOW_TRACKING_URI` if set, else the state directory's SQLite store (the embedded default)."""
    return settings().mlflow_tracking_uri or paths.mlflow_tracking_uri


def registry_uri(paths: StatePaths) -> str:
    """`$MLFLOW_REGISTRY_URI` if set, else the tracking URI (MLflow's own rule)."""
    return settings().mlflow_registry_uri or tracking_uri(paths)


def is_direct_store(uri: str) -> bool:
    """True when the URI is a database / file store the library writes itself, False for a server."""
    scheme = urlparse(uri).scheme.split("+", 1)[0].lower()
    return scheme in DIRECT_STORE_SCHEMES or (scheme == "" and uri.startswith(("/", ".", "~")))


def client(paths: StatePaths):  # -> mlflow.MlflowClient (mlflow is imported lazily: it is slow)
    """Point MLflow (fluent API and registry) at `tracking_uri(paths)`; return a client bound to it.

    `mlflow.set_tracking_uri` also exports `MLFLOW_TRACKING_URI` to the environment (for its
    subprocesses); the environment is restored afterwards, so it keeps saying only what the user
    configured and a later call for another state directory is not misled by a stale value.
    """
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no internet here; don't try
    uri, reg = tracking_uri(paths), registry_uri(paths)
    if uri == paths.mlflow_tracking_uri:
        paths.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
        paths.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    before = {k: os.environ.get(k) for k in (TRACKING_URI_ENV_VAR, REGISTRY_URI_ENV_VAR)}
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(reg)
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=reg)


def experiment_name(cfg: Config) -> str:
    return f"closedloop/{cfg.model.name}"


def artifact_location(paths: StatePaths, folder: str) -> str | None:
    """The artifact root for a new experiment: a folder under `StatePaths.mlflow_artifacts` when the
    library writes the store itself; None on a tracking server, which decides (with
    `--serve-artifacts`: `mlflow-artifacts:/...`, proxied), so artifacts land on the server."""
    if not is_direct_store(tracking_uri(paths)):
        return None
    return (paths.mlflow_artifacts / folder).as_uri()


def ensure_experiment(paths: StatePaths, cfg: Config, suffix: str = "") -> str:
    """The id of experiment `closedloop/<model>[/<suffix>]`, created if missing (see `artifact_location`),
    tagged as a classic model's experiment (`EXPERIMENT_KIND`; an existing one is re-tagged)."""
    from mlflow.exceptions import MlflowException

    mc = client(paths)
    name = experiment_name(cfg) + (f"/{suffix}" if suffix else "")
    exp = mc.get_experiment_by_name(name)
    if exp is None:
        location = artifact_location(paths, suffix or cfg.model.name)
        try:
            return str(
                mc.create_experiment(
                    name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
                )
            )
        except MlflowException:  # created concurrently by another task
            exp = mc.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # older, or the UI's guess
        mc.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return str(exp.experiment_id)


def run_artifact_uri(run_id: str, artifact_path: str) -> str:
    """A portable link to one run artifact (`runs:/<run_id>/<path>`): valid wherever the run is,
    loadable with `mlflow.artifacts.load_text` / `download_artifacts` against any tracking URI."""
    return f"runs:/{run_id}/{artifact_path.lstrip('/')}"


def parse_run_artifact_uri(uri: str) -> tuple[str, str] | None:
    """`(run_id, artifact_path)` of a `runs:/` URI, None for any other form."""
    if not uri.startswith("runs:/"):
        return None
    run_id, _, path = uri[len("runs:/") :].lstrip("/").partition("/")
    return (run_id, path) if run_id and path else None


def ui_artifact_route(experiment_id: str, run_id: str, artifact_path: str) -> str:
    """The MLflow UI's route to one run artifact, relative to the UI (`#/experiments/...`), so it
    opens on whichever server shows the run - in the classic view (`UI_CLASSIC_VIEW`)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}/artifacts/{artifact_path.lstrip('/')}?{UI_CLASSIC_VIEW}"


def ui_experiment_route(experiment_id: str) -> str:
    """The MLflow UI's route to an experiment's runs, in the classic view (Runs, Models)."""
    return f"#/experiments/{experiment_id}/runs?{UI_CLASSIC_VIEW}"


def ui_model_route(name: str, version: str | int | None = None) -> str:
    """The MLflow UI's route to a registered model (or one version of it), in the classic view."""
    path = f"#/models/{name}" + (f"/versions/{version}" if version is not None else "")
    return f"{path}?{UI_CLASSIC_VIEW}"


def portable(value: Any, paths: StatePaths) -> Any:
    """`value` with the state directory's absolute path (plain or `file://`) made relative to it,
    in strings and recursively in dicts / lists: what goes into a tag must not name this machine's
    files. Read such a path back with `paths.root / relative`."""
    if isinstance(value, str):
        if value in (str(paths.root), paths.root.as_uri()):
            return "."
        for prefix in (paths.root.as_uri() + "/", str(paths.root) + os.sep):
            value = value.replace(prefix, "")
        return value
    if isinstance(value, Mapping):
        return {k: portable(v, paths) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v, paths) for v in value]
    return value


def git_commit() -> str:
    """The project's current commit, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or UNKNOWN
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN


def tag_value(value: Any) -> str:
    """A tag-safe string: None -> 'unknown', dicts/lists -> JSON, truncated to `TAG_VALUE_MAX`."""
    if value is None or value == "":
        return UNKNOWN
    if isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    if len(text) > TAG_VALUE_MAX:
        text = text[: TAG_VALUE_MAX - 14] + "...(truncated)"
    return text


def model_uri(name: str, *, version: str | int | None = None, alias: str | None = None) -> str:
    if (version is None) == (alias is None):
        raise ValueError("give exactly one of version or alias")
    return f"models:/{name}/{version}" if version is not None else f"models:/{name}@{alias}"


def alias_version(mc: Any, name: str, alias: str):  # -> ModelVersion | None
    """The version an alias points to, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return mc.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def get_version(mc: Any, name: str, version: str | int):  # -> ModelVersion
    from mlflow.exceptions import MlflowException

    try:
        return mc.get_model_version(name, str(version))
    except MlflowException:
        raise ModelNotFound(
            f"model {name!r} has no version {version}; list versions with `python -m training audit`"
        ) from None


def versions_with_tag(mc: Any, name: str, key: str, value: str) -> list:
    """Registered versions of `name` whose tag `key` equals `value`, oldest first."""
    safe = value.replace("'", "''")
    found = mc.search_model_versions(f"name = '{name}' and tags.{key} = '{safe}'")
    return sorted(found, key=lambda mv: int(mv.version))


def load_model(uri: str) -> Any:
    """The scikit-learn estimator behind a `models:/` URI (scores come from `predict_proba`).

    Versions are logged as `pyfunc_model.ThresholdedClassifier` (pyfunc output: score + decision)
    holding the estimator; versions logged before it are plain scikit-learn models.
    """
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import Model

    with quiet_skops():
        if "sklearn" in Model.load(uri).flavors:
            return mlflow.sklearn.load_model(uri)
        return mlflow.pyfunc.load_model(uri).unwrap_python_model().estimator


@contextlib.contextmanager
def quiet_skops() -> Iterator[None]:
    """Around MLflow's skops (de)serialisation: its first import probes every loaded module for
    scipy's ufuncs, and inside Airflow that touches Airflow's deprecated-alias modules - about 1,000
    warnings, seconds of logging per task."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"skops\.")
        yield


def input_signature(uri: str) -> list[dict[str, str]]:
    """The model's input schema as `[{name, type}]` (what the signature gate compares)."""
    from mlflow.models import get_model_info

    sig = get_model_info(uri).signature
    if sig is None or sig.inputs is None:
        return []
    return [{"name": str(c.get("name")), "type": str(c.get("type"))} for c in sig.inputs.to_dict()]


def model_size_mb(uri: str) -> float:
    """Size of the model's stored artifacts (as recorded by MLflow, else measured on disk)."""
    import mlflow.artifacts
    from mlflow.models import Model

    size = getattr(Model.load(uri), "model_size_bytes", None)
    if not size:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri)
        size = sum(f.stat().st_size for f in Path(local).rglob("*") if f.is_file())
    return float(size) / (1024 * 1024)


def score(model: Any, X: pd.DataFrame) -> np.ndarray:
    """Positive-class probabilities."""
    return np.asarray(model.predict_proba(X))[:, 1].astype("float64")


#: The decision words of `published.predictions` and of the registered model's pyfunc output.


def decisions(scores: npt.ArrayLike, threshold: float, words: Decisions) -> np.ndarray:
    """The contract's positive word where the score reaches the threshold, else its negative word."""
    return np.where(np.asarray(scores, dtype="float64") >= threshold, words.positive, words.negative)


# --- figures (matplotlib's object API: no pyplot, no global backend state) ---


def pr_curve_figure(y_true: npt.ArrayLike, scores: npt.ArrayLike, title: str) -> Figure:
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y_true, scores)
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.plot(recall, precision)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    fig.tight_layout()
    return fig


def calibration_figure(y_true: npt.ArrayLike, scores: npt.ArrayLike, title: str) -> Figure:
    from sklearn.calibration import calibration_curve

    frac_pos, mean_pred = calibration_curve(y_true, scores, n_bins=10, strategy="quantile")
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.plot(mean_pred, frac_pos, marker="o", label="model")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed positive rate")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def importance_figure(
    names: Sequence[str], importances: Sequence[float], title: str, top: int = 20
) -> Figure:
    order = np.argsort(np.abs(np.asarray(importances, dtype=float)))[::-1][:top][::-1]
    fig = Figure(figsize=(6, max(3.0, 0.28 * len(order) + 1)))
    ax = fig.subplots()
    ax.barh([names[i] for i in order], [importances[i] for i in order])
    ax.set_title(title)
    fig.tight_layout()
    return fig
