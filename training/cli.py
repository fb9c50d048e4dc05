"""`python -m training <stage> ...`: each subcommand is a thin call into one module.

The CLI is the seam for scale-out (a KubernetesPodOperator runs the same command in a container
that a local task runs in-process). Subcommands live in a small registry: adding one is one
decorated function::

    @command("drift", "run the drift monitor for a day", arg("--date", type=_date, required=True))
    def _drift(ctx: Context, ns: argparse.Namespace) -> Any:
        from training.monitoring.drift_job import monitor_interval
        return monitor_interval(ctx.paths, ctx.cfg, ns.date)

Whatever the function returns is printed as JSON (dataclasses via `to_dict()`), so the output can
be parsed by a pod operator's XCom sidecar. Heavy modules are imported inside the functions, so
`--help` stays fast.

Before a stage runs, the servers the settings point at (MLflow server, PostgreSQL) must answer
within `CLOSEDLOOP_SERVICE_WAIT_S` (30 s); one that does not - then or mid-stage - ends the command
with one `error:` line naming it, its URL and how to start it (exit code 3), not a traceback. A state
dir the dev stack ran (`<state>/devstack/stack_env.json`) lends its config and backends to a caller
that set none (`training.stack_env`), so `CLOSEDLOOP_HOME=... python -m training audit` reads the
ledger the stack's tasks wrote, on either profile.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import Config, ConfigError, load_config
from training.deployment import use_model
from training.errors import ClosedloopError
from training.paths import StatePaths
from training.settings import CONFIG_ENV_VAR, HOME_ENV_VAR, MODEL_ENV_VAR, SettingsError, settings


@dataclass(frozen=True)
class Context:
    cfg: Config
    paths: StatePaths


Handler = Callable[[Context, argparse.Namespace], Any]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    args: tuple[tuple[tuple[str, ...], dict[str, Any]], ...]
    handler: Handler
    #: the servers it needs to answer before it runs (`training.outages.Endpoint.role`); None: all configured
    needs: frozenset[str] | None = None
    #: the exit code of a result (printed either way); None: 0
    exit_code: Callable[[Any], int] | None = None


COMMANDS: dict[str, Command] = {}


def arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """An `add_argument` call, deferred until the parser is built."""
    return flags, kwargs


def command(
    name: str,
    help: str,
    *args: tuple[tuple[str, ...], dict[str, Any]],
    needs: frozenset[str] | None = None,
    exit_code: Callable[[Any], int] | None = None,
) -> Callable[[Handler], Handler]:
    """Register a subcommand; the decorated function gets the context and the parsed arguments."""

    def register(fn: Handler) -> Handler:
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} registered twice")
        COMMANDS[name] = Command(name, help, tuple(args), fn, needs, exit_code)
        return fn

    return register


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _datetime(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a timestamp (ISO 8601): {text!r}") from None


def _dates(text: str) -> list[dt.date]:
    days = [_date(part.strip()) for part in text.split(",") if part.strip()]
    if not days:
        raise argparse.ArgumentTypeError(f"no date in {text!r} (YYYY-MM-DD,YYYY-MM-DD,...)")
    return sorted(set(days))


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean (true/false): {text!r}")


def _json_obj(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("evidence must be a JSON object")
    return value


_AIRFLOW_ARGS = (
    arg("--airflow-dag-id", default=None, help="Airflow DAG id (lineage)"),
    arg("--airflow-run-id", default=None, help="Airflow run id (lineage and idempotency key)"),
)


# --------------------------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------------------------


@command(
    "train",
    "train candidates on a data version and register the best as @challenger",
    arg("--reason", default="manual", help="why this training happens (recorded as trigger_reason)"),
    arg("--evidence", type=_json_obj, default=None, help="JSON object with the trigger's evidence"),
    arg("--data-version", default=None, help="DVC md5 of the training set (default: newest published)"),
    arg("--as-of", type=_date, default=None, help="newest data version on or before this date"),
    arg("--seed", type=int, default=None, help="override training.seed (reproduce a version)"),
    arg("--idempotency-key", default=None),
    *_AIRFLOW_ARGS,
)
def _train(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.model.train import TrainRequest, train_model

    request = TrainRequest(
        reason=ns.reason,
        evidence=ns.evidence or {},
        data_version=ns.data_version,
        as_of=ns.as_of,
        airflow_dag_id=ns.airflow_dag_id,
        airflow_run_id=ns.airflow_run_id,
        seed=ns.seed,
        idempotency_key=ns.idempotency_key,
    )
    return train_model(ctx.paths, ctx.cfg, request)


@command(
    "evaluate",
    "gate @challenger against @champion on the frozen holdout, then promote or reject",
    arg("--version", default=None, help="challenger version (default: @challenger)"),
    arg("--signature-override-reason", default=None, help="accept an input-schema change, saying why"),
    arg("--dry-run", action="store_true", help="write the report but do not touch the registry"),
    arg("--idempotency-key", default=None),
    arg("--airflow-run-id", default=None),
    arg("--hold", action="store_true",
        help="record a rejection but leave a passing challenger for train_model's promote task (its approval)"),
)
def _evaluate(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.model.evaluate import evaluate_challenger

    return evaluate_challenger(
        ctx.paths,
        ctx.cfg,
        version=ns.version,
        signature_override_reason=ns.signature_override_reason or None,  # "" from a template: none given
        airflow_run_id=ns.airflow_run_id,
        idempotency_key=ns.idempotency_key,
        act=not ns.dry_run,
        hold=ns.hold,
    )


@command(
    "promote",
    "promote a version whose gate decision passed (see `evaluate --dry-run`)",
    arg("--version", default=None, help="version to promote (default: @challenger)"),
    arg("--reason", default="gate decision passed; promoted from the CLI"),
    arg("--idempotency-key", default=None),
    arg("--airflow-run-id", default=None),
)
def _promote(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.model import registry, tracking

    version = ns.version
    mc = tracking.client(ctx.paths)
    if version is None:
        mv = tracking.alias_version(mc, ctx.cfg.model.name, tracking.CHALLENGER)
        if mv is None:
            raise registry.RegistryError("no @challenger to promote; pass --version")
        version = str(mv.version)
    mv = tracking.get_version(mc, ctx.cfg.model.name, version)
    key = ns.idempotency_key or f"cli-promote:{ctx.cfg.model.name}:{version}"
    return registry.promote(
        ctx.paths,
        ctx.cfg,
        version,
        reason=ns.reason,
        idempotency_key=key,
        report_uri=mv.tags.get("decision_report"),
        airflow_run_id=ns.airflow_run_id,
    )


@command(
    "rollback",
    "restore the previous champion recorded in the audit log",
    arg("--reason", required=True, help="why (written to the audit log)"),
    arg("--idempotency-key", default=None),
    arg("--airflow-run-id", default=None),
)
def _rollback(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.model import registry

    return registry.rollback(
        ctx.paths, ctx.cfg, ns.reason, idempotency_key=ns.idempotency_key, airflow_run_id=ns.airflow_run_id
    )


@command(
    "force-promote",
    "make a version champion without gates (audited; a reason is mandatory)",
    arg("--version", required=True),
    arg("--reason", required=True, help="why the gates are overridden (written to the audit log)"),
    arg("--idempotency-key", default=None),
    arg("--airflow-run-id", default=None),
)
def _force_promote(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.model import registry

    return registry.force_promote(
        ctx.paths,
        ctx.cfg,
        ns.version,
        ns.reason,
        idempotency_key=ns.idempotency_key,
        airflow_run_id=ns.airflow_run_id,
    )


@command(
    "infer",
    "score one day (or several, --dates) with @champion (+ @challenger and the previous champion in shadow) "
    "into published.predictions",
    arg("--date", type=_date, default=None, help="batch date (YYYY-MM-DD)"),
    arg("--dates", type=_dates, default=None,
        help="several batch dates, comma-separated: prints {batch_date, batch_dates, results} "
             "(what batch_inference hands to the drift monitor)"),
    arg("--start", type=_datetime, default=None, help="data interval start (default: the date 00:00)"),
    arg("--end", type=_datetime, default=None, help="data interval end (default: start + 1 day)"),
)
def _infer(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.serving.inference import score_interval

    if (ns.date is None) == (ns.dates is None):
        raise ValueError("give exactly one of --date YYYY-MM-DD or --dates YYYY-MM-DD,YYYY-MM-DD,...")
    if ns.date is not None:
        return score_interval(ctx.paths, ctx.cfg, ns.date, ns.start, ns.end)
    if ns.start or ns.end:
        raise ValueError("--start/--end apply to one --date; each of --dates is scored over its own day")
    results = [score_interval(ctx.paths, ctx.cfg, day) for day in ns.dates]
    days = [d.isoformat() for d in ns.dates]
    return {"batch_date": days[-1], "batch_dates": days, "results": results}


@command(
    "audit",
    "show the registry audit log (newest first)",
    arg("--limit", type=int, default=20),
    needs=frozenset({"ledger"}),
)
def _audit(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.model import registry

    rows = registry.audit_log(ctx.paths, ctx.cfg.model.name, ns.limit)
    if not rows:
        from training.storage.ledger import ops_db_url

        _warn_empty(ctx, f"no audit rows for model {ctx.cfg.model.name!r} in the ledger {_shown(ops_db_url(ctx.paths))}")
    return rows


def _shown(url: str) -> str:
    from training.outages import safe_url

    return safe_url(url)


def _warn_empty(ctx: Context, what: str) -> None:
    """An empty answer says where it looked; on a services state read locally, where to look instead."""
    from training import stack_env

    print(f"warning: {what}", file=sys.stderr)
    if stack_env.looks_like_services(ctx.paths) and not (settings().ops_db_url or "").startswith("postgresql"):
        print(
            f"warning: {ctx.paths.root} belongs to a services-profile stack: its ledger and registry live on "
            "PostgreSQL and the MLflow server, not in the state dir. Point at them with "
            '`eval "$(python scripts/dev_stack.py env)"` (same CLOSEDLOOP_HOME), or set CLOSEDLOOP_OPS_DB_URL '
            "and MLFLOW_TRACKING_URI.",
            file=sys.stderr,
        )


@command(
    "simulate",
    "print a summary of the simulated source's feeds for a day (needs contract.source.kind: simulator)",
    arg("--date", type=_date, required=True, help="business day (YYYY-MM-DD)"),
    needs=frozenset(),
)
def _simulate(ctx: Context, ns: argparse.Namespace) -> Any:
    from training import source

    kind = ctx.cfg.contract.source.kind
    if kind != "simulator":
        raise source.SourceError(
            f"`simulate` needs contract.source.kind: simulator, and this config's source is {kind!r}; "
            "`ingest --date` lands a day from any source"
        )
    feeds = source.extract(ctx.cfg, ns.date)
    return {"date": ns.date.isoformat(), **{name: len(frame) for name, frame in feeds.items()},
            "columns": {name: list(frame.columns) for name, frame in feeds.items()}}


@command(
    "ingest",
    "land a day's feeds (DVC-versioned), admit them (GX suites + checks against loaded history), load raw",
    arg("--date", type=_date, required=True, help="business day (YYYY-MM-DD)"),
)
def _ingest(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.data import admission, ingest

    ingest.check_day_order(ctx.paths, ctx.cfg, ns.date)
    landed = ingest.land(ctx.paths, ctx.cfg, ns.date)
    admitted = admission.admit(ctx.paths, ctx.cfg, landed)
    return {"landed": landed.to_xcom(), "raw_gate": admitted.to_xcom(),
            "loaded": ingest.load_raw(ctx.paths, admitted.batch)
            | ingest.readmit_held_labels(ctx.paths, ctx.cfg, ns.date)}


@command(
    "dbt",
    "run dbt with the project's profile, vars and state-dir paths, e.g. `dbt --rebuild-from 2026-01-05 -- build`",
    arg("--rebuild-from", type=_date, default=None,
        help="the first day whose incremental partitions to rebuild, as the data pipeline passes its day "
             "(default: rebuild every partition, as --full-refresh)"),
    arg("dbt_args", nargs=argparse.REMAINDER, help="arguments for dbt (after --)"),
)
def _dbt(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.data.dbt import run_dbt

    args = [a for a in ns.dbt_args if a != "--"] or ["build"]
    # on the settings' target (CLOSEDLOOP_DBT_TARGET); a failed build raises DbtError naming the failed nodes: exit code 1
    result = run_dbt(args, ctx.paths, ctx.cfg, rebuild_from=ns.rebuild_from)
    return {"success": result.success, "nodes": len(result.results)}


@command("dbt-parse", "write the dbt manifest cosmos renders the data_pipeline DAG from", needs=frozenset())
def _dbt_parse(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.data.dbt import parse_manifest

    return {"manifest": str(parse_manifest(ctx.paths, ctx.cfg))}


@command(
    "check-contract",
    "compare the data contract with the dbt manifest, the suites and the feature lists; one line per mismatch",
    arg("--manifest", type=Path, default=None, help="a dbt manifest.json (default: run dbt parse now)"),
)
def _check_contract(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.data.contract_check import run

    return run(ctx.cfg, ctx.paths, ns.manifest, ns.config)


@command(
    "publish",
    "run the feature GX gate on a day's candidate features and publish them as a new data version",
    arg("--date", type=_date, required=True, help="business day (YYYY-MM-DD)"),
)
def _publish(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.data import ingest, quality

    features = ctx.cfg.contract.marts.features
    frame = quality.load_warehouse_batch(ns.date, ctx.paths, table=features)
    # the feature gate's suite is named after the feature mart (as in the data_pipeline DAG)
    gate = quality.gate(ctx.cfg.contract.marts.split(features)[1], frame, ns.date, ctx.paths)
    start = dt.datetime.combine(ns.date, dt.time())
    return ingest.publish(
        ctx.paths, ctx.cfg, ns.date, start, start + dt.timedelta(days=1),
        lineage={"dbt_invocation_id": ingest.latest_dbt_invocation(ctx.paths, ctx.cfg), "gx_run_id": gate.run_id,
                 "gx_success": gate.success},
    ) | ingest.republish_later_days(ctx.paths, ctx.cfg, ns.date)


@command(
    "drift",
    "evaluate the drift window ending on a day, decide whether to retrain, record the decision",
    arg("--date", type=_date, default=None, help="window end (YYYY-MM-DD)"),
    arg("--dates", type=_dates, default=None,
        help="several window ends, comma-separated: decided oldest first, stopping at the first "
             "trigger (one retrain per run); prints the last decision"),
    arg("--retrain-in-flight", type=_bool, nargs="?", const=True, default=False,
        help="a train_model run is queued or running (a flag, or =true/false from a template)"),
)
def _drift(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.monitoring.drift_job import monitor_days

    if (ns.date is None) == (ns.dates is None):
        raise ValueError("give exactly one of --date YYYY-MM-DD or --dates YYYY-MM-DD,YYYY-MM-DD,...")
    return monitor_days(
        ctx.paths, ctx.cfg, [ns.date] if ns.date is not None else ns.dates,
        retrain_in_flight=lambda: bool(ns.retrain_in_flight), log=lambda line: print(line, file=sys.stderr),
    )


@command(
    "shadow",
    "judge the versions scored in shadow on the labels matured by a day (challenger vs champion, new vs "
    "previous champion); roll back / promote on significant evidence, as drift_monitor's shadow task does",
    arg("--date", type=_date, required=True, help="the monitored day (YYYY-MM-DD): labels matured by it are used"),
)
def _shadow(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.monitoring.shadow import judge

    return judge(ctx.paths, ctx.cfg, ns.date)


@command(
    "replay",
    "run days through the whole loop in-process (land ... publish, train when due, infer, drift), "
    "deciding as the DAGs do; one line per day",
    arg("--from", dest="start", type=_date, required=True, help="first day (YYYY-MM-DD)"),
    arg("--to", dest="end", type=_date, required=True, help="last day, inclusive (YYYY-MM-DD)"),
)
def _replay(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.replay import replay

    replay(ctx.paths, ctx.cfg, ns.start, ns.end, log=lambda line: print(line, flush=True))
    return None


@command(
    "new-model",
    "scaffold a model from a sample file: config with a contract, dbt staging/mart stubs, suite files",
    arg("name", help="model name (an identifier)"),
    arg("--sample", type=Path, required=True, help="a Parquet or CSV sample of the events feed"),
    arg("--labels-sample", type=Path, default=None, help="a Parquet or CSV sample of the labels feed"),
    arg("--out", type=Path, default=None, help="output folder (default: models/<NAME>/); existing files are kept"),
    needs=frozenset(),
)
def _new_model(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.scaffold import scaffold

    return scaffold(ns.name, ns.sample, ns.labels_sample, ns.out)


@command(
    "reproduce",
    "retrain a registered version from its lineage (data version, config, seed, chosen candidate) and "
    "compare its holdout metrics; exit 0 reproduced, 1 not, 2 lineage incomplete. Registers nothing.",
    arg("version", help="the registered model version to reproduce"),
    arg("--tolerance", type=float, default=None,
        help="absolute tolerance on the primary metric and ROC-AUC (default 1e-6)"),
    exit_code=lambda result: 0 if result.reproduced else 1,
)
def _reproduce(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.model.reproduce import DEFAULT_TOLERANCE, reproduce_version

    tolerance = DEFAULT_TOLERANCE if ns.tolerance is None else ns.tolerance
    return reproduce_version(ctx.paths, ctx.cfg, ns.version, tolerance)


@command("status", "show @champion and @challenger with lineage and holdout metrics")
def _status(ctx: Context, ns: argparse.Namespace) -> Any:
    from training.model import registry, tracking

    status = registry.model_status(ctx.paths, ctx.cfg)
    if status.get(tracking.CHAMPION) is None and status.get(tracking.CHALLENGER) is None:
        _warn_empty(ctx, f"no @champion and no @challenger of {ctx.cfg.model.name!r} in MLflow at "
                         f"{_shown(tracking.registry_uri(ctx.paths))}")
    return status


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description="closedloop ML stages")
    parser.add_argument("--config", type=Path, default=None,
                        help="config YAML (default: $CLOSEDLOOP_CONFIG; given, it sets $CLOSEDLOOP_CONFIG)")
    parser.add_argument("--home", type=Path, default=None,
                        help="state directory (default: $CLOSEDLOOP_HOME; given, it sets $CLOSEDLOOP_HOME)")
    parser.add_argument("--model", default=None,
                        help="in a several-model deployment ($CLOSEDLOOP_MODELS_DIR), the model to act for: "
                             "its config <models dir>/<model>.yaml and state <home>/models/<model>/ "
                             "(default: $CLOSEDLOOP_MODEL)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        for flags, kwargs in cmd.args:
            p.add_argument(*flags, **kwargs)
        p.add_argument("--xcom-json", type=Path, default=None, metavar="PATH",
                       help="also write the JSON result to PATH (a KubernetesPodOperator's XCom sidecar "
                            "reads /airflow/xcom/return.json)")
    return parser


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def _require_model_of_several(ns: argparse.Namespace) -> None:
    """In a several-model deployment a stage acts for one model: without `--model` it would act on the
    deployment's root state and the default config, which no model's DAGs use."""
    from training.config import model_names, models_dir

    s = settings()
    if s.models_dir is not None and not s.model and ns.config is None and ns.command != "new-model":
        raise ConfigError(
            f"this deployment runs several models ({', '.join(model_names()) or 'none'} in {models_dir()}): "
            "pass --model <model> (or set CLOSEDLOOP_MODEL)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one stage; `--home` / `--config` / `--model` set their variables for the call only (an in-process caller keeps its own)."""
    saved = {name: os.environ.get(name) for name in (HOME_ENV_VAR, CONFIG_ENV_VAR, MODEL_ENV_VAR)}
    try:
        return _main(argv)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if ns.verbose else logging.WARNING, stream=sys.stderr)
    from training import outages, stack_env

    cmd = COMMANDS[ns.command]
    try:
        if ns.model:
            use_model(ns.model)
        if ns.home:  # the one home: `${CLOSEDLOOP_HOME}` in the config (a drop URL) and child processes follow it
            os.environ[HOME_ENV_VAR] = str(ns.home.resolve())
        paths = StatePaths.from_env()  # the model's own state in a several-model deployment
        applied = stack_env.apply(paths, os.environ, config_given=ns.config is not None)
        if applied:
            print(f"note: using what the dev stack of {paths.root} recorded ({', '.join(applied)}; "
                  f"{stack_env.record_file(paths)}); set them to choose otherwise", file=sys.stderr)
        _require_model_of_several(ns)
        if ns.config:  # every default load_config() in this process (suites, load_raw, dbt) reads the same file
            os.environ[CONFIG_ENV_VAR] = str(ns.config.resolve())
        cfg = load_config(ns.config)
        wait_s = outages.wait_budget_s()
    except (ConfigError, SettingsError) as exc:  # the deployment, not the stage, is misconfigured
        print(f"error: {exc}", file=sys.stderr)
        return 2
    outages.bound_mlflow_retries()
    try:
        outages.wait_for([e for e in outages.endpoints() if cmd.needs is None or e.role in cmd.needs], wait_s)
        result = cmd.handler(Context(cfg, paths), ns)
    except Exception as exc:
        down = outages.translate(exc)
        if down is not None:  # a server is down: say which and how to start it, no traceback
            print(f"error: {down}", file=sys.stderr)
            return 3
        if isinstance(exc, ClosedloopError | LookupError | ValueError | RuntimeError):  # third-party errors too
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return int(getattr(exc, "exit_code", 1))  # e.g. 2: a reproduction's lineage is incomplete
        raise
    if result is not None:
        print(json.dumps(_jsonable(result), indent=2, default=str))
    if ns.xcom_json is not None:
        # the sidecar hands this file to XCom: the same dict the in-process task returns
        ns.xcom_json.parent.mkdir(parents=True, exist_ok=True)
        ns.xcom_json.write_text(json.dumps(_jsonable(result), default=str))
    return 0 if cmd.exit_code is None else cmd.exit_code(result)
