"""XGBoost fitted on a Dask cluster (`training.engine: dask`): the fit past one machine's CPU.

The train flow is unchanged: `train.build_pipeline` puts a `DaskFittedXGBClassifier` where the local
engine puts an `XGBClassifier`, and only its `fit` differs - it hands the preprocessed rows, labels,
sample weights and the same parameters (`scale_pos_weight` included) to `xgboost.dask` on the client
`engine_client` made current, which splits them over the cluster's workers. The booster it returns is
loaded into the estimator itself, so predictions run in-process like the local engine's, and
`local_model` swaps every such estimator of a fitted model for a plain `XGBClassifier`: the logged
model is the local engine's kind and serving never imports Dask.

The rows are still read and one-hot encoded in the training process (the pod); what the cluster
takes is the fit's memory (DMatrix, histograms, gradients) and its CPU.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from training.config import TrainingSpec
from training.errors import ClosedloopError


class DistributedFitError(ClosedloopError, RuntimeError):
    """The Dask engine cannot fit: no cluster to fit on; the message says which setting to fix."""


class DaskFittedXGBClassifier(XGBClassifier):
    """An `XGBClassifier` whose `fit` runs `xgboost.dask` on the current Dask client; predicts in-process."""

    def fit(self, X: Any, y: Any, *, sample_weight: Any = None) -> DaskFittedXGBClassifier:  # type: ignore[override]
        import dask.array as da
        import distributed
        from xgboost.dask import DaskXGBClassifier

        try:
            client = distributed.get_client()
        except ValueError:
            raise DistributedFitError(
                "training.engine is dask but no Dask client is open: fit inside "
                "`distributed_fit.engine_client(cfg.training)`"
            ) from None
        rows = math.ceil(X.shape[0] / max(1, len(client.scheduler_info()["workers"])))  # a block per worker

        def scattered(values: Any) -> Any:
            """`values` sent to the workers in row blocks (not through the scheduler), as one dask array.

            A sparse one-hot matrix stays sparse: XGBoost reads its absent cells as missing, as the
            local fit (and every later prediction) does."""
            blocks = [values[i : i + rows] for i in range(0, values.shape[0], rows)]
            futures = client.scatter(blocks, hash=False)
            return da.concatenate(
                [da.from_delayed(f, shape=b.shape, dtype=b.dtype, meta=b[:0]) for f, b in zip(futures, blocks, strict=True)]
            )

        fitted = DaskXGBClassifier(**self.get_params())
        fitted.client = client
        weight = None if sample_weight is None else scattered(np.asarray(sample_weight, dtype="float64"))
        fitted.fit(scattered(X), scattered(np.asarray(y)), sample_weight=weight)
        _copy_booster(fitted, self)
        return self


def _copy_booster(source: XGBClassifier, target: XGBClassifier) -> None:
    """`source`'s fitted booster with its sklearn metadata (classes) loaded into `target`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.json"
        source.save_model(path)
        target.load_model(path)


def _plain(clf: Any) -> Any:
    """`clf` as a plain `XGBClassifier` with the same parameters and booster (others unchanged)."""
    if not isinstance(clf, DaskFittedXGBClassifier):
        return clf
    plain = XGBClassifier(**clf.get_params())
    if hasattr(clf, "_Booster"):  # fitted
        _copy_booster(clf, plain)
    return plain


def _plain_pipeline(pipe: Pipeline) -> Pipeline:
    name, clf = pipe.steps[-1]
    pipe.steps[-1] = (name, _plain(clf))
    return pipe


def local_model(model: Any) -> Any:
    """A fitted pipeline or calibrated ensemble with its Dask-fitted classifiers made plain, in place."""
    if isinstance(model, CalibratedClassifierCV):
        model.estimator = _plain_pipeline(model.estimator)
        for fold in model.calibrated_classifiers_:
            fold.estimator = _plain_pipeline(fold.estimator)
        return model
    return _plain_pipeline(model)


@contextlib.contextmanager
def engine_client(spec: TrainingSpec) -> Iterator[dict[str, Any]]:
    """Open the training engine for the fits inside; yields what to log about it (MLflow params).

    `dask`: a client of the cluster at `dask_scheduler`, or of a `dask_local_workers`-thread cluster
    started in this process when that is null, current until the block ends. `local`: nothing to open.
    """
    if spec.engine == "local":
        yield {"training_engine": "local"}
        return
    import distributed

    with contextlib.ExitStack() as stack:
        if spec.dask_scheduler is None:
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=spec.dask_local_workers, threads_per_worker=1, processes=False, dashboard_address=None
                )
            )
            address = cluster.scheduler_address
        else:
            address = spec.dask_scheduler
        try:
            client = stack.enter_context(distributed.Client(address, timeout="30s"))
            client.wait_for_workers(1, timeout=60)
        except OSError as exc:  # connection refused or timed out, or no worker within the minute
            raise DistributedFitError(
                f"training.dask_scheduler {address}: no Dask scheduler with a worker there ({exc}); start the "
                "cluster, fix the address, or set it to null for a cluster in this process"
            ) from None
        workers = client.scheduler_info()["workers"]
        yield {"training_engine": "dask", "dask_scheduler": address, "dask_workers": len(workers)}
