"""The log analysis tool on a log set written here, with figures known in advance."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tools import logtool
from tools.logtool_read import ReadStats, chain_lines, log_chains

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
RID = "a" * 32


def ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def line(actor: str, pid: int, at: float, event: str, **fields: object) -> str:
    data = {"event": event, "actor": actor, "pid": pid, "level": "info", "ts": ts(at), **fields}
    return json.dumps(data) + "\n"


def sup_line(at: float, text: str) -> str:
    """A supervisord.log line: local time, comma and milliseconds."""
    local = (T0 + timedelta(seconds=at)).astimezone()
    return f"{local:%Y-%m-%d %H:%M:%S},{local.microsecond // 1000:03d} INFO {text}\n"


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    d = tmp_path / "log"
    d.mkdir()
    # gateway: 100 profile reads of 1..100 ms, the followed request among them; the
    # older half sits in the rotated file, and the rotation cut one line in two.
    gw = [line("gateway", 10, 0.0, "running", addr="http://127.0.0.1:8080")]
    for i in range(1, 101):
        rid = RID if i == 42 else f"{i:032x}"
        gw.append(
            line(
                "gateway", 10, 10 + i, "http", request_id=rid, method="GET",
                route="/api/v1/profile", status=200, duration_ms=float(i),
            )
        )  # fmt: skip
    gw.append(
        line(
            "gateway", 10, 200, "http", request_id="b" * 32, method="POST",
            route="/api/v1/login", status=401, duration_ms=150.5,
            error_code="invalid_credentials",
        )
    )  # fmt: skip
    older, newer = "".join(gw[:50]), "".join(gw[50:])
    cut = len(older) - 20  # the last line of the old file continues in the new one
    (d / "gateway_00.log.1").write_text(older[:cut])
    (d / "gateway_00.log").write_text(older[cut:] + newer)
    (d / "gateway_00.log.2").write_text("not json at all, from an older run\n")

    # cache_worker: the followed request, and a second process after a crash
    (d / "cache_worker_00.log").write_text(
        line("cache_worker", 20, 1.0, "running", addr="127.0.0.1:4000")
        + line("cache_worker", 20, 52.0 - 0.001, "handled", request_id=RID,
               message="GetProfile", duration_ms=30.0)
        + "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
        + line("cache_worker", 21, 301.0, "running", addr="127.0.0.1:4001")
    )  # fmt: skip
    # db_worker: the followed request, an error, and a truncated last line
    (d / "db_worker_00.log").write_text(
        line("db_worker", 30, 1.0, "running", addr="127.0.0.1:5000")
        + line("db_worker", 30, 52.0 - 0.011, "handled", request_id=RID,
               message="ResolveSession", duration_ms=5.0)
        + line("db_worker", 30, 199.9, "handled", request_id="b" * 32,
               message="Login", duration_ms=140.0, error_code="invalid_credentials")
        + line("db_worker", 30, 250.0, "handler_failed", level="error")
        + '{"event": "handled", "actor": "db_wor'
    )  # fmt: skip
    (d / "pool_manager.log").write_text(line("pool_manager", 5, 0.5, "running"))
    (d / "supervisord.log").write_text(
        sup_line(0.0, "spawned: 'cache_worker_00' with pid 20")
        + sup_line(1.2, "success: cache_worker_00 entered RUNNING state, process has stayed "
                   "up for > than 1 seconds (startsecs)")
        + sup_line(300.0, "exited: cache_worker_00 (terminated by SIGKILL; not expected)")
        + sup_line(300.2, "spawned: 'cache_worker_00' with pid 21")
        + sup_line(301.5, "success: cache_worker_00 entered RUNNING state, process has stayed "
                   "up for > than 1 seconds (startsecs)")
        + sup_line(302.0, "spawned: 'db_worker_00' with pid 30")
        + "a line supervisord never wrote\n"
        + sup_line(310.0, "exited: db_worker_00 (exit status 0; expected)")
    )  # fmt: skip
    return d


def test_rotated_files_are_read_oldest_first(log_dir: Path) -> None:
    chains = log_chains(log_dir)
    assert [p.name for p in chains["gateway_00"]] == [
        "gateway_00.log.2",
        "gateway_00.log.1",
        "gateway_00.log",
    ]
    assert set(chains) == {"gateway_00", "cache_worker_00", "db_worker_00", "pool_manager",
                           "supervisord"}  # fmt: skip


def test_a_line_cut_by_rotation_is_joined_and_a_truncated_one_counted(tmp_path: Path) -> None:
    (tmp_path / "x.log.1").write_bytes(b'{"a": 1}\n{"b":')
    (tmp_path / "x.log").write_bytes(b' 2}\n{"c": 3}\n{"d"')
    stats = ReadStats()
    lines = list(chain_lines(log_chains(tmp_path)["x"], stats, "x"))
    assert lines == [b'{"a": 1}\n', b'{"b": 2}\n', b'{"c": 3}\n']
    assert stats.truncated == {"x": 1}


def test_follow_orders_the_request_by_start_across_actors(log_dir: Path) -> None:
    report = logtool.follow(log_dir, RID)
    steps = report["steps"]
    assert [s["actor"] for s in steps] == ["gateway", "cache_worker", "db_worker"]
    assert report["actors"] == ["cache_worker", "db_worker", "gateway"]
    # gateway: 42 ms ending at t=52; cache_worker: 30 ms ending 1 ms earlier, and so on.
    assert [s["offset_ms"] for s in steps] == pytest.approx([0.0, 11.0, 26.0], abs=0.01)
    assert steps[0]["detail"]["route"] == "/api/v1/profile"
    assert steps[2]["detail"]["message"] == "ResolveSession"
    text = logtool.render_follow(report)
    assert "db_worker_00" in text and "ResolveSession" in text


def test_follow_of_an_unknown_id_says_so(log_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert logtool.main(["follow", "f" * 32, str(log_dir)]) == 1
    assert "no log line carries this id" in capsys.readouterr().out


def test_summary_figures(log_dir: Path) -> None:
    report = logtool.summary(log_dir, top=3)
    stages = {(s["actor"], s["event"], s["name"]): s for s in report["stages"]}
    reads = stages[("gateway", "http", "GET /api/v1/profile")]
    assert reads["count"] == 100  # the line cut by the rotation is not lost
    assert (reads["p50_ms"], reads["p95_ms"], reads["p99_ms"], reads["max_ms"]) == (
        50.0, 95.0, 99.0, 100.0,
    )  # fmt: skip
    assert stages[("db_worker", "handled", "Login")]["count"] == 1
    assert stages[("cache_worker", "handled", "GetProfile")]["p99_ms"] == 30.0

    assert {(e["actor"], e["code"]): e["count"] for e in report["errors"]} == {
        ("gateway", "invalid_credentials"): 1,
        ("db_worker", "invalid_credentials"): 1,
    }
    assert report["error_lines"] == [{"actor": "db_worker", "event": "handler_failed", "count": 1}]

    assert [r["duration_ms"] for r in report["slowest"]] == [150.5, 100.0, 99.0]
    assert report["slowest"][0]["request_id"] == "b" * 32
    assert report["slowest"][0]["error_code"] == "invalid_credentials"

    assert report["processes"]["cache_worker_00"] == {
        "spawned": 2, "restarts": 1, "crashed": 1, "exited": 0, "fatal": 0,
    }  # fmt: skip
    assert report["processes"]["db_worker_00"]["exited"] == 1
    [crash] = report["crashes"]
    assert crash["program"] == "cache_worker_00"
    assert crash["pid"] == 20
    assert crash["reason"] == "terminated by SIGKILL; not expected"
    assert crash["ts"] == ts(300.0)
    assert crash["down_s"] == pytest.approx(1.5)
    assert crash["back_s"] == pytest.approx(1.0)  # its "running" line at t=301

    starts = [(s["program"], s["pid"], s["event"]) for s in report["starts"]]
    assert starts == [
        ("gateway_00", 10, "running"),
        ("pool_manager", 5, "running"),
        ("cache_worker_00", 20, "running"),
        ("db_worker_00", 30, "running"),
        ("cache_worker_00", 21, "running"),
    ]
    read = report["read"]
    assert read["truncated_by_program"] == {"db_worker_00": 1}
    assert read["other_lines_by_program"] == {"cache_worker_00": 2, "gateway_00": 1}
    assert report["first_ts"] == ts(0.0) and report["last_ts"] == ts(301.0)


def test_summary_text_and_json_from_the_command_line(
    log_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert logtool.main(["summary", str(log_dir)]) == 0
    text = capsys.readouterr().out
    assert "cache_worker_00 pid 20: terminated by SIGKILL; not expected" in text
    assert "invalid_credentials" in text
    assert "GET /api/v1/profile" in text
    assert logtool.main(["summary", str(log_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["crashes"][0]["program"] == "cache_worker_00"
    assert logtool.main(["--json", "follow", RID, str(log_dir)]) == 0
    assert len(json.loads(capsys.readouterr().out)["steps"]) == 3


def test_percentile_is_nearest_rank() -> None:
    assert logtool.percentile([5.0], 99) == 5.0
    assert logtool.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert logtool.percentile([1.0, 2.0, 3.0, 4.0], 95) == 4.0
