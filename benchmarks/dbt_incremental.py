"""dbt build wall time at day 5 and day 30, incremental vs full rebuild (issue 18, "Incremental marts").

Why: the marts used to be full `table` rebuilds, so a day's dbt cost grew with the days of history
behind it. With the incremental marts a day reads its own rows plus bounded per-entity state, so
day 30 should cost about what day 5 costs. This simulates `--rows` transactions a day (the card
example's simulator), loads them into a DuckDB warehouse the way ingest does, and times
`dbt run --select +ml_transaction_features` (the feature marts and their state):

* incremental: `rebuild_from` = the day, as the data pipeline passes it;
* full: `--full-refresh` over the same history.

Days 1..4 (and 6..29) are built in one untimed run each; the state they leave is what the next day's
incremental run reads (a full build fills the state models too).

    .venv/bin/python benchmarks/dbt_incremental.py [--rows 20000] [--state /tmp/dbt-incr]

Measured in one run (shared 2-core box under load 12+, December 2026; about 7 minutes):

                  wall d5 wall d30  30/5  CPU d5 CPU d30  30/5
    incremental      25.8     20.7  0.80     8.8     8.3  0.95
    full             35.4     45.4  1.28    11.6    16.4  1.42

Per model (execution seconds, incremental d5/d30 vs full d5/d30): int_customer_behaviour_features
0.74/0.77 vs 2.07/6.67, ml_transaction_features 0.43/0.50 vs 1.87/6.00. Most of an incremental
run's ~8 CPU s is dbt's own start-up and parsing (the models add up to about 4 s).

`--build --rows 5000` (the whole `dbt build`, data tests included; load 14-18, `nice -n 19`), CPU s
of the dbt process, day 5 / day 30: incremental 13.4 / 14.5 (1.09x), full 13.6 / 17.1 (1.26x);
before ml_training_set and int_transaction_labels were incremental and the data tests day-scoped,
incremental 13.1 / 15.0 (1.15x).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb  # noqa: E402

from examples.card_fraud import simulator  # noqa: E402
from tests.dbt.conftest import load_raw_batch  # noqa: E402
from training.config import load_config, with_overrides  # noqa: E402
from training.data.dbt import run_dbt  # noqa: E402
from training.paths import StatePaths  # noqa: E402

SELECT = ["--select", "+ml_transaction_features"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20_000, help="transactions per simulated day")
    ap.add_argument("--state", type=Path, default=Path("/tmp/closedloop-dbt-incremental"))
    ap.add_argument("--build", action="store_true",
                    help="time `dbt build` of the whole project (every model and data test, unit tests off as in "
                         "production) instead of `dbt run` of the feature marts")
    ns = ap.parse_args()
    command, select = (["build"], []) if ns.build else (["run"], SELECT)
    if ns.build:
        os.environ["CLOSEDLOOP_DBT_UNIT_TESTS"] = "false"
    cfg = with_overrides(load_config(), simulator={"transactions_per_day": ns.rows})
    paths = StatePaths(ns.state).ensure()
    paths.warehouse.unlink(missing_ok=True)
    days = [cfg.simulator.start_date + dt.timedelta(days=i) for i in range(30)]

    def load(span: list[dt.date]) -> None:
        with duckdb.connect(str(paths.warehouse)) as con:
            for day in span:
                load_raw_batch(con, "transactions", simulator.generate_transactions(cfg.simulator, day), day)
                load_raw_batch(con, "chargebacks", simulator.generate_chargebacks(cfg.simulator, day), day)

    def dbt(*args: str, day: dt.date | None = None, timed: bool = True) -> tuple[float, float, dict[str, float]]:
        """Wall seconds, CPU seconds of the dbt child, and each node's execution seconds."""
        cpu0, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        run_dbt([*(command if timed else ["run"]), *select, *args], paths, cfg,
                rebuild_from=day)
        wall, cpu1 = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
        results = json.loads((paths.dbt_target / "run_results.json").read_text())["results"]
        models = {r["unique_id"].split(".")[-1]: float(r["execution_time"]) for r in results}
        return wall, (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), models

    figures: dict[tuple[int, str], tuple[float, float, dict[str, float]]] = {}
    load(days[:4])
    dbt(timed=False)
    for n, history in ((5, days[4:5]), (30, days[5:30])):
        load(history[:-1])
        if history[:-1]:
            dbt(day=history[0], timed=False)  # the days between, untimed
        load(history[-1:])
        figures[(n, "incremental")] = dbt(day=history[-1])
        figures[(n, "full")] = dbt("--full-refresh")

    print(f"dbt {' '.join(command + select)}, {ns.rows:,} transactions/day, DuckDB (wall and CPU seconds of the dbt process)")
    print(f"{'':13}{'wall d5':>8}{'wall d30':>9}{'30/5':>6}{'CPU d5':>8}{'CPU d30':>8}{'30/5':>6}")
    for mode in ("incremental", "full"):
        (w5, c5, _), (w30, c30, _) = figures[(5, mode)], figures[(30, mode)]
        print(f"{mode:13}{w5:8.1f}{w30:9.1f}{w30 / w5:6.2f}{c5:8.1f}{c30:8.1f}{c30 / c5:6.2f}")
    print("\nper node, execution seconds (incremental d5 / d30, full d5 / d30):")
    for model in figures[(30, "full")][2]:
        cells = [figures[(n, m)][2].get(model, 0.0) for m in ("incremental", "full") for n in (5, 30)]
        print(f"  {model:34}" + "".join(f"{c:7.2f}" for c in cells))


if __name__ == "__main__":
    main()
