"""What a task pays for its imports: a cold interpreter vs a process forked from a warm parent.

Why: every closedloop task imports its libraries inside its body (DAG files stay light), and the
plain LocalExecutor forks workers from a scheduler that has none of them, so each task paid the
imports again. `closedloop.warm_executor.WarmLocalExecutor` imports them once before forking. This
times, in one run, the same imports (`PRELOAD_MODULES`, after `airflow.sdk` as in a task):

- cold: a fresh interpreter that has only `airflow.sdk` (what a plain LocalExecutor task starts with);
- warm: a child forked from this process after `preload_modules()` (what a WarmLocalExecutor task
  starts with), plus the fork itself.

    .venv/bin/python benchmarks/task_startup.py [--repeat 3]

Measured on the 2-core dev machine: cold 6.1 s (6.0-6.3), warm 0.013 s (fork + no-op imports), 463x: every
task that used GX, MLflow or Evidently started 2-6 s sooner; `make demo` went from 13.1 to 6.0 min
(16 days, the same story) with that and the 0.2 s scheduler idle sleep together.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from closedloop.warm_executor import PRELOAD_MODULES, preload_modules  # noqa: E402

IMPORTS = "; ".join(f"importlib.import_module({m!r})" for m in PRELOAD_MODULES)
TIMED = f"import importlib, time, warnings; warnings.simplefilter('ignore'); t = time.perf_counter(); {IMPORTS}; " \
        "print(time.perf_counter() - t)"


def cold() -> float:
    code = f"import airflow.sdk; from training.data.suites import quiet_gx; quiet_gx(); {TIMED}"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def warm() -> float:
    """Fork + the same imports in the child, timed from just before the fork."""
    read, write = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: what a task forked by a warm worker does
        os.close(read)
        namespace: dict = {}
        exec(TIMED.replace("print(time.perf_counter() - t)", "pass"), namespace)
        os.write(write, str(time.perf_counter() - start).encode())
        os._exit(0)
    os.close(write)
    took = float(os.read(read, 64).decode())
    os.waitpid(pid, 0)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    colds = [cold() for _ in range(args.repeat)]
    import airflow.sdk  # noqa: F401 - the parent is a scheduler

    t = time.perf_counter()
    preload_modules(PRELOAD_MODULES)
    preload_s = time.perf_counter() - t
    warms = [warm() for _ in range(args.repeat)]
    c, w = statistics.median(colds), statistics.median(warms)
    print(f"{len(PRELOAD_MODULES)} modules; cold task imports: median {c:.2f} s {[round(x, 2) for x in colds]}")
    print(f"warm fork + imports: median {w:.4f} s {[round(x, 4) for x in warms]} (one-off preload in the parent {preload_s:.1f} s)")
    print(f"ratio cold / warm: {c / w:.0f}x; saved per task: {c - w:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
