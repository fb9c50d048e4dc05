"""The dbt docs site (`python scripts/dev_stack.py dbt-docs`): a static server over the state dir's
dbt target folder (index.html + manifest.json + catalog.json). In a several-model deployment each
model's site is under `/<model>/` (its own dbt project and manifest), with a list of them at `/`."""

from __future__ import annotations

import functools
import html
import http.server
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from devstack.bootstrap import build_dbt_docs
from training.paths import StatePaths
from training.settings import settings


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        sys.stderr.write("dbt-docs: " + (format % args) + "\n")


class _ModelsHandler(_QuietHandler):
    """`/<model>/...` from that model's dbt target folder; `/` lists the models."""

    sites: dict[str, Path] = {}

    def translate_path(self, path: str) -> str:
        parts = urllib.parse.urlsplit(path).path.lstrip("/").split("/", 1)
        site = self.sites.get(parts[0])
        if site is None:
            return str(Path(self.directory) / "missing")  # 404
        return str(site.joinpath(*[p for p in (parts[1] if len(parts) > 1 else "").split("/") if p not in ("", ".", "..")]))

    def do_GET(self) -> None:
        if urllib.parse.urlsplit(self.path).path not in ("/", "/index.html"):
            super().do_GET()
            return
        links = "".join(f'<li><a href="{html.escape(m)}/">{html.escape(m)}</a></li>' for m in self.sites)
        body = f"<!doctype html><title>dbt docs</title><h1>dbt docs of each model</h1><ul>{links}</ul>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def models_handler(sites: dict[str, Path], root: Path) -> Any:
    """A request handler serving each model's dbt docs folder under `/<model>/` (`root`: for 404s only)."""
    return functools.partial(type("_Sites", (_ModelsHandler,), {"sites": dict(sites)}), directory=str(root))


def serve_dbt_docs(paths: StatePaths, host: str, port: int) -> None:
    """Serve the dbt docs site from the state dir (built first if init has not); one per model."""
    from training.deployment import deployment_models

    models = [m for m in deployment_models() if m]
    sites: dict[str, StatePaths] = {m: StatePaths.for_model(m) for m in models} if models else {"": paths}
    for model, site in sites.items():
        if not (site.dbt_target / "index.html").is_file():
            build_dbt_docs(site.ensure(), settings().dbt_target, model or None)
    if models:
        handler, where = models_handler({m: s.dbt_target for m, s in sites.items()}, paths.root), ", ".join(f"/{m}/" for m in models)
    else:
        handler, where = functools.partial(_QuietHandler, directory=str(paths.dbt_target)), str(paths.dbt_target)
    with http.server.ThreadingHTTPServer((host, port), handler) as server:
        print(f"dbt docs on http://{host}:{port} ({where})", flush=True)
        server.serve_forever()
