"""Does a day's cost stay flat as history grows? Every stage's wall time, CPU time and peak RSS (issue 18).

Why: at a fixed volume, day 30 must cost what day 5 costs (goal: at most 1.2x, wall and RSS, every
stage). Each stage runs as its own process through the CLI seam (`python -m training <stage>`,
what a KubernetesPodOperator runs), so the figures are one stage's, in a cold process:

    ingest (land + front door + load raw) -> dbt build -> publish (feature gate + data version)
    -> train + evaluate (on the measured days) -> infer -> drift

Days run one after the other from the simulator's start date on a fresh state dir (the embedded
profile: DuckDB, SQLite MLflow; `--postgres` points the warehouse at the local PostgreSQL). The
first champion is trained on the first day with enough matured history (`--first-train-day`) and
promoted (force-promoted if its gates refuse it: the benchmark measures cost, not quality); from
then on every day is scored and monitored. On the measured days (`--measure`, default 5 and the
last day) train and evaluate run again, so they are measured too. Windows are shortened
(`--windows`) so a model can train on day 5; a day's windows are full on both measured days, which
is what flat cost is about.

Per stage: wall seconds, CPU seconds (user + system, the stage and the processes it waited for),
peak RSS in MiB - from `os.wait4` on the stage's process, i.e. `getrusage(RUSAGE_CHILDREN)` for
that one child (the process-wide RUSAGE_CHILDREN maximum would mix stages).

    .venv/bin/python benchmarks/scale.py --rows 20000 --days 6 --measure 2,5   # quick: a few minutes
    .venv/bin/python benchmarks/scale.py --rows 100000,1000000 --days 30       # the issue's table (hours)
    .venv/bin/python benchmarks/scale.py --rows 10000000 --days 30 --allow-10m # 10M rows/day: opt in

Figures measured are in the README's "Scale" section (the run, its size and the machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEN_MILLION = 10_000_000


@dataclass(frozen=True)
class StageCost:
    rows: int
    day_index: int
    stage: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float


def bench_config(base: Path, target: Path, rows: int, windows: tuple[int, int, int, int]) -> Path:
    """The project config with `rows` simulated transactions a day, short windows and a small search."""
    cfg = yaml.safe_load(base.read_text())
    cfg["simulator"].update(
        transactions_per_day=rows,
        n_customers=max(2_000, rows // 5),
        n_merchants=max(200, rows // 200),
    )
    train, val, hold, maturity = windows
    cfg["windows"].update(training_days=train, validation_days=val, holdout_days=hold, label_maturity_days=maturity)
    cfg["training"].update(search_budget=1, candidates=["xgboost"], min_training_days=1)
    label_delay = cfg["simulator"].get("label_delay_days") or {}
    if isinstance(label_delay, dict) and label_delay.get("max", 0) > maturity:
        label_delay.update(min=min(label_delay.get("min", 0), maturity), max=maturity)
    target.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return target


def run_stage(env: dict[str, str], config: Path, home: Path, *args: str) -> tuple[float, float, float, str]:
    """One `python -m training` process: (wall s, CPU s, peak RSS MiB, stdout)."""
    cmd = [sys.executable, "-m", "training", "--config", str(config), "--home", str(home), *args]
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    stdout = out.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = err.read().decode(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{stdout[-2000:]}\n{tail}")
    peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
    return wall, usage.ru_utime + usage.ru_stime, peak_mb, stdout


def _json(stdout: str) -> dict:
    """The stage's JSON result (the CLI prints it last)."""
    start = stdout.find("{")
    try:
        return json.loads(stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {}


def run_size(rows: int, days: int, measure: list[int], first_train: int, windows: tuple[int, int, int, int],
             postgres: str | None, log) -> list[StageCost]:
    """A fresh state dir, `days` days at `rows` a day; the costs of every stage of the measured days."""
    costs: list[StageCost] = []
    with tempfile.TemporaryDirectory(prefix=f"scale-{rows}-") as tmp:
        home = Path(tmp) / "state"
        config = bench_config(ROOT / "config" / "closedloop.yaml", Path(tmp) / "bench.yaml", rows, windows)
        env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", "CLOSEDLOOP_HOME": str(home),
               "CLOSEDLOOP_DBT_UNIT_TESTS": "false"}
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "CLOSEDLOOP_DBT_TARGET", "CLOSEDLOOP_CONFIG"):
            env.pop(key, None)
        if postgres:
            env.update(CLOSEDLOOP_DBT_TARGET="postgres", CLOSEDLOOP_PG_DBNAME=postgres)
        start = yaml.safe_load(config.read_text())["simulator"]["start_date"]
        start = start if isinstance(start, dt.date) else dt.date.fromisoformat(str(start))
        champion = False
        for i in range(days):
            day = (start + dt.timedelta(days=i)).isoformat()
            stages: list[tuple[str, tuple[str, ...]]] = [
                ("ingest", ("ingest", "--date", day)),
                ("dbt build", ("dbt", "--", "build")),
                ("publish", ("publish", "--date", day)),
            ]
            if i == first_train or (champion and i in measure):
                stages += [("train", ("train", "--as-of", day, "--reason", "benchmark")), ("evaluate", ("evaluate",))]
            for name, args in stages:
                wall, cpu, rss, stdout = run_stage(env, config, home, *args)
                costs.append(StageCost(rows, i, name, wall, cpu, rss))
                if name == "train" and not champion:
                    version = str(_json(stdout).get("version", ""))
                elif name == "evaluate" and not champion:
                    if _json(stdout).get("action") not in ("promote", "first_promote"):
                        run_stage(env, config, home, "force-promote", "--version", version,
                                  "--reason", "scale benchmark: a champion to score with, whatever its gates")
                    champion = True
            if champion:
                for name, args in (("infer", ("infer", "--date", day)), ("drift", ("drift", "--date", day))):
                    wall, cpu, rss, _ = run_stage(env, config, home, *args)
                    costs.append(StageCost(rows, i, name, wall, cpu, rss))
            done = [c for c in costs if c.day_index == i]
            log(f"  rows/day {rows:,} day {i}: " + ", ".join(f"{c.stage} {c.wall_s:.1f}s" for c in done))
    return [c for c in costs if c.day_index in measure]


def table(costs: list[StageCost], measure: list[int]) -> str:
    """One line per (rows, stage): each measured day's wall / CPU / RSS and the last/first ratios."""
    first, last = measure[0], measure[-1]
    lines = [
        f"{'rows/day':>10} {'stage':<10} "
        + " ".join(f"{'day ' + str(d) + ' wall/cpu s, RSS MiB':>30}" for d in measure)
        + f"  {'ratio day ' + str(last) + '/' + str(first) + ' wall cpu rss':>28}"
    ]
    by_key: dict[tuple[int, str], dict[int, StageCost]] = {}
    for c in costs:
        by_key.setdefault((c.rows, c.stage), {})[c.day_index] = c
    for (rows, stage), per_day in by_key.items():
        cells = []
        for d in measure:
            c = per_day.get(d)
            cells.append(f"{c.wall_s:>9.1f} {c.cpu_s:>9.1f} {c.peak_rss_mb:>9.0f}" if c else f"{'-':>29}")
        a, b = per_day.get(first), per_day.get(last)
        ratio = (f"{b.wall_s / a.wall_s:>8.2f} {b.cpu_s / a.cpu_s:>8.2f} {b.peak_rss_mb / a.peak_rss_mb:>8.2f}"
                 if a and b else f"{'-':>26}")
        lines.append(f"{rows:>10,} {stage:<10} " + " ".join(f"{cell:>30}" for cell in cells) + f"  {ratio:>28}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="rows a day, comma-separated (default 100k,1M)")
    parser.add_argument("--days", type=int, default=30, help="days to run (the last is measured)")
    parser.add_argument("--measure", default=None, help="day indexes to measure, comma-separated (default 5,<last>)")
    parser.add_argument("--first-train-day", type=int, default=None,
                        help="day index of the first training (default: first with full windows)")
    parser.add_argument("--windows", default="2,1,1,1",
                        help="training,validation,holdout,label-maturity days (short, so day 5 can train)")
    parser.add_argument("--postgres", default=None, metavar="DBNAME",
                        help="warehouse on the local PostgreSQL database DBNAME (created beforehand, empty)")
    parser.add_argument("--allow-10m", action="store_true", help="allow 10M+ rows a day (hours, tens of GB)")
    parser.add_argument("--json", default=None, help="also write the measured figures to this JSON file")
    args = parser.parse_args(argv)

    sizes = [int(float(r)) for r in args.rows.split(",")]
    if any(r >= TEN_MILLION for r in sizes) and not args.allow_10m:
        parser.error("10M+ rows a day runs for hours and needs tens of GB: pass --allow-10m to mean it")
    windows = tuple(int(x) for x in args.windows.split(","))
    if len(windows) != 4:
        parser.error("--windows takes four numbers: training,validation,holdout,label-maturity days")
    train_days, val_days, hold_days, maturity = windows
    first_train = args.first_train_day
    if first_train is None:
        first_train = train_days + val_days + hold_days + maturity
    measure = sorted({int(x) for x in args.measure.split(",")}) if args.measure else sorted({5, args.days - 1})
    if measure[-1] >= args.days or measure[0] < first_train:
        parser.error(f"--measure days must lie in {first_train}..{args.days - 1} (after the first training)")

    costs: list[StageCost] = []
    for rows in sizes:
        print(f"rows/day {rows:,}: {args.days} days, measuring days {measure}", flush=True)
        costs += run_size(rows, args.days, measure, first_train, windows, args.postgres,  # type: ignore[arg-type]
                          lambda line: print(line, flush=True))
    print()
    print(table(costs, measure))
    if args.json:
        Path(args.json).write_text(json.dumps([c.__dict__ for c in costs], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
