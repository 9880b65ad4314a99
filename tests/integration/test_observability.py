"""What an operator sees of a real tree: one scrape for the host, logs, the log tool."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.runtime import metrics
from tests.integration.conftest import sign_up_and_log_in
from tests.integration.tree import ROOT, Tree, wait_until
from tools import logtool

pytestmark = pytest.mark.integration

PROGRAM = "db_worker:db_worker_00"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(tree: Tree) -> Samples:
    with urllib.request.urlopen(tree.metrics_url, timeout=10) as r:
        text = r.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


async def test_each_stage_histogram_counts_the_scripted_requests(
    tree: Tree, http: aiohttp.ClientSession
) -> None:
    reads, changes = 5, 3
    before = scrape(tree)
    account = await sign_up_and_log_in(http)  # CreateUser, Login
    for _ in range(reads):  # the first misses the cache and fills it, the rest hit
        async with http.get("/api/v1/profile", headers=account.auth) as r:
            assert r.status == 200
    for i in range(changes):
        async with http.put(
            "/api/v1/profile/nickname", json={"nickname": f"n{i}"}, headers=account.auth
        ) as r:
            assert r.status == 200
    after = scrape(tree)

    def d(name: str, **labels: str) -> float:
        return delta(before, after, name, **labels)

    req = "userhub_http_request_seconds_count"
    assert d(req, route="/api/v1/users", status="201") == 1
    assert d(req, route="/api/v1/login", status="200") == 1
    assert d(req, route="/api/v1/profile", status="200") == reads
    assert d(req, route="/api/v1/profile/nickname", status="200") == changes

    send = "userhub_send_message_seconds_count"
    assert d(send, caller="gateway", kind="db_worker", message="CreateUser") == 1
    assert d(send, caller="gateway", kind="db_worker", message="Login") == 1
    assert d(send, caller="gateway", kind="cache_worker", message="GetProfile") == reads
    assert d(send, caller="gateway", kind="cache_worker", message="UpdateProfile") == changes
    assert d(send, caller="cache_worker", kind="db_worker", message="ResolveSession") == 1
    assert d(send, caller="cache_worker", kind="db_worker", message="UpdateUser") == changes

    # One get/free per attempt: at least one per call, and always as many frees as gets.
    for caller, kind, calls in (
        ("gateway", "db_worker", 2),
        ("gateway", "cache_worker", reads + changes),
        ("cache_worker", "db_worker", 1 + changes),
    ):
        gets = d("userhub_get_connection_seconds_count", caller=caller, kind=kind)
        frees = d("userhub_free_connection_seconds_count", caller=caller, kind=kind)
        assert gets >= calls and frees == gets, (caller, kind)

    db = "userhub_db_query_seconds_count"
    assert d(db, stage="get_user") == 2  # the login's user, the cache miss's session
    assert d(db, stage="session_write") == 1  # the login's new session
    assert d(db, stage="create_user") == 1
    assert d(db, stage="update_user") == changes

    cache = "userhub_cache_seconds_count"
    assert d(cache, stage="hit") == reads - 1
    assert d(cache, stage="miss") == 1
    assert d(cache, stage="write") == 1 + changes  # the miss's fill, then each change
    assert d("userhub_cache_lookups_total", result="hit") == reads - 1
    assert d("userhub_cache_lookups_total", result="miss") == 1

    assert d("userhub_password_hash_seconds_count", op="hash") == 1
    assert d("userhub_password_hash_seconds_count", op="verify") == 1

    # Every histogram is whole: the +Inf bucket is its count.
    for (name, labels), v in after.items():
        if name.endswith("_bucket") and ("le", "+Inf") in labels:
            count = name.removesuffix("_bucket") + "_count"
            assert after[(count, labels - {("le", "+Inf")})] == v, name


def request_lines(log_dir: Path, request_id: str) -> dict[str, list[str]]:
    """Log file name -> the events it logged for ``request_id``."""
    out: dict[str, list[str]] = {}
    for step in logtool.follow(log_dir, request_id)["steps"]:
        out.setdefault(step["actor"], []).append(step["event"])
    return out


async def test_a_request_id_from_the_header_is_in_every_actors_log(
    tree: Tree, http: aiohttp.ClientSession
) -> None:
    account = await sign_up_and_log_in(http)
    async with http.get("/api/v1/profile", headers=account.auth) as r:  # a miss: all three
        assert r.status == 200
        request_id = r.headers["X-Request-ID"]
    assert len(request_id) == 32
    log_dir = tree.var / "log"
    seen = wait_until(
        lambda: (
            lines
            if (lines := request_lines(log_dir, request_id)).keys()
            >= {"gateway", "cache_worker", "db_worker"}
            else None
        ),
        10,
        "the request in all three logs",
    )
    assert seen["gateway"] == ["http"]
    assert seen["cache_worker"] == ["handled"]
    assert seen["db_worker"] == ["handled"]
    for kind in ("gateway", "cache_worker", "db_worker"):
        assert any(request_id in p.read_text() for p in log_dir.glob(f"{kind}_*.log")), kind

    # A failed request names its error code in each log line that saw it.
    async with http.get("/api/v1/profile", headers={"Authorization": "Bearer " + "x" * 43}) as r:
        assert r.status == 401
        failed_id = r.headers["X-Request-ID"]
    steps = wait_until(
        lambda: [s for s in logtool.follow(log_dir, failed_id)["steps"] if s["actor"] == "gateway"],
        10,
        "the failed request in the gateway log",
    )
    assert steps[0]["detail"]["error_code"] == "unauthenticated"


def live_gauge_pids(tree: Tree) -> set[int]:
    directory = Path(tree.env["PROMETHEUS_MULTIPROC_DIR"])
    return {int(p.stem.rsplit("_", 1)[1]) for p in directory.glob("gauge_live*_*.db")}


async def test_after_kill_9_the_scrape_adds_up_and_the_tool_reports_the_crash(
    tree: Tree, http: aiohttp.ClientSession
) -> None:
    account = await sign_up_and_log_in(http)
    for _ in range(3):
        async with http.get("/api/v1/profile", headers=account.auth) as r:
            assert r.status == 200
    wait_until(lambda: tree.status()[PROGRAM][0] == "RUNNING", 15, "db_worker_00 up")
    wait_until(
        lambda: (
            value(scrape(tree), "userhub_pool_connections", actor="db_worker", pool="mysql") == 16
        ),
        15,
        "both db_workers to have their MySQL pools",
    )
    before = scrape(tree)
    pool = 8  # USERHUB_DB_POOL_SIZE in the test tree, per db_worker

    pid = tree.kill9(PROGRAM)
    wait_until(lambda: not metrics.pid_alive(pid), 5, "the killed worker to die")
    right_after = scrape(tree)
    assert pid not in live_gauge_pids(tree), "the scrape leaves no live gauge of a dead pid"
    mysql_pools = value(right_after, "userhub_pool_connections", actor="db_worker", pool="mysql")
    assert mysql_pools in (pool, 2 * pool)  # 16 only if the new worker is already up

    new_pid = tree.wait_restarted(PROGRAM, pid)
    wait_until(
        lambda: (
            value(scrape(tree), "userhub_pool_connections", actor="db_worker", pool="mysql")
            == 2 * pool
        ),
        15,
        "the new db_worker's pool",
    )
    async with http.get("/api/v1/profile", headers=account.auth) as r:
        assert r.status == 200
    await asyncio.sleep(0.2)
    after = scrape(tree)

    # The gauges count the live processes once; the dead one's counts stay, once.
    assert value(after, "userhub_pool_connections", actor="db_worker", pool="mysql") == 2 * pool
    assert delta(before, after, "userhub_process_starts_total", actor="db_worker") == 1
    for name in (
        "userhub_db_query_seconds_count",
        "userhub_http_request_seconds_count",
        "userhub_send_message_seconds_count",
        "userhub_password_hash_seconds_count",
    ):
        assert total(after, name) >= total(before, name), name
    assert all(metrics.pid_alive(p) for p in live_gauge_pids(tree))
    for (_, labels), _v in after.items():
        pids = [int(v) for k, v in labels if k == "pid"]
        assert all(metrics.pid_alive(p) for p in pids), labels

    log_dir = tree.var / "log"
    report = wait_until(
        lambda: (
            (r := logtool.summary(log_dir))["crashes"]
            and any(c["pid"] == pid for c in r["crashes"])
            and r
        ),
        10,
        "the crash in supervisord.log",
    )
    [crash] = [c for c in report["crashes"] if c["pid"] == pid]
    assert crash["program"] == "db_worker_00"
    assert "SIGKILL" in crash["reason"]
    assert report["processes"]["db_worker_00"]["crashed"] >= 1
    starts = Counter(s["pid"] for s in report["starts"] if s["program"] == "db_worker_00")
    assert starts[new_pid] == 1
    assert crash["back_s"] is not None and crash["back_s"] < 5


def test_logtool_runs_as_a_command_on_the_trees_logs(tree: Tree) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tools.logtool", "summary", str(tree.var / "log")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "processes (supervisord.log)" in out
    assert "gateway_00" in out
    assert "GET /api/v1/profile" in out
