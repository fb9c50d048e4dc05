"""How long the paired bootstrap takes at production holdout size (a printed figure, not a test).

    .venv/bin/python benchmarks/bootstrap_speed.py [--rows 20000] [--replicates 500]

Prints the time of `training.model.metrics.paired_bootstrap_diff` for both rank metrics and, for scale,
a naive loop that re-sorts each resample inside sklearn (timed on a few replicates, extrapolated).
Target: < 3 s for 500 replicates on 20k rows.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import average_precision_score

from training.model.metrics import paired_bootstrap_diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--replicates", type=int, default=500)
    parser.add_argument("--fraud-rate", type=float, default=0.01)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    z = rng.normal(size=args.rows)
    logit = np.log(args.fraud_rate / (1 - args.fraud_rate)) - 4.5 + 3 * z
    y = (rng.random(args.rows) < 1 / (1 + np.exp(-logit))).astype(int)
    a = 1 / (1 + np.exp(-logit))
    b = 1 / (1 + np.exp(-(logit + 3 * 0.6 * rng.normal(size=args.rows))))
    print(f"rows={args.rows} positives={int(y.sum())} replicates={args.replicates}")

    for metric in ("pr_auc", "roc_auc"):
        paired_bootstrap_diff(y, a, b, metric, 10, 0.95, seed=0)  # warm-up
        t0 = time.perf_counter()
        r = paired_bootstrap_diff(y, a, b, metric, args.replicates, 0.95, seed=0)
        dt = time.perf_counter() - t0
        print(f"{metric}: {dt:.2f} s  (diff {r.observed_diff:+.4f}, 95% CI {r.lower:+.4f} .. {r.upper:+.4f})")

    k = 20
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    t0 = time.perf_counter()
    for _ in range(k):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        average_precision_score(y[idx], a[idx]) - average_precision_score(y[idx], b[idx])
    naive = (time.perf_counter() - t0) / k * args.replicates
    print(f"naive sklearn loop (extrapolated from {k} replicates): {naive:.2f} s")


if __name__ == "__main__":
    main()
