"""structlog JSON lines for every actor, one object per line on stdout.

supervisord writes each program's stdout to its log under var/log/, so the line is
all an actor has to produce. Every line carries the actor kind and pid; handlers bind
``request_id`` (the trace id from the frame header) so one request can be followed
across gateway, cache_worker and db_worker.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure(kind: str, level: str = "info") -> None:
    """Set up JSON logging for an actor process; call once at start."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stdout, level=numeric, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(actor=kind, pid=os.getpid())
