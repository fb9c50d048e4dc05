"""The whole loop under the real Airflow scheduler (not `dags test`): `scripts/demo.py`, shortened.

Real api-server, scheduler, dag-processor and triggerer in a temporary state dir; the test only
delivers simulated days (as the demo does). It asserts that the drift monitor - not the test -
triggered a retrain and that the retrained challenger was promoted to champion.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_drift_triggered_retrain_promotes_a_new_champion(tmp_path):
    state = tmp_path / "state"
    overrides = tmp_path / "e2e.yaml"
    overrides.write_text("simulator:\n  transactions_per_day: 6000\n  n_customers: 2000\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CLOSEDLOOP_"))}
    env["CLOSEDLOOP_HOME"] = str(state)
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--days", "20", "--port", str(_free_port()),
         "--overrides", str(overrides), "--timeout-min", "40",
         "--until", "closed"],  # healing on live data is the demo's (make demo) longer story
        env=env, capture_output=True, text=True, timeout=2600,
    )
    print(out.stdout[-6000:])
    assert out.returncode == 0, f"loop did not close:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    summary = json.loads((state / "reports" / "demo_loop.json").read_text())
    assert summary["closed"] is True
    moves = summary["alias_moves"]
    assert moves[0]["action"] == "first_promote"
    drift_promotions = [m for m in moves if m["action"] == "promote"
                        and str(m.get("trigger_reason", "")).startswith("drift_monitor")]
    assert drift_promotions, moves
    assert (state / "reports" / "demo_loop.png").stat().st_size > 10_000
    days = summary["days"]
    assert any(str(d["decision"]).startswith("trigger") for d in days)
