"""WarmLocalExecutor: the scheduler imports the tasks' libraries once, before forking its workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from closedloop.warm_executor import PRELOAD_ENV_VAR, PRELOAD_MODULES, configured_modules

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, **env: str) -> dict:
    """Run `code` in a fresh interpreter (imports must not leak from this test process)."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", **env},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_default_module_imports():
    """A typo or a dropped dependency in the list would silently cost every task its import again."""
    result = _run(
        "import json; from closedloop.warm_executor import preload_modules, PRELOAD_MODULES;"
        "took = preload_modules(PRELOAD_MODULES); print(json.dumps(sorted(took)))"
    )
    assert sorted(result) == sorted(PRELOAD_MODULES)


def test_workers_are_forked_after_the_preload_and_a_bad_name_does_not_stop_the_scheduler():
    code = """
import json, sys
from closedloop.warm_executor import WarmLocalExecutor
ex = WarmLocalExecutor(parallelism=2)
assert "xml.dom.minidom" not in sys.modules
ex.start()
alive = [p.is_alive() for p in ex.workers.values()]
loaded = "xml.dom.minidom" in sys.modules
ex.end()
print(json.dumps({"alive": alive, "loaded": loaded}))
"""
    result = _run(code, **{PRELOAD_ENV_VAR: "xml.dom.minidom, no_such_module_for_closedloop"})
    assert result == {"alive": [True, True], "loaded": True}


def test_module_list_from_the_environment():
    assert configured_modules({}) == list(PRELOAD_MODULES)
    assert configured_modules({PRELOAD_ENV_VAR: ""}) == []
    assert configured_modules({PRELOAD_ENV_VAR: "pandas, duckdb ,"}) == ["pandas", "duckdb"]
