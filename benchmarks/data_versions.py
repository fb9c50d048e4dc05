"""Publishing a training-set data version as history grows: one full copy per day vs partitions + a manifest.

Why (issue 18): publish exported the whole training set to one Parquet file and `dvc add`-ed it
every day, so the DVC cache and remote held a full copy per day (disk grows with days squared) and
each day's publish cost grew with the history. Now each day's partition is written once under its
md5 and a version is a small manifest of partition md5s (`training.storage.versioning`).

This fills a warehouse table shaped like `ml.ml_training_set` (the synthetic training set of
tests/synthetic.py, `--rows` rows a day) one day at a time and, after each day, publishes a version
both ways, in separate state directories:

* **old** - what `ingest.publish` did: `copy (select * ... order by batch_date, id)` to one Parquet
  file, then `versioning.snapshot` (`dvc add` + `dvc push` to the local remote);
* **new** - `versioning.version_table` (one grouped fingerprint query; only new or changed days
  exported) + `versioning.store_manifest`.

It prints, at the days of `--report`, the publish wall and CPU seconds of that day and the bytes
on disk (DVC repo + remote, each inode once), then the day-30 / day-5 publish ratios.

    .venv/bin/python benchmarks/data_versions.py                       # DuckDB, 20k rows/day, 30 days
    .venv/bin/python benchmarks/data_versions.py --postgres closedloop_bench   # an existing PG database
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/synthetic.py: the training-set shape

import pandas as pd  # noqa: E402

from tests.synthetic import make_training_set  # noqa: E402
from training.paths import StatePaths  # noqa: E402
from training.storage import versioning, warehouse  # noqa: E402

TABLE = "ml.ml_training_set"
ID = "transaction_id"


def disk_bytes(paths: StatePaths) -> int:
    """Bytes under the DVC repo and its remote, each inode once (version folders are hard links)."""
    seen, total = set(), 0
    for root in (paths.data, paths.dvc_remote):
        for dirpath, _, files in os.walk(root):
            for name in files:
                st = os.stat(os.path.join(dirpath, name))
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_size
    return total


def publish_old(paths: StatePaths) -> str:
    """The publish before manifests: the whole training set to one file, `dvc add` + push."""
    file = paths.published / "training_set.parquet"
    with warehouse.connect(paths, read_only=True) as con:
        con.export_parquet(f"select * from {TABLE} order by batch_date, {ID}", file)
    return versioning.snapshot(paths, file)


def publish_new(paths: StatePaths) -> str:
    with warehouse.transaction(paths) as con:
        manifest = versioning.version_table(paths, con, TABLE, ID)
    return versioning.store_manifest(paths, manifest)


def run(layout: str, root: Path, frame: pd.DataFrame, days: list[dt.date], report: set[int]) -> dict[int, dict]:
    paths = StatePaths(root).ensure()
    os.environ["CLOSEDLOOP_HOME"] = str(root)
    versioning._repo(paths).close()  # DVC imported and the repo initialised before any timing
    with warehouse.transaction(paths, ddl=["create schema if not exists ml"]) as con:
        _create_table(con, frame)  # the training set's columns, empty
    publish = publish_old if layout == "old" else publish_new
    out = {}
    for n, day in enumerate(days, start=1):
        with warehouse.transaction(paths) as con:
            con.insert_frame(TABLE, frame[frame["batch_date"] == day])
        w0, c0 = time.perf_counter(), time.process_time()
        version = publish(paths)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if n in report:
            out[n] = {"wall": wall, "cpu": cpu, "bytes": disk_bytes(paths), "version": version}
            print(f"  {layout} day {n:>2}: publish {wall:6.2f} s wall {cpu:6.2f} s CPU, "
                  f"disk {out[n]['bytes'] / 1e6:8.1f} MB", flush=True)
    return out


SQL_TYPES = {"object": "varchar", "float64": "double precision", "int64": "bigint", "int32": "integer",
             "datetime64[us]": "timestamp", "datetime64[ns]": "timestamp"}


def _create_table(con: warehouse.Session, frame: pd.DataFrame) -> None:
    cols = []
    for name, dtype in frame.dtypes.items():
        sql = "date" if name == "batch_date" else SQL_TYPES.get(str(dtype))
        if sql is None:
            raise SystemExit(f"no SQL type for column {name} ({dtype}): extend SQL_TYPES")
        cols.append(f"{name} {sql}")
    con.execute(f"drop table if exists {TABLE}")
    con.execute(f"create table {TABLE} ({', '.join(cols)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="training-set rows a day")
    parser.add_argument("--days", type=int, default=30, help="days to publish")
    parser.add_argument("--report", default="5,10,20,30", help="days to print, comma-separated")
    parser.add_argument("--postgres", metavar="DBNAME", help="an existing PostgreSQL database on 127.0.0.1:5432")
    parser.add_argument("--layouts", default="old,new")
    args = parser.parse_args(argv)
    if args.postgres:
        os.environ.update({"CLOSEDLOOP_DBT_TARGET": "postgres", "CLOSEDLOOP_PG_DBNAME": args.postgres})
    else:
        os.environ.pop("CLOSEDLOOP_DBT_TARGET", None)
    os.environ.pop("CLOSEDLOOP_OPS_DB_URL", None)  # each layout's own ledger
    report = {int(d) for d in args.report.split(",")}
    frame = make_training_set(n_days=args.days, rows_per_day=args.rows)
    days = sorted(set(frame["batch_date"]))
    backend = "postgres" if args.postgres else "duckdb"
    print(f"{len(frame):,} rows ({args.rows:,} a day, {len(days)} days) on {backend}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="data-versions-") as tmp:
        for layout in args.layouts.split(","):
            results[layout] = run(layout, Path(tmp) / layout, frame, days, report)
    print(f"\n{'layout':<7}{'day':>5}{'publish wall s':>16}{'publish CPU s':>15}{'disk MB':>10}")
    for layout, rows in results.items():
        for n, r in sorted(rows.items()):
            print(f"{layout:<7}{n:>5}{r['wall']:>16.2f}{r['cpu']:>15.2f}{r['bytes'] / 1e6:>10.1f}")
    first, last = min(report), max(report)
    for layout, rows in results.items():
        if first in rows and last in rows:
            a, b = rows[first], rows[last]
            print(f"{layout}: day {last} / day {first}: publish wall {b['wall'] / a['wall']:.2f}x, "
                  f"CPU {b['cpu'] / a['cpu']:.2f}x, disk {b['bytes'] / a['bytes']:.2f}x")
    if "old" in results and "new" in results and last in results["old"] and last in results["new"]:
        print(f"disk at day {last}: new / old = {results['new'][last]['bytes'] / results['old'][last]['bytes']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
