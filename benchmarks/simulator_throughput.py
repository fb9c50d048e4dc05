"""How fast the simulated source produces a day at production volume (default 1M transactions).

Why: the demo runs 20k/day, but the pipeline claims to handle 1M/day; the source must not be the
bottleneck. Prints seconds and peak memory per stage; exits non-zero when over the time budget.

    .venv/bin/python benchmarks/simulator_throughput.py [--rows 1000000] [--budget-s 20]
    .venv/bin/python benchmarks/simulator_throughput.py --rows 10000000 --customers 2000000 --budget-s 300
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import time
import tracemalloc

from examples.card_fraud.simulator import generate_chargebacks, generate_transactions, ground_truth
from training.config import load_config, with_overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="transactions per day")
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--merchants", type=int, default=5_000)
    parser.add_argument("--budget-s", type=float, default=20.0, help="fail above this for one day")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also trace Python allocations (several times slower; peak RSS is printed anyway)",
    )
    args = parser.parse_args(argv)

    cfg = with_overrides(
        load_config(),
        simulator={
            "transactions_per_day": args.rows,
            "n_customers": args.customers,
            "n_merchants": args.merchants,
        },
    )
    spec = cfg.simulator
    day = spec.start_date + dt.timedelta(days=spec.label_delay_days.max)

    if args.tracemalloc:
        tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    tx = generate_transactions(spec, day)
    t_tx, c_tx = time.perf_counter() - t0, time.process_time() - c0
    peak_tx = tracemalloc.get_traced_memory()[1] if args.tracemalloc else 0
    rss_tx_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t1 = time.perf_counter()
    cb = generate_chargebacks(spec, day)  # regenerates the earlier days it needs
    t_cb = time.perf_counter() - t1
    truth = ground_truth(spec, day)
    peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else 0
    if args.tracemalloc:
        tracemalloc.stop()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    frame_mb = tx.memory_usage(deep=True).sum() / 2**20
    print(f"day {day}: {len(tx):,} transactions, {int(truth['is_fraud'].sum()):,} frauds")
    print(f"generate_transactions: {t_tx:6.2f} s  ({len(tx) / t_tx:,.0f} rows/s), frame {frame_mb:,.0f} MiB")
    # CPU seconds too: on a shared machine wall time mostly measures the other jobs
    print(f"  CPU time:            {c_tx:6.2f} s  ({len(tx) / c_tx:,.0f} rows per CPU second)")
    print(
        f"generate_chargebacks:  {t_cb:6.2f} s  ({len(cb):,} chargebacks, "
        f"{spec.label_delay_days.max - spec.label_delay_days.min + 1} source days, fraud rows only)"
    )
    if args.tracemalloc:
        print(
            f"peak traced memory:    {peak_tx / 2**20:,.0f} MiB (transactions), {peak / 2**20:,.0f} MiB (all)"
        )
    print(f"peak RSS:              {rss_tx_mb:,.0f} MiB (after transactions), {rss_mb:,.0f} MiB (all)")
    if t_tx > args.budget_s:
        print(f"OVER BUDGET: {t_tx:.1f} s > {args.budget_s} s for one day", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
