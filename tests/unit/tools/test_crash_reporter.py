"""The supervisord event listener: protocol, counts, crash loops, odd events."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from tools.crash_reporter import LOOP_EXITS, CrashReporter, parse_fields, serve


def _event(name: str, payload: str, serial: int = 1) -> bytes:
    body = payload.encode()
    header = (
        f"ver:3.0 server:supervisor serial:{serial} pool:crash_reporter poolserial:{serial} "
        f"eventname:{name} len:{len(body)}\n"
    )
    return header.encode() + body


def test_parse_fields() -> None:
    assert parse_fields("processname:db_worker_00 groupname:db_worker pid:12") == {
        "processname": "db_worker_00",
        "groupname": "db_worker",
        "pid": "12",
    }


def test_unexpected_exits_are_counted_and_a_loop_is_flagged() -> None:
    now = [100.0]
    reporter = CrashReporter(clock=lambda: now[0])
    payload = {
        "processname": "db_worker_00",
        "groupname": "db_worker",
        "from_state": "RUNNING",
        "expected": "0",
        "pid": "42",
    }
    level, event, fields = reporter.event("PROCESS_STATE_EXITED", payload) or ("", "", {})
    assert (level, event) == ("warning", "process_crashed")
    assert fields["program"] == "db_worker:db_worker_00"
    assert fields["exited_pid"] == 42 and fields["exits"] == 1
    for _ in range(LOOP_EXITS - 1):
        now[0] += 1
        found = reporter.event("PROCESS_STATE_EXITED", payload)
    assert found is not None and found[1] == "crash_loop"
    assert found[2]["exits_in_window"] == LOOP_EXITS
    # Outside the window the count starts again.
    now[0] += 1000
    found = reporter.event("PROCESS_STATE_EXITED", payload)
    assert found is not None and found[1] == "process_crashed" and found[2]["exits"] == 4


def test_expected_exits_are_quiet_backoff_and_fatal_are_reported() -> None:
    reporter = CrashReporter()
    assert reporter.event("PROCESS_STATE_EXITED", {"processname": "redis", "expected": "1"}) is None
    backoff = reporter.event(
        "PROCESS_STATE_BACKOFF", {"processname": "redis", "groupname": "redis", "tries": "3"}
    )
    assert backoff is not None and backoff[:2] == ("warning", "process_backoff")
    assert backoff[2]["program"] == "redis" and backoff[2]["tries"] == 3
    fatal = reporter.event("PROCESS_STATE_FATAL", {"processname": "redis", "groupname": "redis"})
    assert fatal is not None and fatal[:2] == ("error", "process_fatal")
    assert fatal[2]["backoffs"] == 1 and fatal[2]["fatals"] == 1


def test_serve_speaks_the_listener_protocol() -> None:
    stdin = io.BytesIO(
        _event("PROCESS_STATE_EXITED", "processname:gw groupname:gw from_state:RUNNING "
               "expected:0 pid:7", 1)
        + _event("PROCESS_STATE_FATAL", "processname:gw groupname:gw from_state:BACKOFF", 2)
    )  # fmt: skip
    stdout = io.BytesIO()
    serve(stdin, stdout)
    assert stdout.getvalue() == b"READY\nRESULT 2\nOKREADY\nRESULT 2\nOKREADY\n"


def test_the_program_logs_json_lines_on_stderr() -> None:
    stdin = _event(
        "PROCESS_STATE_EXITED",
        "processname:cache_worker_01 groupname:cache_worker from_state:RUNNING expected:0 pid:9",
    ) + _event("PROCESS_STATE_EXITED", "garbage without fields")
    done = subprocess.run(
        [sys.executable, "-m", "tools.crash_reporter"],
        input=stdin, capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    assert done.stdout.startswith(b"READY\n")
    lines = [json.loads(line) for line in done.stderr.decode().splitlines()]
    crashed = [line for line in lines if line["event"] == "process_crashed"]
    assert crashed[0]["program"] == "cache_worker:cache_worker_01"
    assert crashed[0]["exited_pid"] == 9 and crashed[0]["actor"] == "crash_reporter"
    assert crashed[0]["level"] == "warning" and "ts" in crashed[0]
    # An event without fields is still answered and reported, never fatal to the listener.
    assert len(crashed) == 2 and done.stdout.count(b"RESULT 2\nOK") == 2
