"""Shared pytest set-up: the repository root on sys.path, plain log lines.

structlog's default development renderer draws exceptions with rich when it is
installed (schemathesis brings it): hundreds of milliseconds per traceback, enough
to push a unit test's calls past their deadlines. Tests get plain text instead; the
actors themselves configure JSON lines (actors.runtime.logs) when they start.
"""

from __future__ import annotations

import sys
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        structlog.processors.KeyValueRenderer(key_order=["event"]),
    ],
    cache_logger_on_first_use=False,
)
