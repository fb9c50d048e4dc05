"""`make demo`'s knobs: the README states the script's defaults, and the demo stops on a stalled loop, not a clock.

The README's demo paragraph and `scripts/demo.py --help` once disagreed (20 vs 32 days, a stop one day
after close vs none); these tests parse the paragraph and compare it with the argparse defaults.
"""

from __future__ import annotations

import re
import shlex
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from devstack import demo

ROOT = Path(__file__).resolve().parents[2]


def demo_paragraph() -> str:
    """The README bullet that starts with "`make demo` creates", whitespace normalised."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^- `make demo` creates.*?(?=^- |^$)", readme, flags=re.S | re.M)
    assert match, "README.md has no bullet starting with '- `make demo` creates'"
    return " ".join(match.group(0).split())


def test_the_readme_states_the_scripts_defaults() -> None:
    text = demo_paragraph()
    stated = re.search(r"Defaults: `([^`]+)`", text)
    assert stated, "the README's demo paragraph lacks 'Defaults: `--knob value ...`'"
    tokens = shlex.split(stated.group(1))
    parser = demo.build_parser()
    assert vars(parser.parse_args(tokens)) == vars(parser.parse_args([])), (
        f"README says {stated.group(1)!r}; scripts/demo.py --help defaults differ"
    )
    # every knob that decides when the demo stops is stated
    assert {"--until", "--days-after-close", "--days", "--stall-min"} <= set(tokens)
    # and the prose says the same numbers
    defaults = parser.parse_args([])
    assert f"at most {defaults.days} days" in text
    assert f"for {defaults.stall_min:g} minutes" in text
    assert defaults.timeout_min is None and "No clock stops a loop that still moves" in text


def test_demo_args_pass_through_make() -> None:
    text = demo_paragraph()
    example = re.search(r'`make demo DEMO_ARGS="([^"]+)"', text)
    assert example, "the README's demo paragraph shows no `make demo DEMO_ARGS=...` example"
    demo.build_parser().parse_args(shlex.split(example.group(1)))  # the example is valid
    recipe = re.search(r"^demo:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), flags=re.M)
    assert recipe and "scripts/demo.py" in recipe.group(1) and recipe.group(1).rstrip().endswith("$(DEMO_ARGS)")


def test_progress_stalls_only_when_no_task_finishes() -> None:
    p = demo.Progress(stall_s=60, last_change=0.0)
    p.update(5, now=0.0)
    assert not p.stalled(59.0)
    p.update(None, now=50.0)  # the metadata DB was busy: no news is not progress
    p.update(5, now=55.0)
    assert p.stalled(60.0) and p.quiet_for(60.0) == 60.0
    p.update(6, now=61.0)  # one more task finished: the clock starts again
    assert not p.stalled(120.0) and p.stalled(121.0)


class _MetadataDB:
    """A stand-in for `Stack` with only what the demo's readers use: an Airflow metadata DB (real schema)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def metadata_connection(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path)


@pytest.fixture(scope="module")
def airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite DB with Airflow's own metadata schema (its SQLAlchemy models)."""
    import sqlalchemy as sa
    from airflow.models import import_all_models
    from airflow.models.base import Base

    import_all_models()
    path = tmp_path_factory.mktemp("airflow") / "airflow.db"
    Base.metadata.create_all(sa.create_engine(f"sqlite:///{path}"))
    return path


def _task(db: Path, dag_id: str, task_id: str, run_id: str, state: str, ended: bool, **extra: Any) -> None:
    with sqlite3.connect(db) as con:
        con.execute(
            "insert into task_instance (id, dag_id, task_id, run_id, map_index, try_number, pool, pool_slots, "
            "priority_weight, queue, state, start_date, end_date, dag_version_id) "
            "values (?, ?, ?, ?, -1, 1, 'default_pool', 1, 1, 'default', ?, '2026-01-01 00:00:00', ?, ?)",
            (str(uuid.uuid4()), dag_id, task_id, run_id, state, "2026-01-01 00:01:00" if ended else None,
             str(uuid.uuid4())),
        )


def test_the_demo_says_which_tasks_it_waits_for(airflow_db: Path) -> None:
    stack: Any = _MetadataDB(airflow_db)
    assert demo.waiting_for(stack) == "" and demo.finished_tasks(stack) == 0
    _task(airflow_db, "data_pipeline", "ingest", "day__2026-01-03", "success", ended=True)
    _task(airflow_db, "train_model", "train", "asset_triggered__2026-01-03", "running", ended=False)
    assert demo.finished_tasks(stack) == 1
    assert demo.waiting_for(stack) == "train_model/train (asset_triggered__2026-01-03, running)"
    for i in range(4):
        _task(airflow_db, "drift_monitor", f"t{i}", "day__2026-01-04", "queued", ended=False)
    assert demo.waiting_for(stack).endswith(" and 2 more")
