"""Redis and MariaDB failing under load, on a tree of its own behind fault proxies.

Redis down (stopped or cut off): profile reads and writes still succeed, from
MariaDB, without paying Redis timeouts on every request, and the cache serves again
once Redis is back, never an old copy of a profile changed meanwhile. MariaDB down:
fast 503 ``database_unavailable`` with Retry-After, never a hang, and everything is
200 again within seconds of its return with no connection leaked. A kill -9 is
reported by the crash reporter.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest

from actors.runtime.stores import MysqlDsn
from actors.web.views import PUBLIC_MESSAGES
from chaos.run import mysql_connections
from tests.integration.fault_proxy import ProxiedTree, proxied_tree
from tests.integration.pages import page_token
from tests.integration.tree import wait_until

pytestmark = pytest.mark.integration

# A request during a dependency outage must fail (or succeed) within this.
FAST_S = 2.5


@pytest.fixture(scope="module")
def proxied() -> Iterator[ProxiedTree]:
    with proxied_tree() as p:
        yield p


@pytest.fixture
async def client(proxied: ProxiedTree) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        base_url=proxied.tree.base_url, timeout=aiohttp.ClientTimeout(total=15)
    ) as session:
        yield session


@dataclass
class User:
    username: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def new_user(client: aiohttp.ClientSession) -> User:
    username, password = f"f{uuid.uuid4().hex[:12]}", f"pw-{uuid.uuid4().hex}"
    body = {"username": username, "password": password, "nickname": "before"}
    async with client.post("/api/v1/users", json=body) as r:
        assert r.status == 201, await r.text()
    async with client.post("/api/v1/login", json={"username": username, "password": password}) as r:
        assert r.status == 200, await r.text()
        return User(username, password, (await r.json())["token"])


@dataclass
class Answer:
    kind: str
    started: float
    seconds: float
    status: int
    code: str = ""
    retry_after: str | None = None


@dataclass
class Load:
    answers: list[Answer] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.started < end]

    def failed(self, start: float = 0.0, end: float = float("inf")) -> list[Answer]:
        return [a for a in self.between(start, end) if a.status != 200]


async def run_load(
    client: aiohttp.ClientSession,
    users: list[User],
    stop: asyncio.Event,
    load: Load,
    *,
    logins: bool = False,
    concurrency: int = 8,
) -> None:
    """Reads, nickname writes (and logins) without retries: every answer is recorded."""
    counter = itertools.count()

    async def one(n: int) -> None:
        kind = ("write", "read", "read", "login" if logins else "read")[n % 4]
        # Logins take turns over the users: the throttle lets at most its pair limit
        # of one account's logins from one address be in flight at once (it counts
        # them before the hash), and a MySQL outage keeps every loop in a login.
        user = users[(n // 4 if kind == "login" else n) % len(users)]
        if kind == "write":
            request = client.put(
                "/api/v1/profile/nickname", json={"nickname": f"n{n}"}, headers=user.auth
            )
        elif kind == "login":
            request = client.post(
                "/api/v1/login", json={"username": user.username, "password": user.password}
            )
        else:
            request = client.get("/api/v1/profile", headers=user.auth)
        started = time.monotonic()
        try:
            async with request as r:
                body = await r.json(content_type=None)
                code = body.get("error", {}).get("code", "") if isinstance(body, dict) else ""
                load.answers.append(
                    Answer(kind, started, time.monotonic() - started, r.status, code,
                           r.headers.get("Retry-After"))
                )  # fmt: skip
        except (aiohttp.ClientError, TimeoutError) as exc:
            load.answers.append(Answer(kind, started, time.monotonic() - started, 0, repr(exc)))

    async def loop() -> None:
        while not stop.is_set():
            await one(next(counter))
            await asyncio.sleep(0.005)

    await asyncio.gather(*(loop() for _ in range(concurrency)))


async def cache_hits(client: aiohttp.ClientSession, metrics_url: str) -> float:
    async with client.get(metrics_url) as r:
        text = await r.text()
    found = re.search(r'^userhub_cache_lookups_total\{result="hit"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def summary(answers: list[Answer]) -> str:
    by = sorted({(a.kind, a.status, a.code) for a in answers})
    slowest = max((a.seconds for a in answers), default=0.0)
    return f"{len(answers)} answers, kinds {by}, slowest {slowest:.3f}s"


async def wait_all_ok(client: aiohttp.ClientSession, users: list[User], timeout: float) -> float:
    """Seconds until a profile read and a write succeed for every user in a row."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        ok = True
        for user in users:
            async with client.put(
                "/api/v1/profile/nickname", json={"nickname": "probe"}, headers=user.auth
            ) as r:
                ok = ok and r.status == 200
            async with client.get("/api/v1/profile", headers=user.auth) as r:
                ok = ok and r.status == 200
        if ok:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"not everything answered 200 within {timeout}s")


# -- Redis --------------------------------------------------------------------------------


async def test_redis_stopped_under_load_reads_and_writes_still_succeed(
    proxied: ProxiedTree, client: aiohttp.ClientSession
) -> None:
    tree = proxied.tree
    users = [await new_user(client) for _ in range(4)]
    load, stop = Load(), asyncio.Event()
    task = asyncio.create_task(run_load(client, users, stop, load))
    try:
        await asyncio.sleep(1.0)
        down_at = time.monotonic()
        assert "stopped" in await asyncio.to_thread(tree.ctl, "stop", "redis")
        await asyncio.sleep(3.0)
        up_at = time.monotonic()
    finally:
        await asyncio.to_thread(tree.ctl, "start", "redis")
    await asyncio.sleep(2.0)
    stop.set()
    await task
    during = load.between(down_at, up_at)
    assert {a.kind for a in during} == {"read", "write"}
    assert load.failed() == [], summary(load.failed())
    assert max(a.seconds for a in during) < FAST_S, summary(during)
    # Once Redis is back the cache serves again: hits grow and reads see the last write.
    before = await cache_hits(client, proxied.tree.metrics_url)
    for user in users:
        async with client.put(
            "/api/v1/profile/nickname", json={"nickname": "after"}, headers=user.auth
        ) as r:
            assert r.status == 200
        for _ in range(3):
            async with client.get("/api/v1/profile", headers=user.auth) as r:
                assert (await r.json())["nickname"] == "after"
    assert await cache_hits(client, proxied.tree.metrics_url) > before


async def test_redis_black_hole_reads_still_served_and_nothing_stale_after(
    proxied: ProxiedTree, client: aiohttp.ClientSession
) -> None:
    users = [await new_user(client) for _ in range(4)]
    for user in users:  # the cache holds every profile with the nickname "before"
        for _ in range(2):
            async with client.get("/api/v1/profile", headers=user.auth) as r:
                assert (await r.json())["nickname"] == "before"
    load, stop = Load(), asyncio.Event()
    task = asyncio.create_task(run_load(client, users[1:], stop, load))
    try:
        await asyncio.sleep(0.5)
        cut_at = time.monotonic()
        await asyncio.to_thread(proxied.redis.set_mode, "blackhole")
        # Changed while Redis is unreachable: MySQL has it, Redis keeps the old copy.
        async with client.put(
            "/api/v1/profile/nickname", json={"nickname": "changed"}, headers=users[0].auth
        ) as r:
            assert r.status == 200, await r.text()
        async with client.get("/api/v1/profile", headers=users[0].auth) as r:
            assert (await r.json())["nickname"] == "changed"
        await asyncio.sleep(3.0)
        healed_at = time.monotonic()
    finally:
        await asyncio.to_thread(proxied.redis.set_mode, "pass")
    await asyncio.sleep(1.5)
    stop.set()
    await task
    during = load.between(cut_at, healed_at)
    assert len(during) > 50
    assert load.failed() == [], summary(load.failed())
    # Only requests caught by the cut pay Redis's 1 s read timeout, then the breaker
    # answers at once.
    assert max(a.seconds for a in during) < FAST_S, summary(during)
    assert sorted(a.seconds for a in during)[len(during) // 2] < 0.2, summary(during)
    # After the cut heals the old copy is never served, and the cache serves again.
    before = await cache_hits(client, proxied.tree.metrics_url)
    for _ in range(10):
        async with client.get("/api/v1/profile", headers=users[0].auth) as r:
            assert (await r.json())["nickname"] == "changed"
    assert await cache_hits(client, proxied.tree.metrics_url) > before


# -- MariaDB ------------------------------------------------------------------------------


async def test_mysql_restarted_under_load_fails_fast_and_recovers(
    proxied: ProxiedTree, client: aiohttp.ClientSession
) -> None:
    tree = proxied.tree
    users = [await new_user(client) for _ in range(4)]
    load, stop = Load(), asyncio.Event()
    task = asyncio.create_task(run_load(client, users, stop, load, logins=True))
    try:
        await asyncio.sleep(1.0)
        restart_at = time.monotonic()
        out = await asyncio.to_thread(tree.ctl, "restart", "mysql")
        back_at = time.monotonic()
        assert "started" in out, out
        recovery = await wait_all_ok(client, users, timeout=10)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await task
    during = load.between(restart_at, back_at)
    failed = load.failed(restart_at, back_at + recovery)
    assert failed, "the restart went unnoticed: " + summary(during)
    # Never a hang: every answer, good or bad, came fast.
    assert max(a.seconds for a in load.answers) < FAST_S, summary(load.answers)
    for answer in failed:
        assert (answer.status, answer.code) == (503, "database_unavailable"), answer
        assert answer.retry_after == "1", answer
    # Everything is 200 again within seconds, and stays so.
    assert recovery < 5.0
    assert load.failed(back_at + recovery + 0.5) == [], summary(load.failed(back_at + recovery))
    # No connection leaked: MariaDB holds at most what the live db_workers were granted.
    granted = tree.workers().mysql_granted
    connected = await asyncio.to_thread(mysql_connections, MysqlDsn.from_env(tree.env))
    assert 0 < connected <= granted


async def test_mysql_black_hole_fails_fast_then_recovers(
    proxied: ProxiedTree, client: aiohttp.ClientSession
) -> None:
    users = [await new_user(client) for _ in range(2)]
    try:
        await asyncio.to_thread(proxied.mysql.set_mode, "blackhole")
        started = time.monotonic()
        async with client.put(
            "/api/v1/profile/nickname", json={"nickname": "lost"}, headers=users[0].auth
        ) as r:
            seconds = time.monotonic() - started
            assert r.status == 503, await r.text()
            assert (await r.json())["error"]["code"] == "database_unavailable"
            assert r.headers["Retry-After"] == "1"
        assert seconds < FAST_S  # the op timeout, not the 5 s request deadline
    finally:
        await asyncio.to_thread(proxied.mysql.set_mode, "pass")
    assert await wait_all_ok(client, users, timeout=10) < 5.0


def gateway_line(proxied: ProxiedTree, request_id: str) -> dict[str, object] | None:
    """The gateway's log line for one request, if it is written yet."""
    for path in (proxied.tree.var / "log").glob("gateway_*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if request_id in line and line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == "http" and entry.get("request_id") == request_id:
                    return dict(entry)
    return None


async def test_an_outage_is_told_in_plain_words_and_logged_in_detail(
    proxied: ProxiedTree, client: aiohttp.ClientSession
) -> None:
    """A 503 names no server, address or exception; the request's log line does."""
    user = await new_user(client)
    browser = aiohttp.ClientSession(
        base_url=proxied.tree.base_url,
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=15),
    )
    async with browser:
        token = await page_token(browser, "/login")
        credentials = {"username": user.username, "password": user.password}
        try:
            await asyncio.to_thread(proxied.mysql.set_mode, "blackhole")
            async with client.post("/api/v1/login", json=credentials) as r:
                api_status, api_body = r.status, await r.text()
                api_id = r.headers["X-Request-ID"]
            async with browser.post(
                "/login", data={"csrf_token": token, **credentials}, allow_redirects=False
            ) as r:
                page_status, page_body = r.status, await r.text()
                page_id, page_retry = r.headers["X-Request-ID"], r.headers.get("Retry-After")
        finally:
            await asyncio.to_thread(proxied.mysql.set_mode, "pass")
    assert api_status == 503, api_body
    assert json.loads(api_body)["error"] == {
        "code": "database_unavailable",
        "message": PUBLIC_MESSAGES["database_unavailable"],
    }
    assert page_status == 503 and page_retry == "1", page_body[:500]
    shown = PUBLIC_MESSAGES["database_unavailable"]
    assert 'data-code="database_unavailable"' in page_body
    assert shown[:1].upper() + shown[1:] in page_body  # the page starts it with a capital
    for text in (api_body, page_body):
        for word in ("MySQL", "mysql", "Redis", "Traceback", "cannot reach", "did not answer"):
            assert word not in text, (word, text[:500])
    for request_id in (api_id, page_id):
        line = await asyncio.to_thread(
            wait_until, lambda rid=request_id: gateway_line(proxied, rid), 10, "the log line"
        )
        assert line["error_code"] == "database_unavailable", line
        assert "MySQL" in str(line["error_detail"]), line


# -- crashes ---------------------------------------------------------------------------


def _reported(path: object, event: str, program: str) -> list[dict[str, object]]:
    try:
        with open(str(path)) as f:
            lines = [json.loads(line) for line in f if line.startswith("{")]
    except FileNotFoundError:
        return []
    return [x for x in lines if x.get("event") == event and x.get("program") == program]


async def test_crash_reporter_logs_a_kill_9(proxied: ProxiedTree) -> None:
    tree = proxied.tree
    program = "gateway:gateway_01"
    log_path = tree.var / "log" / "crash_reporter.log"
    seen = len(_reported(log_path, "process_crashed", program))
    pid = await asyncio.to_thread(tree.kill9, program)
    lines = await asyncio.to_thread(
        wait_until,
        lambda: _reported(log_path, "process_crashed", program)[seen:],
        10,
        "the crash reporter's line",
    )
    assert lines[0]["exited_pid"] == pid
    assert lines[0]["level"] == "warning" and lines[0]["exits"] == seen + 1
    await asyncio.to_thread(tree.wait_restarted, program, pid)
    await asyncio.to_thread(wait_until, tree.ready, 10, "the tree to be ready again")
