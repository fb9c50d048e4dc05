"""`training.engine: dask`: the XGBoost fits run on a Dask cluster (a real `LocalCluster` here), the
rest of train_model is unchanged and the logged model is the local engine's kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from xgboost import XGBClassifier

from training.cli import main
from training.config import ConfigError, with_overrides
from training.data import datasets
from training.model import distributed_fit, metrics, tracking, train

pytestmark = pytest.mark.timeout(300)

#: Both engines train the same down-sampled split: the weights (1 / rate) reach every fit.
SHARED = {"candidates": ["xgboost"], "search_budget": 1, "max_train_rows": 6000}


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def data_version(module_state, training_frame, synth):
    return synth.publish(module_state, training_frame, "full")


def _cfg(train_cfg, **training):
    # the recovery baseline is fitted by the engine too: xgboost, the one family it fits
    return with_overrides(
        train_cfg, training={**SHARED, **training}, gates={"recovery": {"baseline_family": "xgboost"}}
    )


def test_dask_engine_refuses_what_it_cannot_fit(train_cfg):
    with pytest.raises(ConfigError, match="engine: dask fits XGBoost only"):
        with_overrides(train_cfg, training={"engine": "dask", "candidates": ["logistic_regression", "xgboost"]})
    with pytest.raises(ConfigError, match="baseline is logistic_regression"):
        with_overrides(train_cfg, training={"engine": "dask", "candidates": ["xgboost"]},
                       gates={"recovery": {"enabled": True, "relative_to": "baseline"}})
    with pytest.raises(ConfigError, match="dask_scheduler is set but training.engine is local"):
        with_overrides(train_cfg, training={"dask_scheduler": "tcp://scheduler:8786"})


def test_an_in_process_cluster_honours_weights_and_scale_pos_weight(train_cfg):
    """With no scheduler address the engine starts its own cluster; the fit keeps the local fit's
    sample weights and `scale_pos_weight` (mean score ~ the weighted local fit's, far from unweighted)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 6))
    y = (X[:, 0] + rng.normal(size=len(X)) > 2).astype(int)
    weight = np.where(y == 0, 10.0, 1.0)  # negatives down-sampled at rate 0.1
    params = {"n_estimators": 40, "max_depth": 3, "tree_method": "hist", "n_jobs": 1, "random_state": 7,
              "scale_pos_weight": 2.5}
    with distributed_fit.engine_client(_cfg(train_cfg, engine="dask").training) as engine:
        dask_fit = distributed_fit.DaskFittedXGBClassifier(**params).fit(X, y, sample_weight=weight)
    assert engine["training_engine"] == "dask" and engine["dask_scheduler"].startswith("inproc://")
    assert engine["dask_workers"] == 2
    objective = json.loads(dask_fit.get_booster().save_config())["learner"]["objective"]
    assert float(objective["reg_loss_param"]["scale_pos_weight"]) == 2.5
    local = XGBClassifier(**params).fit(X, y, sample_weight=weight).predict_proba(X)[:, 1].mean()
    unweighted = XGBClassifier(**params).fit(X, y).predict_proba(X)[:, 1].mean()
    dask_mean = dask_fit.predict_proba(X)[:, 1].mean()
    assert abs(dask_mean - local) < 0.1 * local < abs(unweighted - local), (dask_mean, local, unweighted)
    with pytest.raises(distributed_fit.DistributedFitError, match="no Dask client is open"):
        distributed_fit.DaskFittedXGBClassifier(**params).fit(X, y)


def test_train_cli_with_engine_dask_fits_on_the_cluster_like_the_local_engine(
    module_state, train_cfg, data_version, cluster, tmp_path
):
    import mlflow
    from distributed import Client, get_task_stream
    from distributed.utils import key_split

    dask_cfg = _cfg(train_cfg, engine="dask", dask_scheduler=cluster.scheduler_address)
    cfg_file, out = tmp_path / "closedloop.yaml", tmp_path / "result.json"
    cfg_file.write_text(yaml.safe_dump(dask_cfg.model_dump(mode="json")))
    with Client(cluster, set_as_default=False) as observer, get_task_stream(client=observer) as stream:
        code = main(["--home", str(module_state.root), "--config", str(cfg_file),
                     "train", "--idempotency-key", "engine-dask", "--xcom-json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())

    # the XGBoost fits ran as tasks on both workers of the cluster (xgboost.dask's per-worker `fn`)
    fit_workers = {t["worker"] for t in stream.data if key_split(t["key"]) == "fn"}
    assert fit_workers == set(cluster.scheduler_info["workers"])
    params = tracking.client(module_state).get_run(result["run_id"]).data.params
    assert params["training_engine"] == "dask" and params["dask_scheduler"] == cluster.scheduler_address
    assert params["dask_workers"] == "2" and float(params["train_negative_rate"]) < 1  # weighted rows

    # a normal pyfunc: skops loads only the trusted plain types (a Dask-fitted estimator would be refused)
    holdout = datasets.load_holdout(module_state, result["holdout_hash"], dask_cfg.model.id_column)
    X, y = datasets.prepare_features(holdout, dask_cfg.model), holdout[dask_cfg.model.target].astype(int).to_numpy()
    served = mlflow.pyfunc.load_model(result["model_uri"]).predict(X)["score"].to_numpy()
    np.testing.assert_allclose(served, tracking.score(tracking.load_model(result["model_uri"]), X), atol=1e-12)
    assert metrics.compute_metrics(y, served, dask_cfg.model)["roc_auc"] == pytest.approx(
        result["holdout_metrics"]["roc_auc"], abs=1e-9
    )

    # the local engine's final fit of the same candidate on the same (down-sampled) rows: as good a model
    local_cfg, seed = _cfg(train_cfg), train_cfg.training.seed
    splits, _ = train.bound_train(
        local_cfg, datasets.training_frames(module_state, local_cfg, data_version, seed=seed), seed
    )
    frame, weight = train.fit_rows(splits)
    local = train.fit_final(local_cfg, "xgboost", result["params"], frame, seed, weight)
    local_metrics = metrics.compute_metrics(y, tracking.score(local.model, X), local_cfg.model)
    assert result["holdout_metrics"]["roc_auc"] == pytest.approx(local_metrics["roc_auc"], abs=0.02)
    assert result["holdout_metrics"]["pr_auc"] == pytest.approx(local_metrics["pr_auc"], abs=0.05)
    assert result["decision_threshold"] == pytest.approx(local.operating_point.threshold, abs=0.1)
