"""Read a userhub log directory: follow one request, or summarise a run.

    python -m tools.logtool follow REQUEST_ID [LOG_DIR] [--json]
    python -m tools.logtool summary [LOG_DIR] [--json] [--top N]

``follow`` prints one request's timeline across actors, from every line that carries
its ``request_id`` (the ``X-Request-ID`` the gateway returned). Each actor logs a
request when it is done with it, so a line's start is its ``ts`` minus its
``duration_ms``; the timeline is ordered by start and shows the nesting plainly.

``summary`` prints errors by actor and code, process starts and crashes with their
times (supervisord.log, plus each actor's own "running" line), per-stage
p50/p95/p99 of the ``duration_ms`` fields by actor, event and route or message, and
the slowest requests. ``--json`` gives the same as one JSON document.

LOG_DIR defaults to ``$USERHUB_VAR/log`` (``var/log`` in the repository).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

from actors.runtime.env import var_dir
from tools.logtool_read import (
    Line,
    ReadStats,
    SupervisorEvent,
    actor_lines,
    parse_ts,
    supervisor_events,
)

#: The line every actor writes once it serves (actors.runtime.lifecycle).
START_EVENTS = ("running",)
_SKIP_IN_DETAIL = {"ts", "level", "actor", "pid", "event", "request_id", "duration_ms"}


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (the value p% of samples are at or under)."""
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[rank - 1]


def stage_name(data: dict[str, Any]) -> str:
    """What a timed line measured: an HTTP route, a message type or a stage."""
    if isinstance(data.get("route"), str):
        method = data.get("method")
        return f"{method} {data['route']}" if isinstance(method, str) else str(data["route"])
    for key in ("message", "stage"):
        if isinstance(data.get(key), str):
            return str(data[key])
    return ""


def duration_of(data: dict[str, Any]) -> float | None:
    value = data.get("duration_ms")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


# -- follow --------------------------------------------------------------------------------


def follow(log_dir: Path, request_id: str) -> dict[str, Any]:
    stats = ReadStats()
    steps: list[dict[str, Any]] = []
    for line in actor_lines(log_dir, stats, needle=request_id.encode()):
        if line.data.get("request_id") != request_id:
            continue
        end = parse_ts(line.data.get("ts"))
        duration = duration_of(line.data)
        start = end - duration / 1000 if end is not None and duration is not None else end
        steps.append(
            {
                "start": start,
                "ts": line.data.get("ts"),
                "program": line.program,
                "actor": line.actor,
                "pid": line.data.get("pid"),
                "event": line.data.get("event"),
                "duration_ms": duration,
                "detail": {k: v for k, v in line.data.items() if k not in _SKIP_IN_DETAIL},
            }
        )
    steps.sort(key=lambda s: (s["start"] is None, s["start"] or 0.0))
    first = next((s["start"] for s in steps if s["start"] is not None), None)
    for step in steps:
        start = step.pop("start")
        step["offset_ms"] = (
            round((start - first) * 1000, 3) if start is not None and first is not None else None
        )
    return {
        "request_id": request_id,
        "actors": sorted({s["actor"] for s in steps}),
        "steps": steps,
    }


def render_follow(report: dict[str, Any]) -> str:
    steps = report["steps"]
    if not steps:
        return f"request {report['request_id']}: no log line carries this id\n"
    out = [
        f"request {report['request_id']}: {len(steps)} lines from {', '.join(report['actors'])}",
        f"{'start':>10}  {'took':>9}  {'program':<16} {'pid':>7}  event",
    ]
    for s in steps:
        offset = "?" if s["offset_ms"] is None else f"+{s['offset_ms']:.3f}"
        took = "" if s["duration_ms"] is None else f"{s['duration_ms']:.3f}"
        detail = " ".join(f"{k}={v}" for k, v in s["detail"].items())
        out.append(
            f"{offset:>10}  {took:>9}  {s['program']:<16} {s['pid']!s:>7}  {s['event']}  {detail}"
        )
    out.append("(times in ms; start is relative to the first line's start)")
    return "\n".join(out) + "\n"


# -- summary ---------------------------------------------------------------------------------


def summary(log_dir: Path, top: int = 10) -> dict[str, Any]:
    stats = ReadStats()
    errors: Counter[tuple[str, str]] = Counter()
    error_lines: Counter[tuple[str, str]] = Counter()
    durations: dict[tuple[str, str, str], list[float]] = {}
    starts: list[dict[str, Any]] = []
    requests: list[tuple[float, Line]] = []
    first_ts = last_ts = ""
    for line in actor_lines(log_dir, stats):
        data = line.data
        ts = data.get("ts")
        if isinstance(ts, str):
            first_ts = min(first_ts, ts) if first_ts else ts
            last_ts = max(last_ts, ts)
        event = str(data.get("event", ""))
        code = data.get("error_code")
        if code:
            errors[(line.actor, str(code))] += 1
        elif data.get("level") in ("error", "critical", "exception"):
            error_lines[(line.actor, event)] += 1
        if event in START_EVENTS:
            start = {"ts": ts, "program": line.program, "actor": line.actor, "event": event}
            starts.append(dict(start, pid=data.get("pid")))
        duration = duration_of(data)
        if duration is None:
            continue
        durations.setdefault((line.actor, event, stage_name(data)), []).append(duration)
        if event == "http" and data.get("request_id"):
            requests.append((duration, line))
    sup = supervisor_events(log_dir, stats)
    starts.sort(key=lambda s: str(s["ts"]))
    crashes = _crashes(sup)
    _note_serving_again(crashes, starts)
    return {
        "log_dir": str(log_dir),
        "first_ts": first_ts or None,
        "last_ts": last_ts or None,
        "read": stats.as_dict(),
        "processes": _processes(sup),
        "crashes": crashes,
        "starts": starts,
        "errors": [
            {"actor": a, "code": c, "count": n}
            for (a, c), n in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "error_lines": [
            {"actor": a, "event": e, "count": n}
            for (a, e), n in sorted(error_lines.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "stages": [_stage(key, values) for key, values in sorted(durations.items())],
        "slowest": [_slow(d, line) for d, line in sorted(requests, key=lambda r: -r[0])[:top]],
    }


def _stage(key: tuple[str, str, str], values: list[float]) -> dict[str, Any]:
    values.sort()
    actor, event, name = key
    return {
        "actor": actor,
        "event": event,
        "name": name,
        "count": len(values),
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "p99_ms": percentile(values, 99),
        "max_ms": values[-1],
    }


def _slow(duration: float, line: Line) -> dict[str, Any]:
    d = line.data
    return {
        "request_id": d.get("request_id"),
        "duration_ms": duration,
        "ts": d.get("ts"),
        "program": line.program,
        "route": stage_name(d),
        "status": d.get("status"),
        "error_code": d.get("error_code"),
    }


def _processes(events: list[SupervisorEvent]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for e in events:
        counts = out.setdefault(
            e.program, {"spawned": 0, "restarts": 0, "crashed": 0, "exited": 0, "fatal": 0}
        )
        if e.kind in counts:
            counts[e.kind] += 1
        counts["restarts"] = max(0, counts["spawned"] - 1)
    return dict(sorted(out.items()))


def _crashes(events: list[SupervisorEvent]) -> list[dict[str, Any]]:
    """Unexpected exits, with the pid that died and when the program ran again."""
    pids: dict[str, int] = {}
    crashes: list[dict[str, Any]] = []
    open_crash: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.kind == "spawned":
            pids[e.program] = e.pid
        elif e.kind in ("crashed", "fatal"):
            crash: dict[str, Any] = {
                "ts": e.ts,
                "program": e.program,
                "pid": pids.get(e.program),
                "reason": e.detail,
                "fatal": e.kind == "fatal",
                "running_again_ts": None,
                "down_s": None,
            }
            crashes.append(crash)
            open_crash[e.program] = crash
        elif e.kind == "running" and e.program in open_crash:
            crash = open_crash.pop(e.program)
            crash["running_again_ts"] = e.ts
            began, back = parse_ts(crash["ts"]), parse_ts(e.ts)
            if began is not None and back is not None:
                crash["down_s"] = round(back - began, 3)
    return crashes


def _note_serving_again(crashes: list[dict[str, Any]], starts: list[dict[str, Any]]) -> None:
    """When the program's next process said it was running, and how long after.

    supervisord only reports RUNNING after ``startsecs``; the actor's own line is the
    moment it could serve again.
    """
    for crash in crashes:
        crash["serving_again_ts"] = crash["back_s"] = None
        for start in starts:
            if start["program"] == crash["program"] and str(start["ts"]) > crash["ts"]:
                began, back = parse_ts(crash["ts"]), parse_ts(start["ts"])
                crash["serving_again_ts"] = start["ts"]
                if began is not None and back is not None:
                    crash["back_s"] = round(back - began, 3)
                break


def render_summary(report: dict[str, Any]) -> str:
    read = report["read"]
    out = [
        f"log directory {report['log_dir']}: {read['files']} files, {read['lines']} lines, "
        f"{read['json_lines']} JSON, {read['other_lines']} other, "
        f"{read['truncated_lines']} truncated",
        f"span {report['first_ts']} .. {report['last_ts']}",
        "",
        "processes (supervisord.log)",
    ]
    if report["processes"]:
        out.append(f"  {'program':<18}{'spawned':>8}{'restarts':>9}{'crashed':>8}{'fatal':>6}")
        for name, c in report["processes"].items():
            counts = f"{c['spawned']:>8}{c['restarts']:>9}{c['crashed']:>8}{c['fatal']:>6}"
            out.append(f"  {name:<18}{counts}")
    else:
        out.append("  (no supervisord.log)")
    out += ["", "crashes"]
    for c in report["crashes"]:
        back = "not running again in this log"
        if c["back_s"] is not None:
            back = f"{c['serving_again_ts']} started again ({c['back_s']} s later)"
        elif c["down_s"] is not None:
            back = f"{c['running_again_ts']} RUNNING again ({c['down_s']} s later)"
        out.append(f"  {c['ts']}  {c['program']} pid {c['pid']}: {c['reason']}; {back}")
    if not report["crashes"]:
        out.append("  none")
    out += ["", "actor starts (running lines)"]
    for s in report["starts"]:
        who = f"{s['program']:<16} {s['actor']:<13} pid {s['pid']}"
        out.append(f"  {s['ts']}  {who}  {s['event']}")
    if not report["starts"]:
        out.append("  none")
    out += ["", "errors by actor and code"]
    for e in report["errors"]:
        out.append(f"  {e['actor']:<14}{e['code']:<24}{e['count']:>8}")
    if not report["errors"]:
        out.append("  none")
    if report["error_lines"]:
        out += ["", "error-level lines without a code, by actor and event"]
        for e in report["error_lines"]:
            out.append(f"  {e['actor']:<14} {e['event']:<24}{e['count']:>8}")
    out += [
        "",
        "stages (duration_ms)",
        f"  {'actor':<13}{'event':<9}{'name':<34}{'count':>7}"
        f"{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}",
    ]
    for s in report["stages"]:
        out.append(
            f"  {s['actor']:<13}{s['event']:<9}{s['name']:<34}{s['count']:>7}"
            f"{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['max_ms']:>9.2f}"
        )
    out += ["", "slowest requests (gateway)"]
    for r in report["slowest"]:
        code = f"  {r['error_code']}" if r["error_code"] else ""
        what = f"{r['request_id']}  {r['route']}  {r['status']}{code}"
        out.append(f"  {r['duration_ms']:>9.2f} ms  {what}  {r['ts']}")
    if not report["slowest"]:
        out.append("  none")
    return "\n".join(out) + "\n"


# -- command line ------------------------------------------------------------------------------


def default_log_dir() -> Path:
    return var_dir() / "log"


def main(argv: list[str] | None = None) -> int:
    # --json may come before or after the command; SUPPRESS keeps the later default
    # from overwriting an earlier --json.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="one JSON document"
    )
    parser = argparse.ArgumentParser(
        prog="python -m tools.logtool",
        parents=[common],
        description="Follow a request or summarise a run from userhub's logs.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p_follow = commands.add_parser("follow", parents=[common], help="one request's timeline")
    p_follow.add_argument("request_id")
    p_follow.add_argument("log_dir", nargs="?", type=Path)
    p_summary = commands.add_parser("summary", parents=[common], help="errors, restarts, stages")
    p_summary.add_argument("log_dir", nargs="?", type=Path)
    p_summary.add_argument("--top", type=int, default=10, help="how many slowest requests")
    args = parser.parse_args(argv)
    as_json = getattr(args, "json", False)
    log_dir: Path = args.log_dir or default_log_dir()
    if not log_dir.is_dir():
        print(f"no log directory at {log_dir}", file=sys.stderr)
        return 2
    if args.command == "follow":
        report = follow(log_dir, args.request_id)
        text = render_follow(report)
        found = bool(report["steps"])
    else:
        report = summary(log_dir, top=args.top)
        text = render_summary(report)
        found = True
    if as_json:
        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    else:
        sys.stdout.write(text)
    sys.stdout.flush()
    return 0 if found else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `... | head` closed the pipe
        sys.exit(0)
