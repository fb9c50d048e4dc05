"""`make demo`: the whole loop under the real Airflow scheduler, on either runtime profile.

`--profile services` (`make demo PROFILE=services`) runs the same demo on the services profile:
PostgreSQL, Redis + two Celery workers and the MLflow server (devstack); nothing else
changes.

Starts the Airflow components (api-server, scheduler, dag-processor, triggerer) with AIRFLOW_HOME in
the state directory and unpauses the DAGs. The script is the source system's clock: it delivers one
simulated day to `data_pipeline` (REST, `conf.batch_date`) whenever the previous day's run is over.
From there the DAGs drive themselves: features Assets trigger `train_model` and `batch_inference`,
predictions Assets trigger `drift_monitor`, and only the drift monitor triggers a retrain. Once the
loop has closed it goes on delivering days until a window scored only by the new champion has
matured labels (then `--days-after-close` more), at most `--days` in all. It prints progress, then
the day-by-day table, writes a PNG chart and exits 0 only if the loop closed (first champion ->
drift detected -> retrain -> new champion) AND healed: that matured live window is above the
champion floor of the primary metric.

No wall clock ends a run whose loop still moves (a slow or busy machine only takes longer): the demo
stops when no Airflow task has finished for `--stall-min` minutes (and says which tasks it was
waiting for), or when the day budget `--days` is spent; the chart then marks the run as stopped.
While quiet it prints every minute which DAG/task/run it is waiting for.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from devstack.airflow_api import trigger_via_rest
from devstack.environment import Ports
from devstack.services import PROFILES, PROJECT_ROOT, RUNTIME_SERVICES, check_profile, drop_services_state
from devstack.supervisor import Stack, start_stack
from training.config import Config, load_config, parse_config
from training.paths import StatePaths

DAG_IDS = ("data_pipeline", "train_model", "batch_inference", "drift_monitor", "rollback_champion")
TERMINAL = {"success", "failed"}

#: Airflow settings for a burst of short runs delivered day after day (the demo, the e2e tests and
#: benchmarks/orchestration.py): more task slots; a quicker scheduler loop - a day is ~25 short tasks
#: in a chain, so an idle loop looks again after 0.5 s, not 1 s; and no re-parse of DAG files that do
#: not change during the burst (Airflow re-parses every file every 30 s by default: ~10 s of parsing
#: a cycle for the two-model deployment, cosmos's task group included). Measured on an idle embedded
#: stack (CPU s a second of the whole tree, 90 s): 0.271 with idle sleep 0.2 and the default re-parse,
#: 0.107 with these, 0.072 with idle sleep 1 s - on 2 cores every stack of the test suite pays it.
BURST_AIRFLOW_ENV = {
    "AIRFLOW__CORE__PARALLELISM": "8",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
}


def demo_config_file(paths: StatePaths, days: int, extra: Path | None = None) -> tuple[Path, Config]:
    """The project config with config/demo_overrides.yaml (+ `extra`) merged in, written into the state dir."""
    from training.config import _deep_merge

    base = load_config().model_dump(mode="json")
    overrides = yaml.safe_load((PROJECT_ROOT / "config" / "demo_overrides.yaml").read_text())
    if extra is not None:
        overrides = _deep_merge(overrides, yaml.safe_load(extra.read_text()) or {})
    start = dt.date.fromisoformat(str(overrides.get("simulator", {}).get("start_date", base["simulator"]["start_date"])))
    # the schedule stops at the last simulated day: unpausing never creates a run for "today"
    overrides.setdefault("schedules", {})["data_pipeline_end_date"] = (start + dt.timedelta(days=days)).isoformat()
    cfg = parse_config(_deep_merge(base, overrides), "config/demo_overrides.yaml")
    out = paths.root / "demo_config.yaml"
    out.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return out, cfg


def _query(stack: Stack, sql: str) -> list[tuple[Any, ...]] | None:
    """Rows of a read-only query on the metadata DB (SQLite or PostgreSQL); None if it cannot be read now."""
    try:
        con = stack.metadata_connection()
    except Exception:  # noqa: BLE001 - not created yet / busy: the caller polls again
        return None
    try:
        cur = con.cursor()
        cur.execute(sql)
        return list(cur.fetchall())
    except Exception:  # noqa: BLE001 - sqlite3.Error / psycopg2.Error alike
        return None
    finally:
        con.close()


def run_counts(stack: Stack) -> dict[str, dict[str, int]]:
    """dag_id -> state -> number of runs, read straight from the metadata DB (read-only)."""
    counts: dict[str, dict[str, int]] = {}
    for dag_id, state, n in _query(stack, "select dag_id, state, count(*) from dag_run group by 1, 2") or []:
        counts.setdefault(dag_id, {})[state] = n
    return counts


def latest_pipeline_day(stack: Stack) -> str | None:
    rows = _query(stack, "select max(run_id) from dag_run where dag_id = 'data_pipeline' and state = 'success'")
    return rows[0][0].removeprefix("day__") if rows and rows[0][0] else None


def pipeline_idle(stack: Stack, dag_id: str = "data_pipeline") -> bool:
    """No run of the pipeline `dag_id` (a model's `<model>__data_pipeline` beside others) is queued or running."""
    rows = _query(stack, f"select count(*) from dag_run where dag_id = '{dag_id}' and state in ('queued', 'running')")
    return rows is not None and rows[0][0] == 0


def describe(counts: dict[str, dict[str, int]]) -> str:
    parts = []
    for dag_id in DAG_IDS[:4]:
        c = counts.get(dag_id, {})
        active = c.get("running", 0) + c.get("queued", 0)
        parts.append(f"{dag_id}: {c.get('success', 0)} ok" + (f", {active} active" if active else "")
                     + (f", {c['failed']} failed" if c.get("failed") else ""))
    return " | ".join(parts)


def finished_tasks(stack: Stack) -> int | None:
    """How many task instances have finished (any end state); None if the metadata DB cannot be read now."""
    rows = _query(stack, "select count(*) from task_instance where end_date is not null")
    return int(rows[0][0]) if rows else None


def waiting_for(stack: Stack) -> str:
    """The task instances the loop waits on now, as `dag/task (run, state)`; '' when none is unfinished."""
    rows = _query(stack, "select dag_id, task_id, run_id, state from task_instance "
                         "where state in ('running', 'queued', 'scheduled', 'deferred', 'up_for_retry', "
                         "'up_for_reschedule', 'restarting') order by start_date")
    if not rows:
        return ""
    shown = [f"{dag}/{task} ({run}, {state})" for dag, task, run, state in rows[:3]]
    return ", ".join(shown) + (f" and {len(rows) - 3} more" if len(rows) > 3 else "")


@dataclasses.dataclass
class Progress:
    """When an Airflow task last finished: the demo stops only when the loop stops moving, not on a clock."""

    stall_s: float
    finished: int = -1
    last_change: float = dataclasses.field(default_factory=time.monotonic)

    def update(self, finished: int | None, now: float) -> None:
        if finished is not None and finished != self.finished:
            self.finished, self.last_change = finished, now

    def stalled(self, now: float) -> bool:
        return now - self.last_change >= self.stall_s

    def quiet_for(self, now: float) -> float:
        return now - self.last_change


def build_parser() -> argparse.ArgumentParser:
    """The demo's knobs; README's demo paragraph states the same defaults (tests/devstack/test_demo_cli.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=32,
                        help="day budget: simulated days to deliver at most (default %(default)s)")
    parser.add_argument("--until", choices=("healed", "closed"), default="healed",
                        help="healed (default): wait for the new champion's first matured live window and exit 0 "
                             "only if it is above the floor; closed: stop once a drift-triggered retrain was promoted")
    parser.add_argument("--days-after-close", type=int, default=0,
                        help="once the new champion's first live window has matured (--until closed: once the loop "
                             "closed), deliver this many more days (default %(default)s)")
    parser.add_argument("--stall-min", type=float, default=15.0,
                        help="stop when no Airflow task has finished for this many minutes (default %(default)s); "
                             "a slow machine whose loop still moves is never stopped")
    parser.add_argument("--timeout-min", type=float, default=None,
                        help="optional hard cap on the whole run in minutes (default: none)")
    parser.add_argument("--keep-state", action="store_true", help="do not wipe the state dir first")
    parser.add_argument("--port", type=int, default=int(os.environ.get("CLOSEDLOOP_AIRFLOW_PORT", "8080")),
                        help="Airflow API/UI port (default $CLOSEDLOOP_AIRFLOW_PORT or 8080)")
    parser.add_argument("--overrides", type=Path, default=None, help="extra YAML merged over the demo config")
    parser.add_argument("--profile", choices=PROFILES, default=os.environ.get("CLOSEDLOOP_PROFILE") or "embedded",
                        help="embedded (SQLite, DuckDB, LocalExecutor) or services (PostgreSQL, Redis + Celery, MLflow server)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    profile = check_profile(args.profile)

    t0 = time.monotonic()
    paths = StatePaths.from_env()
    if not args.keep_state:
        if paths.root.exists():
            shutil.rmtree(paths.root)
        if profile == "services":  # the state dir's databases and broker keys are state too
            drop_services_state(paths)
    paths.ensure()
    cfg_file, cfg = demo_config_file(paths, args.days, args.overrides)
    os.environ["CLOSEDLOOP_CONFIG"] = str(cfg_file)
    first_day = cfg.start_date
    last_day = first_day + dt.timedelta(days=args.days - 1)
    events = cfg.simulator.known_events() if cfg.simulator is not None else []
    print(f"closedloop demo ({profile} profile): state in {paths.root}; simulating {first_day} .. {last_day} "
          f"({args.days} days, drift scenarios: {[f'{name}@{day}' for day, name in events]})")

    ports = dataclasses.replace(Ports.from_env(), airflow=args.port)
    # a SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the `finally` below stops the stack
    # instead of leaving its scheduler and workers running
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    stack = start_stack(paths, ports, services=RUNTIME_SERVICES[profile], profile=profile,
                        extra_env={"CLOSEDLOOP_CONFIG": str(cfg_file), **BURST_AIRFLOW_ENV})
    # this process reads the loop's evidence too: on services that lives on the servers
    os.environ.update(stack.library_env)
    from devstack import loop_report

    try:
        stack.wait_healthy(timeout_s=240)
        stack.wait_for_dags(DAG_IDS, timeout_s=240)
        for dag_id in DAG_IDS:
            stack.airflow("dags", "unpause", dag_id)
        print(f"Airflow UI: {stack.url}  (login {stack.user} / {stack.password})  setup took {time.monotonic() - t0:.0f}s")

        progress = Progress(args.stall_min * 60)
        last_line, quiet_polls, next_day, last_day_index, last_wait_note = "", 0, 0, args.days, 0.0
        closed = settled = False
        stopped: str | None = None  # why the run ended before the loop had its say (shown on the chart)
        while True:
            now = time.monotonic()
            if args.timeout_min is not None and now - t0 >= args.timeout_min * 60:
                stopped = f"stopped by --timeout-min {args.timeout_min:g} after {(now - t0) / 60:.1f} min"
                break
            # The source system's clock: day i+1 is delivered once day i's data_pipeline run is over.
            # Everything downstream follows from Assets and the drift monitor's own decisions.
            if next_day < last_day_index and pipeline_idle(stack):
                if not closed and next_day > 0 and loop_report.loop_verdict(paths, cfg).closed:
                    closed = True
                    if args.until == "closed":
                        settled, last_day_index = True, min(args.days, next_day + args.days_after_close)
                    print(f"loop closed after {next_day} days"
                          + ("" if settled else "; waiting for the new champion's live window to mature"), flush=True)
                if closed and not settled:
                    healing = loop_report.healing_verdict(paths, cfg)
                    if healing.settled:
                        settled, last_day_index = True, min(args.days, next_day + args.days_after_close)
                        print(f"after {next_day} days: {healing.why}", flush=True)
                if next_day < last_day_index:
                    day = first_day + dt.timedelta(days=next_day)
                    trigger_via_rest(stack.url, stack.user, stack.password, "data_pipeline",
                                     {"batch_date": day.isoformat()}, run_id=f"day__{day.isoformat()}",
                                     logical_date=f"{day + dt.timedelta(days=1)}T00:00:00Z")
                    next_day += 1
            counts = run_counts(stack)
            progress.update(finished_tasks(stack), now)
            pipeline = counts.get("data_pipeline", {})
            done_days = sum(n for s, n in pipeline.items() if s in TERMINAL)
            active = sum(c.get("running", 0) + c.get("queued", 0) for c in counts.values())
            line = f"[{now - t0:5.0f}s] day {done_days}/{last_day_index} (last processed {latest_pipeline_day(stack)}) | {describe(counts)}"
            if line.split("|", 1)[1] != last_line.split("|", 1)[-1]:
                print(line, flush=True)
                last_line = line
            quiet_polls = quiet_polls + 1 if (done_days >= last_day_index and active == 0) else 0
            if quiet_polls >= 3:
                break
            waiting = waiting_for(stack) or "no task is queued or running"
            if progress.stalled(now):
                stopped = (f"stalled: no Airflow task finished for {args.stall_min:g} min (--stall-min) after "
                           f"day {next_day} was delivered; waiting for {waiting}")
                print(stopped, flush=True)
                break
            if progress.quiet_for(now) >= 60 and now - last_wait_note >= 60:
                delivered = first_day + dt.timedelta(days=next_day - 1) if next_day else None
                print(f"[{now - t0:5.0f}s] no task finished for {progress.quiet_for(now) / 60:.1f} min "
                      f"(stall limit {args.stall_min:g}); day {next_day} ({delivered}) delivered; "
                      f"waiting for {waiting}", flush=True)
                last_wait_note = now
            time.sleep(2)
        if stopped is None and not settled:
            stopped = (f"day budget spent: {args.days} days delivered (--days) "
                       + ("before the new champion's live window matured" if closed else "before the loop closed"))
        # read while the stack runs: on services the MLflow server holds the model versions
        cfg = load_config(cfg_file)
        table = loop_report.day_table(paths, cfg, through=first_day + dt.timedelta(days=max(next_day - 1, 0)))
        moves = loop_report.promotions(paths, cfg)
        verdict = loop_report.loop_verdict(paths, cfg)
        healing = loop_report.healing_verdict(paths, cfg)
    finally:
        stack.stop()

    print("\nDay by day:\n" + loop_report.format_table(table))
    print("\nAlias moves:")
    for m in moves:
        print(f"  {m['at']}  {m['action']:<13} v{m['from_version']} -> v{m['to_version']}  trigger={m.get('trigger_reason')}")
    if stopped:
        print(f"\nrun ended early: {stopped}")
    chart = loop_report.plot(table, moves, cfg, paths.reports / "demo_loop.png", healing, stopped=stopped,
                             verdict=verdict)
    summary = loop_report.write_json(table, moves, verdict, paths.reports / "demo_loop.json", healing, stopped)
    elapsed = time.monotonic() - t0
    print(f"\nchart: {chart}\nsummary: {summary}\nAirflow/MLflow state kept in {paths.root} (browse with `make up PROFILE={profile}`)")
    print(f"demo took {elapsed / 60:.1f} min")
    if not verdict.closed:
        print(f"LOOP NOT CLOSED: {verdict.why}", file=sys.stderr)
        return 1
    print(f"LOOP CLOSED: {verdict.why}")
    if args.until == "closed":
        print(f"healing (not awaited, --until closed): {healing.why}")
        return 0
    if healing.recovered:
        print(f"LOOP HEALED: {healing.why}")
        return 0
    print(f"LOOP NOT HEALED: {healing.why}", file=sys.stderr)
    return 1

