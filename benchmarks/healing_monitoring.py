"""Does the drift monitor cry wolf, and how fast does it see a real shift? This policy vs the old one.

Why: issue 10 measured the landed monitor on simulated weeks: weekly seasonality alone gave 8-18
false retrain triggers in 8 weeks, warm-up features triggered with no drift, a persistent drift
triggered 7 times in 20 windows. This replays the same chain (simulator -> point-in-time features
-> Evidently -> the trigger policy, through `examples.card_fraud.replay`, i.e. the DAG's own
`drift_job.measure_interval` and `retrain_trigger.decide`) over 8 weeks of daily windows for three worlds,
all with busy, pricier weekends (volume x2, amounts +20 %):

* `seasonality` - nothing else changes: every trigger is false;
* `abrupt`      - amounts +30 % from day 42 on;
* `gradual`     - amounts +3 %/day from day 42 on (+15 % on the 5th day).

A champion (logistic regression) is trained on days 0-27; its reference is days 14-27. Every triggered retrain is assumed
rejected by the gates (the worst case for storms: the drift persists). The old policy is the landed
one as far as config can express it: reference = a 3-day weekday holdout as given, no expected-drift
or critical features, no storm cap or backoff (k-of-n, cooldown and min-sample rules as before; the
non-overlapping count of 3-day performance windows is not switched off).

    .venv/bin/python benchmarks/healing_monitoring.py [--rows-per-day 3000] [--weeks 8] [--only NAME]

Measured on the 2-core dev machine (load ~10 from other jobs; ~5 min), defaults (3000 weekday rows
a day, 8 weeks = 56 daily windows, every triggered retrain rejected):

    world        policy       false triggers  onset->detection  triggers after onset  in 20 windows  blocked
    seasonality  this policy   0               -                 -                     -              0
                 old policy   17               -                 -                     -              0
    abrupt +30%  this policy   0               2 days            3 (42 windows)        2             32
                 old policy    3               3 days*          14                     6              0
    gradual 3%/d this policy   0               3 days (+9 %)     3 (42 windows)        2             31
                 old policy    3               3 days*          14                     6              0

    * the old policy triggers every 3rd day anyway (weekend windows against a weekday holdout), so its
      "detection" is its false-alarm rhythm, not a detection.

The gradual drift is seen through log_amount (critical, threshold 0.06): with a few thousand rows a
day its day-to-day noise is ~0.02-0.03, so +9 % (0.07) is about the earliest a daily window sees;
at 0.07-0.08 the same world is caught only on the 5th day (+15 %).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from typing import Any

import pandas as pd

from examples.card_fraud import replay as mr
from training.config import load_config, with_overrides
from training.model.metrics import compute_metrics
from training.paths import StatePaths

TRAIN_DAYS = 28  # champion trained on days 0..27; reference = days 14..27 (two whole weeks)
ONSET = 42
SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "seasonality": [],
    "abrupt": [{"kind": "amount_inflation", "from_day": ONSET, "params": {"factor": 1.3}}],
    "gradual": [{"kind": "gradual_amount_drift", "from_day": ONSET, "params": {"daily_rate": 0.03}}],
}


def run(name: str, rows_per_day: int, weeks: int) -> list[dict[str, Any]]:
    base = load_config()
    cfg = with_overrides(
        base,
        simulator={
            "transactions_per_day": rows_per_day,
            "n_customers": max(500, rows_per_day * 3 // 4),
            "n_merchants": 150,
            "scenarios": [{"kind": "weekly_seasonality", "from_day": 0}, *SCENARIOS[name]],
        },
        drift={"performance_bootstrap": 100},
    )
    days_total = TRAIN_DAYS + 7 * weeks
    start = cfg.simulator.start_date
    day = {i: start + dt.timedelta(days=i) for i in range(days_total)}
    feats = mr.simulated_features(cfg.simulator, days_total, label_maturity_days=cfg.windows.label_maturity_days)
    data = mr.with_scores(feats, mr.fit_champion(feats[feats.batch_date < day[TRAIN_DAYS]], cfg))
    reference = data[(data.batch_date >= day[TRAIN_DAYS - 14]) & (data.batch_date < day[TRAIN_DAYS])]
    week = data[(data.batch_date >= day[TRAIN_DAYS - 7]) & (data.batch_date < day[TRAIN_DAYS])]
    metrics = compute_metrics(week.is_fraud, week.score, cfg.model)
    # the landed monitor's reference: the frozen holdout, here its 3 last weekdays
    weekday_dates = sorted({d for d in reference.batch_date if d.weekday() < 5})[-3:]
    holdout = reference[reference.batch_date.isin(weekday_dates)]
    holdout_metrics = compute_metrics(holdout.is_fraud, holdout.score, cfg.model)
    monitored = [day[i] for i in range(TRAIN_DAYS, days_total)]
    onset = day[ONSET] if SCENARIOS[name] else None
    rows = []
    for policy, pcfg, ref, champ in (
        ("this policy", cfg, reference, metrics),
        ("old policy", mr.old_policy(cfg), holdout, holdout_metrics),
    ):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = mr.replay(StatePaths(tmp), pcfg, data, ref, champ, monitored, retrain_outcome="rejected")
        s = mr.summarize(result, onset)
        after = [d for d in result.trigger_days if onset is not None and d >= onset]
        in_20 = [d for d in after if onset is not None and (d - onset).days < 20]
        k = s["days_to_detection"]
        rows.append(
            {
                "world": name,
                "policy": policy,
                "windows": len(result.steps),
                "false triggers": s["false_triggers"],
                "days onset->detection": k if k is not None else "-",
                "amount shift at detection": (f"+{3 * k} %" if name == "gradual" and k else "-"),
                "triggers after onset": len(after),
                "triggers in 20 windows from onset": len(in_20) if onset else "-",
                "blocked (storm_cap/backoff)": s["reasons"].get("storm_cap", 0) + s["reasons"].get("backoff", 0),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(f"  {name} / {policy}: triggers on {s['trigger_days']} reasons {s['reasons']}", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=3000, help="weekday rows (weekends x2)")
    parser.add_argument("--weeks", type=int, default=8, help="weeks of daily windows after training")
    parser.add_argument("--only", choices=sorted(SCENARIOS), help="run one world only")
    args = parser.parse_args(argv)
    if args.weeks * 7 + TRAIN_DAYS <= ONSET + 20:
        parser.error(f"--weeks must leave 20 windows after the onset (day {ONSET}): use at least 6")
    rows = []
    for name in [args.only] if args.only else list(SCENARIOS):
        rows.extend(run(name, args.rows_per_day, args.weeks))
    table = pd.DataFrame(rows).set_index(["world", "policy"])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
