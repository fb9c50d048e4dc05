"""Peak memory of the final fit with and without `training.max_train_rows` (issue 18).

Builds a synthetic train split of `--rows` rows (the project's features, `--fraud-rate` positives),
optionally down-samples it to `--bound` rows (`train.bound_train`, the train flow's one place), and
fits train_model's final model on it (`train.fit_final`: xgboost, cross-fitted sigmoid calibration).
Run it once per setting under /usr/bin/time -v, which reports the peak RSS of the process:

    /usr/bin/time -v .venv/bin/python benchmarks/bounded_fit.py --rows 1000000 --bound 0
    /usr/bin/time -v .venv/bin/python benchmarks/bounded_fit.py --rows 1000000 --bound 200000

The split is built in memory in both runs (the read itself is not bounded by this setting).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import time

import numpy as np
import pandas as pd

from training.config import load_config, with_overrides
from training.data import datasets
from training.model import train

XGB_PARAMS = {"n_estimators": 60, "max_depth": 4, "learning_rate": 0.1, "min_child_weight": 1,
              "subsample": 1.0, "colsample_bytree": 1.0}


def synthetic_train(cfg, rows: int, fraud_rate: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    spec = cfg.model
    frame = {f: rng.normal(size=rows) for f in spec.numeric_features}
    for f in spec.categorical_features:
        frame[f] = rng.choice(["a", "b", "c", "d", "e"], size=rows)
    signal = frame[spec.numeric_features[0]] + rng.normal(scale=1.0, size=rows)
    frame[spec.target] = signal > np.quantile(signal, 1 - fraud_rate)
    frame[spec.id_column] = np.arange(rows)
    return pd.DataFrame(frame)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--bound", type=int, default=0, help="training.max_train_rows (0 = off)")
    ap.add_argument("--fraud-rate", type=float, default=0.02)
    args = ap.parse_args()
    cfg = load_config()
    cfg = with_overrides(cfg, training={"max_train_rows": args.bound or None})
    df = synthetic_train(cfg, args.rows, args.fraud_rate, seed=0)
    day = dt.date(2026, 1, 1)
    splits = datasets.Splits(df, df.iloc[:0], df.iloc[:0], (day, day), (day, day), (day, day))
    splits, sampled = train.bound_train(cfg, splits, cfg.training.seed)
    del df
    t0 = time.perf_counter()
    frame, weight = train.fit_rows(splits)
    splits = dataclasses.replace(splits, train=splits.train.iloc[:0])
    final = train.fit_final(cfg, "xgboost", XGB_PARAMS, frame, cfg.training.seed, weight)
    print(f"rows {args.rows} bound {args.bound or 'off'}: fitted on {len(frame)} rows"
          f"{f' (negative rate {sampled.rate:.4f})' if sampled else ''} in {time.perf_counter() - t0:.1f} s; "
          f"threshold {final.operating_point.threshold:.4f}")


if __name__ == "__main__":
    main()
