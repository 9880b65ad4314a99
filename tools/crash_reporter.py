"""A supervisord event listener that reports crashes, back-offs and FATAL programs.

supervisord restarts whatever dies and, for a program that cannot stay up for its
``startsecs``, retries with a growing back-off and finally leaves it FATAL. It says
so only in its own log. This listener turns each of those events into one structlog
JSON line (in var/log/crash_reporter.log) with the program's name and running counts,
and flags a crash loop: a program that exited unexpectedly ``LOOP_EXITS`` times
within ``LOOP_WINDOW_S`` seconds. Started by supervisord itself
(``[eventlistener:crash_reporter]`` in supervisord.conf), subscribed to
PROCESS_STATE_EXITED, PROCESS_STATE_BACKOFF and PROCESS_STATE_FATAL.

The event listener protocol: say ``READY`` on stdout, read one header line and a
payload of the length it announces from stdin, answer ``RESULT 2\\nOK``, and again.
stdout belongs to that protocol, so the log lines go to stderr.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO, Any, TextIO

import structlog

log = structlog.get_logger("crash_reporter")

LOOP_EXITS = 3
LOOP_WINDOW_S = 60.0


def parse_fields(text: str) -> dict[str, str]:
    """``key:value key:value`` (supervisord's header and payload format)."""
    out: dict[str, str] = {}
    for token in text.split():
        key, sep, value = token.partition(":")
        if sep:
            out[key] = value
    return out


@dataclass
class _Counts:
    exits: int = 0
    backoffs: int = 0
    fatals: int = 0
    recent: deque[float] = field(default_factory=deque)


class CrashReporter:
    """Counts per program and the log line (if any) each event deserves."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._counts: dict[str, _Counts] = {}

    def counts(self, program: str) -> _Counts:
        return self._counts.setdefault(program, _Counts())

    def event(
        self, eventname: str, payload: dict[str, str]
    ) -> tuple[str, str, dict[str, Any]] | None:
        """(level, event, fields) to log for one supervisord event, or None."""
        name = payload.get("processname", "?")
        group = payload.get("groupname", name)
        program = name if group == name else f"{group}:{name}"
        counts = self.counts(program)
        fields: dict[str, Any] = {"program": program, "from_state": payload.get("from_state")}
        if eventname == "PROCESS_STATE_EXITED":
            if payload.get("expected") == "1":
                return None  # an exit code the config lists as expected
            now = self._clock()
            counts.exits += 1
            counts.recent.append(now)
            while counts.recent and counts.recent[0] < now - LOOP_WINDOW_S:
                counts.recent.popleft()
            fields.update(
                exited_pid=int(payload.get("pid", "0") or 0),
                exits=counts.exits,
                exits_in_window=len(counts.recent),
                window_s=LOOP_WINDOW_S,
            )
            if len(counts.recent) >= LOOP_EXITS:
                return "error", "crash_loop", fields
            return "warning", "process_crashed", fields
        if eventname == "PROCESS_STATE_BACKOFF":
            counts.backoffs += 1
            fields.update(tries=int(payload.get("tries", "0") or 0), backoffs=counts.backoffs)
            return "warning", "process_backoff", fields
        if eventname == "PROCESS_STATE_FATAL":
            counts.fatals += 1
            fields.update(exits=counts.exits, backoffs=counts.backoffs, fatals=counts.fatals)
            return "error", "process_fatal", fields
        return None


def serve(stdin: IO[bytes], stdout: IO[bytes], reporter: CrashReporter | None = None) -> None:
    """The listener loop; returns when supervisord closes stdin."""
    reporter = reporter or CrashReporter()
    while True:
        stdout.write(b"READY\n")
        stdout.flush()
        header_line = stdin.readline().decode("utf-8", "replace")
        if not header_line:
            return
        headers = parse_fields(header_line)
        # The length is in bytes: read bytes, then decode.
        payload_text = stdin.read(int(headers.get("len", "0"))).decode("utf-8", "replace")
        try:
            # Only the first line of a payload carries fields (PROCESS_LOG data follows it).
            found = reporter.event(
                headers.get("eventname", ""), parse_fields(payload_text.split("\n", 1)[0])
            )
            if found is not None:
                level, event, fields = found
                getattr(log, level)(event, **fields)
        except Exception as exc:  # never let one odd event stop the reporting
            log.error("event_not_understood", error=repr(exc), header=header_line.strip())
        stdout.write(b"RESULT 2\nOK")
        stdout.flush()


def configure_logging(stream: TextIO) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(actor="crash_reporter", pid=os.getpid())


def main() -> None:
    configure_logging(sys.stderr)
    log.info("listening", loop_exits=LOOP_EXITS, loop_window_s=LOOP_WINDOW_S)
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
