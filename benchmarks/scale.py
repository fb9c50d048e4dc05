"""Does a day's cost stay flat as history grows? Every stage's wall time, CPU time and peak RSS (issue 18).

Why: at a fixed volume, day 30 must cost what day 5 costs (goal: at most 1.2x, wall and RSS, every
stage). Each stage runs as its own process through the CLI seam (`python -m training <stage>`,
what a KubernetesPodOperator runs), so the figures are one stage's, in a cold process:

    ingest (land + raw gate + load raw) -> dbt build -> publish (feature gate + data version)
    -> train + evaluate (first champion, then on the measured days) -> infer -> drift

Days are numbered from 1 (day 1 is the simulator's start date) on a fresh state dir (the embedded
profile: DuckDB, SQLite MLflow; `--warehouse postgres` puts the warehouse on the local PostgreSQL,
in a fresh database unless `--postgres DBNAME` names one). The first champion is trained on the
first day with enough matured history (`--first-train-day`, default the sum of the windows) and
promoted (force-promoted if its gates refuse it: the benchmark measures cost, not quality); from
then on every day is scored and monitored. Train and evaluate are forced on every measured day
(`--measure`, default 5, 10, 20 and the last day) with the same window lengths, so the measured
days compare like with like; windows are shortened (`--windows`) so a model can train on day 5.

`--fill replay` runs the days between measured days in one `python -m training replay` process
(the whole loop in-process, training when the retrain policy would), which saves a cold start per
stage per day; their cost is recorded per span, not per stage. The default (`--fill stages`) runs
every day stage by stage and records every stage of every day.

Per stage: wall seconds, CPU seconds (user + system, the stage and the processes it waited for),
peak RSS in MiB - from `os.wait4` on the stage's process, i.e. `getrusage(RUSAGE_CHILDREN)` for
that one child (the process-wide RUSAGE_CHILDREN maximum would mix stages). A stage passes when
day last / day first is at most `--limit` (1.2) in wall, CPU and RSS; on a loaded machine wall time
measures the other jobs, CPU seconds are the figure to read.

    .venv/bin/python benchmarks/scale.py --rows 5000 --days 30 --fill replay       # ~20 min under load
    .venv/bin/python benchmarks/scale.py --rows 100000,1000000 --days 30 --json out.json  # the issue's table
    .venv/bin/python benchmarks/scale.py --rows 1000000 --days 30 --warehouse postgres
    .venv/bin/python benchmarks/scale.py --rows 10000000 --days 30 --allow-10m    # 10M rows/day: opt in

Figures measured are in the README's "Scale benchmarks" section (the run, its size and the machine).
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
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEN_MILLION = 10_000_000
DEFAULT_MEASURE = (5, 10, 20, 30)
STAGES = ("ingest", "dbt build", "publish", "train", "evaluate", "infer", "drift")


@dataclass(frozen=True)
class StageCost:
    rows: int
    day: int  # 1 = the first day run
    stage: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    # infer: the model versions it scored by alias (champion, and challenger / previous champion in
    # shadow): a day scoring three models does three models' work whatever the history behind it
    scored: dict[str, str] | None = None


@dataclass(frozen=True)
class FillCost:
    """One `replay` process over days `first`..`last` (every stage in-process)."""

    rows: int
    first: int
    last: int
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


@contextmanager
def pg_database(dbname: str | None) -> Iterator[str]:
    """`dbname`, or a fresh database on the local PostgreSQL server, dropped afterwards."""
    if dbname:
        yield dbname
        return
    import psycopg2

    server = {"host": os.environ.get("CLOSEDLOOP_PG_HOST", "127.0.0.1"),
              "port": os.environ.get("CLOSEDLOOP_PG_PORT", "5432"),
              "user": os.environ.get("CLOSEDLOOP_PG_USER", "postgres"),
              "password": os.environ.get("CLOSEDLOOP_PG_PASSWORD", "")}
    name = f"closedloop_scale_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **server)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'create database "{name}"')
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
        admin.close()


def run_size(rows: int, days: int, measure: list[int], first_train: int, windows: tuple[int, int, int, int],
             postgres: str | None, fill: str, log: Callable[[str], None]) -> tuple[list[StageCost], list[FillCost]]:
    """A fresh state dir, `days` days at `rows` a day: every stage's cost on every day run stage by stage."""
    costs: list[StageCost] = []
    fills: list[FillCost] = []
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

        def date(n: int) -> str:
            return (start + dt.timedelta(days=n - 1)).isoformat()

        champion = False
        version = ""
        n = 1
        while n <= days:
            if fill == "replay" and champion and n not in measure:
                last = min([m - 1 for m in measure if m > n] or [days])
                wall, cpu, rss, _ = run_stage(env, config, home, "replay", "--from", date(n), "--to", date(last))
                fills.append(FillCost(rows, n, last, wall, cpu, rss))
                log(f"  rows/day {rows:,} days {n}-{last} (replay): {wall:.1f}s wall, {cpu:.1f} CPU s")
                n = last + 1
                continue
            stages: list[tuple[str, tuple[str, ...]]] = [
                ("ingest", ("ingest", "--date", date(n))),
                ("dbt build", ("dbt", "--rebuild-from", date(n), "--", "build")),
                ("publish", ("publish", "--date", date(n))),
            ]
            if n == first_train or (champion and n in measure):
                stages += [("train", ("train", "--as-of", date(n), "--reason", "benchmark")), ("evaluate", ("evaluate",))]
            for name, args in stages:
                wall, cpu, rss, stdout = run_stage(env, config, home, *args)
                costs.append(StageCost(rows, n, name, wall, cpu, rss))
                if name == "train" and not champion:
                    version = str(_json(stdout).get("version", ""))
                elif name == "evaluate" and not champion:
                    if _json(stdout).get("action") not in ("promote", "first_promote"):
                        run_stage(env, config, home, "force-promote", "--version", version,
                                  "--reason", "scale benchmark: a champion to score with, whatever its gates")
                    champion = True
            if champion:
                for name, args in (("infer", ("infer", "--date", date(n))), ("drift", ("drift", "--date", date(n)))):
                    wall, cpu, rss, stdout = run_stage(env, config, home, *args)
                    scored = _json(stdout).get("versions") if name == "infer" else None
                    costs.append(StageCost(rows, n, name, wall, cpu, rss, scored))
            done = [c for c in costs if c.day == n]
            log(f"  rows/day {rows:,} day {n}: " + ", ".join(
                f"{c.stage} {c.wall_s:.1f}s/{c.cpu_s:.1f} CPU s/{c.peak_rss_mb:.0f} MiB"
                + (f" ({len(c.scored)} models)" if c.scored else "") for c in done))
            n += 1
    return costs, fills


def ratios(costs: list[StageCost], measure: list[int], limit: float) -> list[dict]:
    """Per (rows, stage): day last / day first in wall, CPU and RSS, and whether each is within `limit`."""
    first, last = measure[0], measure[-1]
    by_key: dict[tuple[int, str], dict[int, StageCost]] = {}
    for c in costs:
        by_key.setdefault((c.rows, c.stage), {})[c.day] = c
    out = []
    for (rows, stage), per_day in by_key.items():
        a, b = per_day.get(first), per_day.get(last)
        if not (a and b):
            continue
        r = {"wall": b.wall_s / a.wall_s, "cpu": b.cpu_s / a.cpu_s, "rss": b.peak_rss_mb / a.peak_rss_mb}
        out.append({"rows": rows, "stage": stage, "first": first, "last": last, **r,
                    "pass": {k: v <= limit for k, v in r.items()}})
    return out


def table(costs: list[StageCost], measure: list[int], limit: float) -> str:
    """One line per (rows, stage): each measured day's wall / CPU / RSS, the last/first ratios and the verdict."""
    first, last = measure[0], measure[-1]
    lines = [
        f"{'rows/day':>10} {'stage':<10} "
        + " ".join(f"{'day ' + str(d) + ' wall/cpu s, MiB':>26}" for d in measure)
        + f"  {'day ' + str(last) + '/' + str(first) + ' wall   cpu   rss':>22}  verdict (<= {limit}x)"
    ]
    verdicts = {(r["rows"], r["stage"]): r for r in ratios(costs, measure, limit)}
    keys = sorted({(c.rows, c.stage) for c in costs}, key=lambda k: (k[0], STAGES.index(k[1])))
    for rows, stage in keys:
        per_day = {c.day: c for c in costs if (c.rows, c.stage) == (rows, stage)}
        cells = []
        for d in measure:
            c = per_day.get(d)
            cells.append(f"{c.wall_s:>8.1f} {c.cpu_s:>7.1f} {c.peak_rss_mb:>7.0f}" if c else f"{'-':>24}")
        r = verdicts.get((rows, stage))
        if r:
            ratio = f"{r['wall']:>6.2f} {r['cpu']:>5.2f} {r['rss']:>5.2f}"
            failed = [k for k, ok in r["pass"].items() if not ok]
            verdict = "PASS" if not failed else "FAIL (" + ", ".join(failed) + ")"
        else:
            ratio, verdict = f"{'-':>18}", "-"
        lines.append(f"{rows:>10,} {stage:<10} " + " ".join(f"{cell:>26}" for cell in cells)
                     + f"  {ratio:>22}  {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="rows a day, comma-separated (default 100k,1M)")
    parser.add_argument("--days", type=int, default=30, help="days to run, from day 1 (the last is measured)")
    parser.add_argument("--measure", default=None,
                        help="days to measure, comma-separated (default 5,10,20,30 up to --days, and the last)")
    parser.add_argument("--first-train-day", type=int, default=None,
                        help="day of the first training (default: the sum of the windows, the first it can)")
    parser.add_argument("--windows", default="2,1,1,1",
                        help="training,validation,holdout,label-maturity days (short, so day 5 can train)")
    parser.add_argument("--warehouse", choices=("duckdb", "postgres"), default="duckdb",
                        help="duckdb (embedded profile) or postgres (the local server, a fresh database)")
    parser.add_argument("--postgres", default=None, metavar="DBNAME",
                        help="put the warehouse on this existing, empty PostgreSQL database (implies postgres)")
    parser.add_argument("--fill", choices=("stages", "replay"), default="stages",
                        help="days between measured days: stage by stage (default) or one replay process")
    parser.add_argument("--limit", type=float, default=1.2, help="pass when day last / day first <= this")
    parser.add_argument("--allow-10m", action="store_true", help="allow 10M+ rows a day (hours, tens of GB)")
    parser.add_argument("--json", default=None, help="also write every day's figures to this JSON file")
    args = parser.parse_args(argv)

    sizes = [int(float(r)) for r in args.rows.split(",")]
    if any(r >= TEN_MILLION for r in sizes) and not args.allow_10m:
        parser.error("10M+ rows a day runs for hours and needs tens of GB: pass --allow-10m to mean it")
    windows = tuple(int(x) for x in args.windows.split(","))
    if len(windows) != 4:
        parser.error("--windows takes four numbers: training,validation,holdout,label-maturity days")
    first_train = args.first_train_day if args.first_train_day is not None else sum(windows)
    if args.measure:
        measure = sorted({int(x) for x in args.measure.split(",")})
    else:
        measure = sorted({d for d in DEFAULT_MEASURE if first_train <= d <= args.days} | {args.days})
    if measure[-1] > args.days or measure[0] < first_train:
        parser.error(f"--measure days must lie in {first_train}..{args.days} (from the first training on)")

    costs: list[StageCost] = []
    fills: list[FillCost] = []
    with pg_database(args.postgres) if (args.postgres or args.warehouse == "postgres") else _no_database() as db:
        for rows in sizes:
            print(f"rows/day {rows:,}: {args.days} days on {'postgres' if db else 'duckdb'}, "
                  f"measuring days {measure}", flush=True)
            size_costs, size_fills = run_size(rows, args.days, measure, first_train, windows,  # type: ignore[arg-type]
                                              db, args.fill, lambda line: print(line, flush=True))
            costs += size_costs
            fills += size_fills
    print()
    print(table(costs, measure, args.limit))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rows": sizes, "days": args.days, "measure": measure, "windows": list(windows),
            "first_train_day": first_train, "warehouse": "postgres" if args.postgres or args.warehouse == "postgres"
            else "duckdb", "fill": args.fill, "limit": args.limit,
            "costs": [asdict(c) for c in costs], "fills": [asdict(f) for f in fills],
            "ratios": ratios(costs, measure, args.limit),
        }, indent=1))
    return 0


@contextmanager
def _no_database() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    raise SystemExit(main())
