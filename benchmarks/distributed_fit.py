"""Final fit of one train split with `training.engine` local vs dask (issue 18, "past one machine").

Builds the synthetic split of `benchmarks/bounded_fit.py` (`--rows` rows, `--fraud-rate` positives),
fits train_model's final model on it (`train.fit_final`: xgboost, 3-fold cross-fitted sigmoid
calibration) in this process, then the same fit with `training.engine: dask` on a Dask cluster -
the one at `--scheduler`, a LocalCluster of `--workers` worker processes (`--processes`, over tcp),
or the engine's own in-process LocalCluster of `--workers` single-thread workers -
and prints both fit times, the holdout ROC-AUC of each on a second split of the same size and the
largest score difference between the two models:

    nice -n 19 .venv/bin/python benchmarks/distributed_fit.py --rows 200000

On one machine the cluster's workers share its cores with the process: this shows what the engine
costs, not what a cluster of machines gains.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.bounded_fit import XGB_PARAMS, synthetic_train
from training.config import load_config, with_overrides
from training.data import datasets
from training.model import distributed_fit, tracking, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--fraud-rate", type=float, default=0.02)
    ap.add_argument("--workers", type=int, default=2, help="workers of the in-process LocalCluster")
    ap.add_argument("--scheduler", default=None, help="a running Dask scheduler (tcp://host:8786)")
    ap.add_argument("--processes", action="store_true",
                    help="start a LocalCluster of --workers worker processes and fit on it over tcp")
    args = ap.parse_args()
    if args.processes:
        from distributed import LocalCluster

        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None) as c:
            args.scheduler = c.scheduler_address
            run(args)
    else:
        run(args)


def run(args: argparse.Namespace) -> None:
    base = with_overrides(load_config(), training={"candidates": ["xgboost"]},
                          gates={"recovery": {"baseline_family": "xgboost"}})
    frame = synthetic_train(base, args.rows, args.fraud_rate, seed=0)
    holdout = synthetic_train(base, args.rows, args.fraud_rate, seed=1)
    X_ho, y_ho = datasets.prepare_features(holdout, base.model), holdout[base.model.target].astype(int)
    scores = {}
    for engine in ("local", "dask"):
        cfg = with_overrides(base, training={"engine": engine, "dask_scheduler": args.scheduler if engine == "dask" else None,
                                             "dask_local_workers": args.workers})
        with distributed_fit.engine_client(cfg.training) as info:
            t0 = time.perf_counter()
            final = train.fit_final(cfg, "xgboost", XGB_PARAMS, frame, cfg.training.seed)
            took = time.perf_counter() - t0
        scores[engine] = np.asarray(tracking.score(final.model, X_ho))
        print(f"{engine:5s} {info}: fitted {len(frame)} rows in {took:.1f} s; holdout ROC-AUC "
              f"{roc_auc_score(y_ho, scores[engine]):.4f}, threshold {final.operating_point.threshold:.4f}")
    print(f"largest score difference dask vs local: {np.abs(scores['dask'] - scores['local']).max():.4f}")


if __name__ == "__main__":
    main()
