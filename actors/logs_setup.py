"""structlog JSON lines for every actor, one object per line on stdout.

supervisord writes each program's stdout to its log under var/log/ (rotating it to
name.log.1, .2, ...), so the line is all an actor has to produce. Every line carries
``ts`` (ISO 8601, UTC), ``level``, ``actor`` (the kind), ``pid`` and ``event``;
handlers bind ``request_id`` (the trace id from the frame header) so one request can
be followed across gateway, cache_worker and db_worker, and per-request lines add
``duration_ms`` and, when the request failed, ``error_code``. Records of the standard
``logging`` module (aiohttp, aiomysql, asyncio) become the same JSON lines, so
``python -m actors.logtool`` reads everything an actor writes.

One request costs one line per actor, written with a single flushed write.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog
from structlog.typing import Processor

_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
]


def configure(kind: str, level: str = "info") -> None:
    """Set up JSON logging for an actor process; call once at start."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(actor=kind, pid=os.getpid())

    # Library records through the same renderer; their logger name goes in "logger".
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
