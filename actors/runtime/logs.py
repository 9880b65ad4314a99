"""structlog JSON lines for every actor, one object per line on stdout.

supervisord writes each program's stdout to its log under var/log/ (rotating it to
name.log.1, .2, ...), so the line is all an actor has to produce. Every line carries
``ts`` (ISO 8601, UTC), ``level``, ``actor`` (the kind), ``pid`` and ``event``;
handlers bind ``request_id`` (the trace id from the frame header) so one request can
be followed across gateway, cache_worker and db_worker, and per-request lines add
``duration_ms`` and, when the request failed, ``error_code``. Records of the standard
``logging`` module (aiohttp, aiomysql, asyncio) become the same JSON lines, so
``python -m tools.logtool`` reads everything an actor writes.

One request costs one line per actor. Lines are rendered with msgspec and written
through a small buffer flushed every 100 ms (and at exit, and whenever it passes
64 KiB): at thousands of requests a second, a write system call per line, and
supervisord waking up to copy each one, cost more than the request itself. The price
is that a process killed with SIGKILL may lose its last 100 ms of lines; tracebacks
go to stderr unbuffered, and supervisord's own log records every exit.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import time
from typing import Any, BinaryIO

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

_FLUSH_EVERY_S = 0.1
_FLUSH_BYTES = 64 * 1024


class _Timestamper:
    """ISO 8601 UTC timestamps with microseconds; the formatted second is cached."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["ts"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event


class BufferedLineWriter:
    """Collects rendered lines and writes them in batches (see the module docstring)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lines: list[bytes] = []
        self._size = 0
        self._scheduled = False
        atexit.register(self.flush)

    def msg(self, line: bytes) -> None:
        self._lines.append(line + b"\n")
        self._size += len(line) + 1
        if self._size >= _FLUSH_BYTES:
            self.flush()
        elif not self._scheduled:
            self._schedule()

    def msg_now(self, line: bytes) -> None:
        """Errors are written at once: they matter most just before a crash."""
        self.msg(line)
        self.flush()

    # structlog calls the method named after the level.
    debug = info = warning = warn = log = msg
    error = critical = exception = failure = fatal = msg_now

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # no event loop: nothing would flush later
            return
        self._scheduled = True
        loop.call_later(_FLUSH_EVERY_S, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        data, self._lines, self._size = b"".join(self._lines), [], 0
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError):
            pass  # stdout gone (supervisord stopping): nothing left to tell


_encoder = msgspec.json.Encoder()


def _render(logger: WrappedLogger, name: str, event: EventDict) -> bytes:
    try:
        return _encoder.encode(event)
    except TypeError:
        return _encoder.encode({k: v if _plain(v) else repr(v) for k, v in event.items()})


def _plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None) | list | dict | tuple)


_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    _Timestamper(),
]


def configure(kind: str, level: str = "info") -> None:
    """Set up JSON logging for an actor process; call once at start."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    writer = BufferedLineWriter(sys.stdout.buffer)
    structlog.configure(
        processors=[*_SHARED, structlog.processors.format_exc_info, _render],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *args: writer,
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
