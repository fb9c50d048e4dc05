"""The Airflow REST API v2 client (token, trigger) and the HTTP probe the healthchecks use."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any


class RestApiError(RuntimeError):
    """The Airflow REST API refused a request; carries the HTTP status and the response body."""

    def __init__(self, message: str, status: int | None = None, body: str = ""):
        super().__init__(message)
        self.status = status
        self.body = body


def http_ok(url: str, timeout: float = 5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 400
    except (OSError, ValueError):
        return False


def _request(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 30) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        raise RestApiError(f"{method} {url} -> HTTP {exc.code}: {text[:1000]}", exc.code, text) from None


def get_json(url: str, token: str | None = None) -> Any:
    return _request("GET", url, token=token)


def get_token(base_url: str, user: str, password: str) -> str:
    """A JWT for the Airflow REST API (`POST /auth/token`, SimpleAuthManager)."""
    reply = _request("POST", f"{base_url.rstrip('/')}/auth/token", {"username": user, "password": password})
    return str(reply["access_token"])


def trigger_via_rest(
    base_url: str, user: str, password: str, dag_id: str, conf: Mapping[str, Any],
    *, run_id: str | None = None, logical_date: str | None = None,
) -> str:
    """Trigger `dag_id` through the REST API v2 with `conf`; returns the new run id.

    `logical_date` defaults to null: the run is not tied to a data interval (a manual trigger).
    A paused DAG accepts the run but the scheduler starts it only once the DAG is unpaused.
    """
    token = get_token(base_url, user, password)
    quoted = urllib.parse.quote(dag_id, safe="")
    body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf)}
    if run_id:
        body["dag_run_id"] = run_id
    url = f"{base_url.rstrip('/')}/api/v2/dags/{quoted}/dagRuns"
    for attempt in range(4):
        try:
            reply = _request("POST", url, body, token=token)
            break
        except RestApiError as exc:
            # SQLite metadata DB under load: "database is locked" comes back as a 500 - retry that only
            if exc.status != 500 or "Database error" not in exc.body or attempt == 3:
                raise
            time.sleep(2 * (attempt + 1))
    return str(reply["dag_run_id"])
