"""Reading a userhub log directory: actor JSON lines and supervisord's own log.

supervisord writes each program's stdout to ``<program>.log`` and rotates it to
``<program>.log.1``, ``.2``, ... (the highest number is the oldest). A rotation may
cut a line in two, so a chain of files is read oldest first as one stream: a last
line without its newline is joined to the first line of the next file. Whatever is
still incomplete at the very end (a process killed mid-write, or a line being written
right now) is counted as truncated, and any line that is not a JSON object (a Python
traceback on stderr, MariaDB's own log) is counted and skipped, never fatal.

supervisord.log lines look like
``2026-01-02 10:00:00,123 INFO exited: db_worker_00 (terminated by SIGKILL; not
expected)``; their time is the host's local time and is turned into UTC here, so it
sorts with the actors' ``ts`` fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

SUPERVISORD = "supervisord"
_LOG_FILE = re.compile(r"^(?P<base>.+)\.log(?:\.(?P<n>\d+))?$")
_SUP_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) (.*)$")
_SPAWNED = re.compile(r"^spawned: '([^']+)' with pid (\d+)")
_SUCCESS = re.compile(r"^success: (\S+) entered RUNNING state")
_EXITED = re.compile(r"^exited: (\S+) \((.*)\)\s*$")
_GAVE_UP = re.compile(r"^gave up: (\S+) entered FATAL state")
_STOPPED = re.compile(r"^stopped: (\S+) \((.*)\)\s*$")
_decoder = msgspec.json.Decoder()


def iso(dt: datetime) -> str:
    """The ``ts`` format of the actors' lines: ISO 8601 in UTC with microseconds."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: object) -> float | None:
    """Seconds since the epoch of an ISO 8601 ``ts`` field, None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def log_chains(directory: Path) -> dict[str, list[Path]]:
    """Program name -> its log files, oldest first (``x.log.3``, ..., ``x.log``)."""
    found: dict[str, list[tuple[int, Path]]] = {}
    for path in directory.iterdir():
        match = _LOG_FILE.match(path.name)
        if match is None or not path.is_file():
            continue
        found.setdefault(match["base"], []).append((int(match["n"] or 0), path))
    return {
        base: [p for _, p in sorted(files, key=lambda item: -item[0])]
        for base, files in sorted(found.items())
    }


@dataclass
class ReadStats:
    """What reading a directory met, so a report can say how much it understood."""

    files: int = 0
    lines: int = 0
    json_lines: int = 0
    other_lines: dict[str, int] = field(default_factory=dict)  # program -> count
    truncated: dict[str, int] = field(default_factory=dict)  # program -> count

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "lines": self.lines,
            "json_lines": self.json_lines,
            "other_lines": sum(self.other_lines.values()),
            "truncated_lines": sum(self.truncated.values()),
            "other_lines_by_program": dict(sorted(self.other_lines.items())),
            "truncated_by_program": dict(sorted(self.truncated.items())),
        }


def chain_lines(paths: Iterable[Path], stats: ReadStats, program: str) -> Iterator[bytes]:
    """Complete lines of a rotation chain, a line cut by rotation joined back together."""
    carry = b""
    for path in paths:
        stats.files += 1
        try:
            f = path.open("rb")
        except OSError:
            continue
        with f:
            for raw in f:
                if carry:
                    raw, carry = carry + raw, b""
                if not raw.endswith(b"\n"):
                    carry = raw  # the file ended mid-line: maybe the next one goes on
                    continue
                stats.lines += 1
                yield raw
    if carry.strip():
        stats.lines += 1
        stats.truncated[program] = stats.truncated.get(program, 0) + 1


@dataclass(frozen=True, slots=True)
class Line:
    """One actor JSON line and the program (log file chain) it came from."""

    program: str
    data: dict[str, Any]

    @property
    def actor(self) -> str:
        actor = self.data.get("actor")
        return actor if isinstance(actor, str) else re.sub(r"_\d+$", "", self.program)


def actor_lines(directory: Path, stats: ReadStats, needle: bytes = b"") -> Iterator[Line]:
    """Every JSON object line of every program's log; ``needle`` skips lines without it."""
    for program, paths in log_chains(directory).items():
        if program == SUPERVISORD:
            continue
        for raw in chain_lines(paths, stats, program):
            if needle and needle not in raw:
                continue
            try:
                data = _decoder.decode(raw)
            except msgspec.DecodeError:
                data = None
            if not isinstance(data, dict):
                if raw.strip():
                    stats.other_lines[program] = stats.other_lines.get(program, 0) + 1
                continue
            stats.json_lines += 1
            yield Line(program, data)


@dataclass(frozen=True, slots=True)
class SupervisorEvent:
    """A process state change supervisord logged."""

    ts: str  # UTC, the format of the actors' ``ts``
    kind: str  # spawned, running, exited, crashed, fatal, stopped
    program: str
    pid: int = 0
    detail: str = ""


def supervisor_events(directory: Path, stats: ReadStats) -> list[SupervisorEvent]:
    """supervisord.log (rotations included) as events, in order."""
    paths = log_chains(directory).get(SUPERVISORD, [])
    events: list[SupervisorEvent] = []
    for raw in chain_lines(paths, stats, SUPERVISORD):
        match = _SUP_LINE.match(raw.decode("utf-8", "replace").rstrip("\r\n"))
        if match is None:
            continue
        stamp, millis, _level, text = match.groups()
        try:
            local = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            continue
        ts = iso(local.replace(microsecond=int(millis) * 1000).astimezone())
        event = _supervisor_event(ts, text)
        if event is not None:
            events.append(event)
    return events


def _supervisor_event(ts: str, text: str) -> SupervisorEvent | None:
    if m := _SPAWNED.match(text):
        return SupervisorEvent(ts, "spawned", m[1], pid=int(m[2]))
    if m := _SUCCESS.match(text):
        return SupervisorEvent(ts, "running", m[1])
    if m := _EXITED.match(text):
        kind = "exited" if m[2].endswith("; expected") else "crashed"
        return SupervisorEvent(ts, kind, m[1], detail=m[2])
    if m := _GAVE_UP.match(text):
        return SupervisorEvent(ts, "fatal", m[1], detail="too many start retries")
    if m := _STOPPED.match(text):
        return SupervisorEvent(ts, "stopped", m[1], detail=m[2])
    return None
