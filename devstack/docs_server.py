"""The dbt docs site (`python scripts/dev_stack.py dbt-docs`): a static server over the state dir's
dbt target folder (index.html + manifest.json + catalog.json)."""

from __future__ import annotations

import functools
import http.server
import sys
from typing import Any

from devstack.bootstrap import build_dbt_docs
from training.paths import StatePaths
from training.settings import settings


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        sys.stderr.write("dbt-docs: " + (format % args) + "\n")


def serve_dbt_docs(paths: StatePaths, host: str, port: int) -> None:
    """Serve the dbt docs site from the state dir (built first if init has not)."""
    if not (paths.dbt_target / "index.html").is_file():
        build_dbt_docs(paths, settings().dbt_target)
    handler = functools.partial(_QuietHandler, directory=str(paths.dbt_target))
    with http.server.ThreadingHTTPServer((host, port), handler) as server:
        print(f"dbt docs on http://{host}:{port} from {paths.dbt_target}", flush=True)
        server.serve_forever()
