"""The library's one exception root.

Every error `training` raises on purpose derives from `ClosedloopError`, so a DAG or the CLI
catches that one class instead of a tuple of module-specific ones. Each subclass also keeps its
builtin base (ValueError, LookupError, RuntimeError), so callers that catch those still work.
"""

from __future__ import annotations


class ClosedloopError(Exception):
    """Raised on purpose by the library: the message names the problem and what to do."""
