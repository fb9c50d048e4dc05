"""A server the library needs does not answer: a bounded wait, then one message naming it.

MLflow's HTTP client retries for about five minutes by default (7 retries, backoff factor 2) and
then raises a bare `MlflowException`; a PostgreSQL that is down refuses at once with a driver error.
Here both end in `ServiceUnavailable`: which service, its URL (never its password) and how to start
it. The wait is bounded by `CLOSEDLOOP_SERVICE_WAIT_S` (default 30 s) and MLflow's own retries by
`MLFLOW_HTTP_REQUEST_MAX_RETRIES` / `_BACKOFF_FACTOR` / `_TIMEOUT` (defaults below, unless set).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from training.errors import ClosedloopError
from training.settings import OPS_DB_ENV_VAR, TRACKING_URI_ENV_VAR, Settings, SettingsError, settings

SERVICE_WAIT_ENV_VAR = "CLOSEDLOOP_SERVICE_WAIT_S"
DEFAULT_WAIT_S = 30.0
#: MLflow's HTTP retries, short: a call against a closed port fails after ~16 s (measured) instead
#: of ~5 minutes. Variables already set win.
MLFLOW_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
#: How this machine starts its PostgreSQL server (README "Services profile").
PG_START_HINT = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
MLFLOW_START_HINT = "start it with `make up PROFILE=services` (the stack's MLflow server; `python scripts/dev_stack.py status` shows what runs)"


class ServiceUnavailable(ClosedloopError, ConnectionError):
    """A server the command needs does not answer; the message names it, its URL and how to start it."""


@dataclass(frozen=True)
class Endpoint:
    """One server a command talks to: what it is, where (shown without password), how to start it."""

    service: str
    url: str
    start: str
    probe: Callable[[], None]
    #: what it holds for the library: "mlflow", "ledger" or "warehouse"
    role: str = "mlflow"

    def unavailable(self, why: str, waited_s: float | None = None) -> ServiceUnavailable:
        waited = "" if waited_s is None else f"; waited {waited_s:.0f}s"
        return ServiceUnavailable(f"{self.service} at {self.url} does not answer ({why}{waited}): {self.start}")


def bound_mlflow_retries(environ: MutableMapping[str, str] | None = None) -> None:
    """Short MLflow HTTP retries unless the variables are set (the CLI and the dev stack's Airflow)."""
    env = os.environ if environ is None else environ
    for key, value in MLFLOW_RETRY_DEFAULTS.items():
        env.setdefault(key, value)


def wait_budget_s(environ: MutableMapping[str, str] | None = None) -> float:
    raw = ((os.environ if environ is None else environ).get(SERVICE_WAIT_ENV_VAR) or "").strip()
    try:
        value = float(raw) if raw else DEFAULT_WAIT_S
    except ValueError:
        raise SettingsError(f"{SERVICE_WAIT_ENV_VAR}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise SettingsError(f"{SERVICE_WAIT_ENV_VAR}={raw!r} must be >= 0")
    return value


def safe_url(url: str) -> str:
    """`url` without its password (SQLAlchemy URLs and http URLs alike)."""
    if "://" not in url:
        return url
    if not url.startswith(("http://", "https://")):
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            return make_url(url)._replace(password=None).render_as_string(hide_password=False)
        except ArgumentError:
            pass
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _http_probe(url: str) -> Callable[[], None]:
    def probe() -> None:
        import requests

        requests.get(f"{url.rstrip('/')}/health", timeout=5).raise_for_status()

    return probe


def _sql_probe(url: str) -> Callable[[], None]:
    def probe() -> None:
        import sqlalchemy as sa

        args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
        eng = sa.create_engine(url, connect_args=args, poolclass=sa.pool.NullPool)
        try:
            with eng.connect():
                pass
        finally:
            eng.dispose()

    return probe


def endpoints(s: Settings | None = None) -> list[Endpoint]:
    """The servers the current settings point at (none on the embedded profile: all files)."""
    s = s or settings()
    pg_start = f"start PostgreSQL (here: `{PG_START_HINT}`) or point {{var}} at a running server"
    found: list[Endpoint] = []
    for var, uri in ((TRACKING_URI_ENV_VAR, s.mlflow_tracking_uri), ("MLFLOW_REGISTRY_URI", s.mlflow_registry_uri)):
        if uri and uri.startswith(("http://", "https://")) and all(e.url != safe_url(uri) for e in found):
            found.append(Endpoint("the MLflow tracking server", safe_url(uri),
                                  f"{MLFLOW_START_HINT}, or point {var} at a running server", _http_probe(uri)))
        elif uri and uri.startswith("postgresql"):
            found.append(Endpoint("PostgreSQL (MLflow's store)", safe_url(uri), pg_start.format(var=var), _sql_probe(uri)))
    if s.ops_db_url and not s.ops_db_url.startswith("sqlite"):
        found.append(Endpoint("PostgreSQL (the operations ledger)", safe_url(s.ops_db_url),
                              pg_start.format(var=OPS_DB_ENV_VAR), _sql_probe(s.ops_db_url), "ledger"))
    if s.dbt_target == "postgres":
        from sqlalchemy.engine import URL

        url = URL.create("postgresql+psycopg2", username=s.pg_user, password=s.pg_password or None,
                         host=s.pg_host, port=s.pg_port, database=s.pg_dbname).render_as_string(hide_password=False)
        found.append(Endpoint("PostgreSQL (the warehouse)", safe_url(url),
                              pg_start.format(var="CLOSEDLOOP_PG_HOST/PORT/DBNAME"), _sql_probe(url), "warehouse"))
    return found


_REASONS = (
    ("connection refused", "connection refused"),
    ("timed out", "timed out"),
    ("timeout expired", "timed out"),
    ("name or service not known", "unknown host"),
    ("could not translate host name", "unknown host"),
    ("temporary failure in name resolution", "unknown host"),
    ("no route to host", "no route to host"),
)


def _why(exc: BaseException) -> str:
    """The reason in a few words (a driver's message runs to several lines)."""
    text = " ".join(str(exc).split())
    for needle, reason in _REASONS:
        if needle in text.lower():
            return reason
    return text if len(text) <= 120 else text[:117] + "..."


def wait_for(found: list[Endpoint], wait_s: float) -> None:
    """Each endpoint answers within the shared budget `wait_s`, or `ServiceUnavailable` for the first that does not."""
    from tenacity import Retrying, retry_if_exception, stop_before_delay, wait_exponential

    t0 = time.monotonic()
    for endpoint in found:
        remaining = max(0.0, wait_s - (time.monotonic() - t0))
        try:
            for attempt in Retrying(stop=stop_before_delay(remaining), wait=wait_exponential(multiplier=1, max=8),
                                    retry=retry_if_exception(_is_connection_error), reraise=True):
                with attempt:
                    endpoint.probe()
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            raise endpoint.unavailable(_why(exc), time.monotonic() - t0) from None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _is_connection_error(exc: BaseException) -> bool:
    """A failure to reach a server (not an error the server answered with)."""
    for e in _chain(exc):
        if isinstance(e, ConnectionError | TimeoutError):
            return True
        kind = f"{type(e).__module__}.{type(e).__name__}"
        if kind in ("requests.exceptions.ConnectionError", "requests.exceptions.ConnectTimeout",
                    "urllib3.exceptions.MaxRetryError", "urllib3.exceptions.NewConnectionError"):
            return True
        if kind.startswith(("psycopg2.", "sqlalchemy.exc.")) and type(e).__name__ == "OperationalError":
            text = str(e).lower()
            if any(w in text for w in ("connection", "could not connect", "timeout", "server closed")):
                return True
        if type(e).__name__ == "MlflowException" and any(
            w in str(e) for w in ("Max retries exceeded", "Connection refused", "Failed to establish", "Read timed out")
        ):
            return True
    return False


def translate(exc: BaseException, s: Settings | None = None) -> ServiceUnavailable | None:
    """`ServiceUnavailable` naming the server `exc` failed to reach (probed once now), or None if it is no outage."""
    if isinstance(exc, ServiceUnavailable):
        return exc
    if not _is_connection_error(exc):
        return None
    for endpoint in endpoints(s):
        try:
            endpoint.probe()
        except Exception as probe_exc:
            if _is_connection_error(probe_exc):
                return endpoint.unavailable(_why(probe_exc))
    return None
