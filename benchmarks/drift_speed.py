"""How long the drift monitor takes for one window at production volume (default 200k rows).

Why: the monitor runs after every batch; Evidently renders a plot per column while it computes, so
its cost is not obvious from the row count. Times `drift.data_drift` (every model feature plus the
score, one Evidently report), the HTML export and `drift.matured_performance` (metrics + bootstrap
bound) on synthetic frames with the model's feature columns. Exits non-zero above the budget.

    .venv/bin/python benchmarks/drift_speed.py [--rows 200000] [--reference-rows 200000] [--budget-s 30]

Measured on the 2-core dev machine (load average ~4 from other jobs), 200k vs 200k rows, 11
monitored features + score: drift 2.5 s, HTML 0.06 s (4 MB), performance 1.0 s, 3.6 s per window;
`import evidently` alone takes ~13 s once per process.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from training.config import Config, load_config
from training.monitoring import drift


def synthetic(cfg: Config, n: int, seed: int, amount_factor: float = 1.0) -> pd.DataFrame:
    """Rows with every configured feature: lognormal amounts, counts, flags, two categoricals."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.2, 1.0, n) * amount_factor
    data: dict[str, object] = {}
    for name in cfg.model.numeric_features:
        data[name] = rng.normal(0.0, 1.0, n)
    data.update(
        amount=amount,
        log_amount=np.log1p(amount),
        hour_of_day=rng.integers(0, 24, n),
        is_weekend=(rng.random(n) < 2 / 7).astype(int),
        tx_count_1h=rng.poisson(0.3, n),
        tx_count_24h=rng.poisson(3.0, n),
        is_new_country=(rng.random(n) < 0.05).astype(int),
        is_new_device=(rng.random(n) < 0.06).astype(int),
    )
    categories = np.array(["grocery", "electronics", "travel", "gaming", "jewelry", "fuel"], dtype=object)
    for name in cfg.model.categorical_features:
        data[name] = rng.choice(categories, n)
    frame = pd.DataFrame({k: v for k, v in data.items() if k in cfg.model.features})
    frame["is_fraud"] = (rng.random(n) < 0.015).astype(int)
    frame["score"] = np.clip(rng.beta(0.5, 12.0, n) + 0.3 * frame["is_fraud"], 0, 1)
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows in the monitored window")
    parser.add_argument("--reference-rows", type=int, default=200_000)
    parser.add_argument("--budget-s", type=float, default=30.0, help="fail above this for one window")
    args = parser.parse_args(argv)
    cfg = load_config()

    t0 = time.perf_counter()
    import evidently  # noqa: F401  (import cost reported separately: paid once per worker process)

    t_import = time.perf_counter() - t0
    reference = synthetic(cfg, args.reference_rows, seed=1)
    current = synthetic(cfg, args.rows, seed=2, amount_factor=1.3)

    t1 = time.perf_counter()
    result = drift.data_drift(
        reference, current, cfg, reference_scores=reference["score"], current_scores=current["score"]
    )
    t_drift = time.perf_counter() - t1

    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        html = drift.save_report(result.snapshot, Path(tmp) / "report.html")
        html_mb = html.stat().st_size / 1e6
    t_html = time.perf_counter() - t2

    t3 = time.perf_counter()
    perf = drift.matured_performance(current["is_fraud"], current["score"], cfg)
    t_perf = time.perf_counter() - t3
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    n_cols = len(result.features) + 1
    print(f"window {args.rows:,} rows vs reference {args.reference_rows:,} rows, {n_cols} columns")
    print(f"  import evidently      {t_import:6.2f} s  (once per process)")
    print(f"  data + score drift    {t_drift:6.2f} s  drifted: {', '.join(result.drifted_features) or '-'}")
    print(f"  HTML report           {t_html:6.2f} s  ({html_mb:.1f} MB)")
    print(
        f"  matured performance   {t_perf:6.2f} s  pr_auc {perf['pr_auc']:.3f} "
        f"(upper {perf['pr_auc_upper']:.3f}, {cfg.drift.performance_bootstrap} replicates)"
    )
    print(f"  peak RSS              {rss_mb:6.0f} MB")
    total = t_drift + t_html + t_perf
    print(f"  total per window      {total:6.2f} s  (budget {args.budget_s:.0f} s)")
    return 0 if total <= args.budget_s else 1


if __name__ == "__main__":
    sys.exit(main())
