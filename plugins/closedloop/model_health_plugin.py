"""Model health inside the Airflow UI: what serves, what waits, why it changed, and what drifted.

An Airflow 3 plugin: a small FastAPI app mounted by the API server at `/model-health` and an
external view that puts it in the UI's navigation (rendered in an iframe at `/plugin/model-health`).
It shows, for the configured model:

* `@champion` and `@challenger` with their holdout metrics and lineage (`training.model.registry.model_status`);
* the promotion / rejection / rollback history with reasons (`training.model.registry.audit_log`);
* the latest drift-monitor decisions, each linked to its Evidently report
  (`training.monitoring.decision_log.latest_decisions`; the HTML files under `StatePaths.reports` are served here);
* the promotions waiting for a person: train_model's `approve_promotion` tasks parked in Airflow's
  `awaiting_input` state (Airflow's `hitl_detail` table, read with its ORM), each linked to its
  Required Actions page and showing its deadline (`pending_approvals`);
* the shadow evaluations: @challenger vs @champion and a new champion vs the previous one on the same
  matured live rows, with the CI, flip rate, verdict and what the loop did (`training.monitoring.shadow.history`);
* the latest gate decision report (Markdown artifact `decision/decision_report.md`), rendered, with
  an "open in MLflow" link built from its portable `runs:/` URI (so it follows the MLflow server);
* the loop day by day as one picture (`/model-health/chart.png`): the same chart `make demo` writes to
  `reports/demo_loop.png`, drawn server-side from the ledger and warehouse by
  `training.monitoring.health_chart` (performance vs its floor, what the loop did, drift share vs threshold).

Everything is read through `training/`, never with SQL of its own, so the page shows what the loop
itself will act on. Each section fails on its own: a missing ledger or MLflow store shows a clear
note in that section instead of an error page, and a fresh install says there is no champion yet.

Access: the pages require an Airflow login (the UI's `_token` cookie or an `Authorization: Bearer`
token from `POST /auth/token`) - plugin apps are not protected by Airflow on their own.

Module name: Airflow's plugin loader imports this file as a top-level module named after it, so it
must not be named like an installed package. Heavy imports (training, mlflow, airflow's auth code)
happen inside the handlers: schedulers and workers import plugins too and should not pay for them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

log = logging.getLogger(__name__)

URL_PREFIX = "/model-health"
TEMPLATES = Path(__file__).resolve().parent / "model_health" / "templates"
METRIC_ORDER = ("pr_auc", "roc_auc", "recall_at_precision", "precision_at_k", "log_loss", "brier")
AUDIT_LIMIT = 25
DRIFT_LIMIT = 15
#: The chart shows the most recent days (a long-running deployment would otherwise squeeze them).
CHART_DAYS = 60
#: The cookie the Airflow UI keeps its JWT in (airflow.api_fastapi.auth.managers.base_auth_manager).
AIRFLOW_TOKEN_COOKIE = "_token"


class ReportNotServable(LookupError):
    """A drift report path is outside the state directory's reports folder or does not exist."""


# --------------------------------------------------------------------------------------------
# access
# --------------------------------------------------------------------------------------------


async def require_airflow_user(request: Request) -> Any:
    """The logged-in Airflow user, from a Bearer token or the UI's session cookie; else 401/403."""
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.cookies.get(AIRFLOW_TOKEN_COOKIE)
    return await resolve_user_from_token(token)


# --------------------------------------------------------------------------------------------
# data: everything through training/
# --------------------------------------------------------------------------------------------


def _section(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run one section's reader: `{"data": ...}` or `{"error": "<what failed and why>"}`."""
    try:
        return {"data": fn(), "error": None}
    except Exception as exc:  # one section failing must not take the page down
        log.warning("model-health section failed: %s", exc, exc_info=True)
        return {"data": None, "error": f"{type(exc).__name__}: {exc}"}


def _report_uri(status: dict[str, Any], audit: list[dict[str, Any]]) -> tuple[str | None, str]:
    """The newest gate decision report: the last acted-on decision, else the aliases' tags."""
    for row in audit:
        if row.get("action") in ("promote", "first_promote", "reject") and row.get("report_uri"):
            at = str(row.get("at") or "")[:19].replace("T", " ")
            return row["report_uri"], f"{row['action']} of version {row.get('to_version')} at {at} UTC"
    for alias in ("challenger", "champion"):
        summary = status.get(alias) or {}
        if summary.get("decision_report") and summary["decision_report"] != "unknown":
            return summary["decision_report"], f"@{alias} (version {summary.get('version')})"
    return None, ""


def _load_report(paths: Any, uri: str) -> str:
    import mlflow.artifacts

    from training.model import tracking

    tracking.client(paths)  # points MLflow at the tracking URI (runs:/ and mlflow-artifacts:/ need it)
    return mlflow.artifacts.load_text(uri)


def _report_href(paths: Any, uri: str) -> str | None:
    """The MLflow UI link of a `runs:/<run_id>/<path>` report; None without a UI or for other URIs."""
    from training.model import tracking

    base = mlflow_ui_base()
    parsed = tracking.parse_run_artifact_uri(uri)
    if not base or parsed is None:
        return None
    run_id, artifact_path = parsed
    experiment_id = tracking.client(paths).get_run(run_id).info.experiment_id
    return f"{base}/{tracking.ui_artifact_route(experiment_id, run_id, artifact_path)}"


def render_markdown(text: str) -> str:
    """Markdown -> HTML with raw HTML escaped (the report is data, not markup we trust)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def pending_approvals(dag_id: str) -> list[dict[str, Any]]:
    """The unanswered Human-in-the-loop questions of one DAG (train_model's `approve_promotion`),
    oldest first: what is asked, since when, until when, and the Required Actions page to answer it."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(HITLDetail.subject, HITLDetail.created_at, HITLDetail.defaults, TaskInstance.dag_id,
                   TaskInstance.run_id, TaskInstance.task_id, TaskInstance.map_index, TaskInstance.trigger_timeout)
            .join(TaskInstance, HITLDetail.ti_id == TaskInstance.id)
            .where(TaskInstance.dag_id == dag_id, HITLDetail.responded_at.is_(None),
                   TaskInstance.state == TaskInstanceState.AWAITING_INPUT)
            .order_by(HITLDetail.created_at)
        ).all()
    return [{
        "subject": r.subject, "dag_id": r.dag_id, "run_id": r.run_id, "task_id": r.task_id,
        "asked_at": r.created_at.isoformat() if r.created_at else None,
        "deadline": r.trigger_timeout.isoformat() if r.trigger_timeout else None,
        "default": ", ".join(r.defaults or []) or None,
        # relative to the UI's base URL, like the page's own link in the navigation
        "href": f"../dags/{r.dag_id}/runs/{r.run_id}/tasks/{r.task_id}/required_actions?map_index={r.map_index}",
    } for r in rows]


def collect(paths: Any, cfg: Any, model: str | None = None) -> dict[str, Any]:
    """What the page shows, as plain data (also served as JSON at `/model-health/api/status`)."""
    from training.deployment import dag_id
    from training.model import registry
    from training.monitoring import decision_log, shadow

    name = cfg.model.name
    status = _section(lambda: registry.model_status(paths, cfg))
    audit = _section(lambda: registry.audit_log(paths, name, AUDIT_LIMIT))
    drift = _section(lambda: decision_log.latest_decisions(paths, DRIFT_LIMIT))
    approvals = _section(lambda: pending_approvals(dag_id(model, "train_model")))
    shadow_rows = _section(lambda: shadow.history(paths, name, DRIFT_LIMIT))
    report: dict[str, Any] = {"uri": None, "source": "", "markdown": None, "error": None, "href": None}
    uri, source = _report_uri(status.get("data") or {}, audit.get("data") or [])
    if uri:
        report.update(uri=uri, source=source)
        try:
            report["markdown"] = _load_report(paths, uri)
        except Exception as exc:
            report["error"] = f"{type(exc).__name__}: {exc}"
        else:
            try:
                report["href"] = _report_href(paths, uri)
            except Exception as exc:  # the report still shows; only the link is missing
                log.warning("no MLflow link for report %s: %s", uri, exc)
    for row in drift.get("data") or []:
        row["report_href"] = _drift_report_href(paths, row.get("report_path"))
    return {
        "model_name": name,
        "primary_metric": cfg.model.primary_metric,
        "state_dir": str(paths.root),
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "status": status,
        "audit": audit,
        "drift": drift,
        "approvals": approvals,
        "shadow": shadow_rows,
        "report": report,
    }


def loop_chart(paths: Any, cfg: Any) -> Any:
    """The loop's chart (a matplotlib Figure) for the last `CHART_DAYS` days, from the loop's own records."""
    from training.monitoring import health_chart, loop_history

    table = loop_history.day_table(paths, cfg).tail(CHART_DAYS).reset_index(drop=True)
    return health_chart.draw(
        table,
        loop_history.promotions(paths, cfg),
        cfg,
        verdict=loop_history.loop_verdict(paths, cfg),
        healing=loop_history.healing_verdict(paths, cfg),
    )


def _drift_report_href(paths: Any, report_path: str | None) -> str | None:
    """The page-relative link under which a drift report is served, None if it cannot be."""
    if not report_path:
        return None
    path = Path(report_path)
    path = path if path.is_absolute() else paths.root / path  # stored relative to the state dir
    try:
        rel = path.resolve().relative_to(paths.reports.resolve())
    except ValueError:
        return None
    return "reports/" + rel.as_posix()


def resolve_report(paths: Any, relpath: str) -> Path:
    """The report file for a served link; only HTML files inside `StatePaths.reports`."""
    root = paths.reports.resolve()
    target = (root / relpath).resolve()
    if not target.is_relative_to(root) or target.suffix.lower() not in (".html", ".htm"):
        raise ReportNotServable(f"{relpath!r} is not a report under {root}")
    if not target.is_file():
        raise ReportNotServable(f"report {relpath!r} does not exist (state dir {paths.root})")
    return target


# --------------------------------------------------------------------------------------------
# presentation
# --------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if value == value else "—"  # NaN
    return str(value)


def _metrics(summary: dict[str, Any] | None) -> list[tuple[str, str]]:
    metrics = (summary or {}).get("holdout_metrics") or {}
    ordered = [k for k in METRIC_ORDER if k in metrics] + sorted(k for k in metrics if k not in METRIC_ORDER)
    return [(k, _fmt(metrics[k])) for k in ordered]


def mlflow_ui_base() -> str | None:
    """The MLflow UI's base URL for "open in MLflow" links: `$CLOSEDLOOP_MLFLOW_UI_URL` (`make up` / compose
    set it), else an http(s) `$MLFLOW_TRACKING_URI`, since a tracking server also serves the UI."""
    from training.settings import settings

    deployment = settings()
    base = deployment.mlflow_ui_url or ""
    if not base:
        tracking_uri = deployment.mlflow_tracking_uri or ""
        base = tracking_uri if tracking_uri.lower().startswith(("http://", "https://")) else ""
    return base.rstrip("/") or None


def _mlflow_link(name: str, version: str | None) -> str | None:
    base = mlflow_ui_base()
    if not base:
        return None
    from training.model import tracking

    return f"{base}/{tracking.ui_model_route(name, version or None)}"


def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"]),
    )
    env.filters["fmt"] = _fmt
    env.globals.update(metrics=_metrics, mlflow_link=_mlflow_link)
    return env


def render_page(data: dict[str, Any]) -> str:
    report = data["report"]
    html_report = render_markdown(report["markdown"]) if report.get("markdown") else None
    return _environment().get_template("model_health.html").render(data=data, report_html=html_report)


# --------------------------------------------------------------------------------------------
# the app
# --------------------------------------------------------------------------------------------


def _runtime(model: str | None = None) -> tuple[Any, Any]:
    """(Config, StatePaths) of `model` in a several-model deployment, else of the one model."""
    from training.config import load_config, model_config_path
    from training.paths import StatePaths

    if model:
        return load_config(model_config_path(model)), StatePaths.for_model(model)
    return load_config(), StatePaths.from_env()


def _models() -> list[str]:
    """The deployment's models when it has several (the page lists them), else none."""
    from training.deployment import deployment_models

    return [m for m in deployment_models() if m]


def create_app(runtime: Callable[..., tuple[Any, Any]] = _runtime,
               models: Callable[[], list[str]] = _models) -> FastAPI:
    """The model-health app; `runtime(model)` returns `(Config, StatePaths)` per request, `models()` the
    deployment's models (tests pass their own). In a several-model deployment every route takes
    `?model=<name>` (default: the first model) and the page links to every model."""
    app = FastAPI(
        title="closedloop model health",
        description="Champion/challenger, audit history, drift decisions and the latest gate report.",
        dependencies=[Depends(require_airflow_user)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def chosen(model: str | None) -> tuple[Any, Any, list[str], str | None]:
        known = models()
        if model and model not in known:
            raise HTTPException(status_code=404, detail=f"unknown model {model!r}; this deployment has: "
                                f"{', '.join(known) or 'one model (no ?model= needed)'}")
        model = model or (known[0] if known else None)
        cfg, paths = runtime(model) if model else runtime()
        return cfg, paths, known, model

    def with_models(data: dict[str, Any], known: list[str], model: str | None) -> dict[str, Any]:
        query = f"?model={model}" if model else ""
        for row in (data.get("drift") or {}).get("data") or []:
            if row.get("report_href"):
                row["report_href"] += query
        return data | {"models": known, "model_query": query}

    @app.get("/", response_class=HTMLResponse)
    def page(model: str | None = None) -> HTMLResponse:
        cfg, paths, known, model = chosen(model)
        return HTMLResponse(render_page(with_models(collect(paths, cfg, model), known, model)))

    @app.get("/api/status")
    def status(model: str | None = None) -> dict[str, Any]:
        cfg, paths, known, model = chosen(model)
        return with_models(collect(paths, cfg, model), known, model)

    @app.get("/chart.png")
    def chart(model: str | None = None) -> Response:
        from training.monitoring import health_chart

        cfg, paths, _, _ = chosen(model)
        try:
            image = health_chart.png(loop_chart(paths, cfg))
        except Exception as exc:  # the page around it still renders; the image says why it is missing
            log.warning("model-health chart failed: %s", exc, exc_info=True)
            raise HTTPException(status_code=503, detail=f"the loop chart could not be drawn: "
                                f"{type(exc).__name__}: {exc}") from None
        return Response(image, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/reports/{relpath:path}")
    def report(relpath: str, model: str | None = None) -> FileResponse:
        _, paths, _, _ = chosen(model)
        try:
            return FileResponse(resolve_report(paths, relpath), media_type="text/html")
        except ReportNotServable as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None

    @app.get("/index.html", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse(url="./")

    return app


app = create_app()


class ClosedloopModelHealthPlugin(AirflowPlugin):
    """Registers the app under /model-health and a "Model health" entry in the UI's Browse menu."""

    name = "closedloop_model_health"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "closedloop model health"}]
    external_views = [
        {
            "name": "Model health",
            # Relative (no leading slash): resolved against the UI's base URL, so a base path works.
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "category": "browse",
            "url_route": "model-health",
        }
    ]
