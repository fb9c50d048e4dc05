"""Retrain a registered model version from its lineage and check its holdout metrics come back.

A version's training run records what it was trained from (`train.LINEAGE_ARTIFACT`): the data
version (a DVC md5), the seed, the chosen candidate family and hyperparameters, the git commit, the
trigger evidence (it decides drift-anchored windows) and the resolved config. `reproduce_version`
restores the data version, cuts the same windows, refits the chosen candidate with the same seed,
scores the holdout and compares the metrics with the ones the run logged, within an absolute
tolerance. Runs logged before that artifact existed fall back to the run's params and tags and the
current config (the result says so).

Nothing published or promoted is touched: no model version is registered and no alias moves. The
retrain is logged as a run of experiment `closedloop/<model>/reproductions`, tagged with the version
it reproduces.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from training.config import Config, parse_config
from training.data import datasets
from training.errors import ClosedloopError
from training.model import distributed_fit, metrics, tracking, train
from training.paths import StatePaths
from training.storage import versioning

#: Default absolute tolerance on each compared holdout metric.
DEFAULT_TOLERANCE = 1e-6
#: The holdout metrics the verdict compares (besides the model's primary metric).
VERDICT_METRICS = ("roc_auc",)
EXPERIMENT_SUFFIX = "reproductions"
REPRODUCES_TAG = "reproduction_of_version"


class LineageIncomplete(ClosedloopError, LookupError):
    """The version cannot be retrained: part of its lineage is missing; the message names it and the fix."""

    exit_code = 2


@dataclass(frozen=True)
class Reproduction:
    model_name: str
    version: str
    original_run_id: str
    reproduction_run_id: str
    data_version: str
    seed: int
    family: str
    params: dict[str, Any]
    config_source: str
    git_commit_recorded: str
    git_commit_now: str
    holdout_hash_recorded: str
    holdout_hash_now: str
    tolerance: float
    compared_metrics: list[str]
    recorded_metrics: dict[str, float]
    reproduced_metrics: dict[str, float]
    differences: dict[str, float]
    reproduced: bool
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _recorded_params(run: Any, family: str) -> dict[str, Any]:
    """Hyperparameters from the run's `hp_*` params (strings), typed by the family's search space."""
    space = train.SEARCH_SPACES.get(family, {})
    params: dict[str, Any] = {}
    for key, text in run.data.params.items():
        if not key.startswith("hp_"):
            continue
        name = key[len("hp_") :]
        typed = [v for v in space.get(name, []) if str(v) == text]
        params[name] = typed[0] if typed else json.loads(text)
    return params


def _lineage(mc: Any, cfg: Config, version: str) -> tuple[Any, Any, dict[str, Any], str]:
    """The version, its run, what it was trained from and where the config came from."""
    from mlflow.artifacts import load_dict
    from mlflow.exceptions import MlflowException

    try:
        mv = tracking.get_version(mc, cfg.model.name, version)
    except tracking.ModelNotFound as exc:
        raise LineageIncomplete(str(exc)) from None
    try:
        run = mc.get_run(mv.run_id)
    except MlflowException:
        raise LineageIncomplete(
            f"version {version} of {cfg.model.name!r} points at run {mv.run_id}, which MLflow no longer has"
        ) from None
    if train.LINEAGE_ARTIFACT.split("/")[-1] in {
        f.path.split("/")[-1] for f in mc.list_artifacts(mv.run_id, train.LINEAGE_ARTIFACT.rsplit("/", 1)[0])
    }:
        recorded = load_dict(tracking.run_artifact_uri(mv.run_id, train.LINEAGE_ARTIFACT))
        where = f"run {mv.run_id} artifact {train.LINEAGE_ARTIFACT}"
        return mv, run, recorded | {"_config": parse_config(recorded["config"], where)}, f"recorded with the run ({where})"
    # an older run: its params and tags, the current config
    missing = [p for p in ("family", "seed") if p not in run.data.params]
    if mv.tags.get("data_version", tracking.UNKNOWN) == tracking.UNKNOWN:
        missing.append("a data_version tag")
    if missing:
        raise LineageIncomplete(
            f"version {version} of {cfg.model.name!r} (run {mv.run_id}) has no {train.LINEAGE_ARTIFACT} and "
            f"lacks {', '.join(missing)}: it was not trained by `train_model`, so it cannot be reproduced"
        )
    evidence_tag = mv.tags.get("trigger_evidence", tracking.UNKNOWN)
    try:
        evidence = {} if evidence_tag == tracking.UNKNOWN else json.loads(evidence_tag)
    except json.JSONDecodeError:
        raise LineageIncomplete(
            f"version {version}'s trigger_evidence tag is not whole JSON (truncated at {tracking.TAG_VALUE_MAX} "
            "characters?), and the run has no lineage artifact: its training windows cannot be re-cut"
        ) from None
    family = run.data.params["family"]
    recorded = {
        "data_version": mv.tags["data_version"],
        "seed": int(run.data.params["seed"]),
        "family": family,
        "params": _recorded_params(run, family),
        "git_commit": mv.tags.get("git_commit", tracking.UNKNOWN),
        "trigger_evidence": evidence,
    }
    return mv, run, recorded | {"_config": cfg}, "the current config (the run recorded none)"


def reproduce_version(
    paths: StatePaths, cfg: Config, version: str, tolerance: float = DEFAULT_TOLERANCE
) -> Reproduction:
    """Retrain `version` from its lineage; `reproduced` when every compared holdout metric is within `tolerance`."""
    import mlflow

    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    mc = tracking.client(paths)
    mv, run, recorded, config_source = _lineage(mc, cfg, str(version))
    rcfg: Config = recorded["_config"]
    spec = rcfg.model
    data_version = str(recorded["data_version"])
    try:
        versioning.open_version(paths, data_version)
    except versioning.DataVersionNotFound as exc:
        raise LineageIncomplete(f"version {version} of {spec.name!r} was trained on {exc}") from None
    seed, family, params = int(recorded["seed"]), str(recorded["family"]), dict(recorded["params"])
    names = list(dict.fromkeys([spec.primary_metric, *VERDICT_METRICS]))
    logged = {k[len("holdout_") :]: v for k, v in run.data.metrics.items() if k.startswith("holdout_")}
    absent = [n for n in names if n not in logged]
    if absent:
        raise LineageIncomplete(
            f"run {mv.run_id} of version {version} logged no holdout metric {absent}: nothing to compare against"
        )

    splits = datasets.training_frames(paths, rcfg, data_version, evidence=recorded.get("trigger_evidence") or {}, seed=seed)
    splits, _ = train.bound_train(rcfg, splits, seed)  # the same down-sampled train split as the run
    digest, holdout = datasets.freeze_holdout(paths, splits.holdout, spec.id_column)
    fit_frame, fit_weight = train.fit_rows(splits)
    with distributed_fit.engine_client(rcfg.training):  # the recorded engine (local by default)
        final = train.fit_final(rcfg, family, params, fit_frame, seed, fit_weight)
    y_ho = holdout[spec.target].astype(int).to_numpy()
    now = metrics.compute_metrics(y_ho, tracking.score(final.model, datasets.prepare_features(holdout, spec)), spec)

    differences = {n: float(now[n]) - float(logged[n]) for n in names}
    hash_recorded = mv.tags.get("holdout_hash", tracking.UNKNOWN)
    within = all(abs(d) <= tolerance for d in differences.values())
    same_holdout = hash_recorded in (digest, tracking.UNKNOWN)
    reproduced = within and same_holdout
    worst = max(names, key=lambda n: abs(differences[n]))
    verdict = (
        f"reproduced: {', '.join(names)} within {tolerance:g} of the recorded values"
        if reproduced
        else (
            f"not reproduced: holdout {digest} differs from the recorded {hash_recorded}"
            if not same_holdout
            else f"not reproduced: {worst} differs by {differences[worst]:.3g} (tolerance {tolerance:g})"
        )
    )

    exp_id = tracking.ensure_experiment(paths, rcfg, EXPERIMENT_SUFFIX)
    tags = {
        REPRODUCES_TAG: str(mv.version),
        "reproduction_of_run": mv.run_id,
        "data_version": data_version,
        "reproduced": str(reproduced).lower(),
        "git_commit": tracking.git_commit(),
        "git_commit_recorded": str(recorded.get("git_commit") or tracking.UNKNOWN),
    }
    with mlflow.start_run(experiment_id=exp_id, run_name=f"reproduce-v{mv.version}", tags=tags) as repro:
        mlflow.log_params({"family": family, "seed": seed, "tolerance": tolerance,
                           **{f"hp_{k}": v for k, v in params.items()}})
        mlflow.log_metrics({f"holdout_{k}": v for k, v in now.items()})
        mlflow.log_metrics({f"diff_{k}": v for k, v in differences.items()})
    return Reproduction(
        model_name=spec.name,
        version=str(mv.version),
        original_run_id=mv.run_id,
        reproduction_run_id=repro.info.run_id,
        data_version=data_version,
        seed=seed,
        family=family,
        params=params,
        config_source=config_source,
        git_commit_recorded=str(recorded.get("git_commit") or tracking.UNKNOWN),
        git_commit_now=tags["git_commit"],
        holdout_hash_recorded=hash_recorded,
        holdout_hash_now=digest,
        tolerance=tolerance,
        compared_metrics=names,
        recorded_metrics={n: float(logged[n]) for n in names},
        reproduced_metrics={n: float(now[n]) for n in names},
        differences=differences,
        reproduced=reproduced,
        verdict=verdict,
    )
