"""A log out is final: once acknowledged, no actor serves that token again.

A tree of its own (Redis behind a fault proxy, touches after every hit:
USERHUB_SESSION_TOUCH_S=0) and, in this process, a real CacheWorker of the tree
(its leases on the tree's db_workers, Redis reached directly, past the proxy:
a cache worker that never sees the proxy's outages). Each interleaving is forced
step by step: the in-process worker's own cache calls are held at a gate while
the log out (through the tree's gateways, or the worker's own _logout) runs,
then released. After each, the token is proven dead by real reads: GetProfile
through the in-process worker answers ``unauthenticated`` and GET /api/v1/profile
through the tree's gateways answers 401.

The last test is the attack as it was found: 40 sessions read through the
gateways at the same moment as their log outs; none may work once its log out is
acknowledged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
import redis.asyncio as aioredis

from actors.cache import profile_cache
from actors.cache.profile_cache import EXISTS, OTHER_BOOT, REVOKED, ProfileCache
from actors.cache_worker import CacheWorker
from actors.rules.tokens import hash_token
from actors.runtime.config import CacheWorkerConfig
from actors.runtime.lifecycle import Lifecycle
from actors.wire import messages
from actors.wire.errors import CacheUnavailable, Unauthenticated
from actors.wire.server import Envelope
from tests.integration.fault_proxy import ProxiedTree, proxied_tree
from tests.integration.pages import csrf_tokens, form_log_in, page_token
from tools import redis_acl

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def proxied() -> Iterator[ProxiedTree]:
    with proxied_tree(USERHUB_SESSION_TOUCH_S="0") as p:
        yield p


@pytest.fixture
async def client(proxied: ProxiedTree) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        base_url=proxied.tree.base_url,
        timeout=aiohttp.ClientTimeout(total=15),
        cookie_jar=aiohttp.CookieJar(unsafe=True),
    ) as session:
        yield session


def direct_redis_url(proxied: ProxiedTree) -> str:
    """The tree's Redis URL (its user; the password comes from the tree's file) with the
    proxy's port replaced by Redis's."""
    parts = urlsplit(proxied.tree.env["USERHUB_REDIS_URL"])
    host = parts.netloc.rpartition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{host}:{proxied.tree.env['USERHUB_REDIS_PORT']}"))


@pytest.fixture
async def raw(proxied: ProxiedTree) -> AsyncIterator[aioredis.Redis]:
    """What is really in Redis, past the proxy (as its admin user)."""
    admin = redis_acl.admin_target(proxied.tree.config)
    client = aioredis.Redis.from_url(admin.url, username=admin.username, password=admin.password)
    yield client
    await client.aclose()


@pytest.fixture
async def worker(
    proxied: ProxiedTree, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[CacheWorker]:
    """A cache worker of the tree in this process; its server is never started."""
    for name, value in proxied.tree.env.items():
        if name.startswith("USERHUB_"):
            monkeypatch.setenv(name, value)
    # The fills here are held at gates for a while: only the epoch and the tombstone
    # may refuse them (the age bound has its own test in test_session_scripts.py).
    monkeypatch.setattr(profile_cache, "FILL_MAX_AGE_S", 600.0)
    config = dataclasses.replace(CacheWorkerConfig.from_env(), redis_url=direct_redis_url(proxied))
    cache_worker = CacheWorker(config, Lifecycle("cache_worker"))
    cache_worker.db.start()
    try:
        async with asyncio.timeout(20):
            while True:  # leased a db_worker and connected to it
                if cache_worker.db.ready:
                    break
                await asyncio.sleep(0.05)
        yield cache_worker
    finally:
        await asyncio.gather(*cache_worker._background, return_exceptions=True)
        await cache_worker.db.close()
        cache_worker.link.close()
        await cache_worker.redis.close()


# -- helpers ------------------------------------------------------------------------------


@dataclasses.dataclass
class Account:
    username: str
    password: str
    token: str

    @property
    def hash(self) -> str:
        token_hash = hash_token(self.token)
        assert token_hash is not None
        return token_hash

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def new_account(client: aiohttp.ClientSession) -> Account:
    username, password = f"l{uuid.uuid4().hex[:12]}", f"pw-{uuid.uuid4().hex}"
    body = {"username": username, "password": password, "nickname": "Finality"}
    async with client.post("/api/v1/users", json=body) as r:
        assert r.status == 201, await r.text()
    async with client.post("/api/v1/login", json={"username": username, "password": password}) as r:
        assert r.status == 200, await r.text()
        return Account(username, password, (await r.json())["token"])


async def http_read(client: aiohttp.ClientSession, account: Account) -> int:
    async with client.get("/api/v1/profile", headers=account.auth) as r:
        await r.read()
        return r.status


async def http_log_out(client: aiohttp.ClientSession, account: Account) -> int:
    async with client.post("/api/v1/logout", headers=account.auth) as r:
        await r.read()
        return r.status


def envelope(message: messages.Message) -> Envelope[Any]:
    return Envelope(message, time.time() + 5, uuid.uuid4().hex, "test", "gateway")


async def worker_read(worker: CacheWorker, account: Account) -> messages.Message:
    return await worker.handle(envelope(messages.GetProfile(account.hash)))


async def assert_dead(worker: CacheWorker, client: aiohttp.ClientSession, account: Account) -> None:
    """Real reads, through this worker and through every gateway, all refuse the token."""
    await asyncio.gather(*worker._background, return_exceptions=True)  # late touches land
    with pytest.raises(Unauthenticated):
        await worker_read(worker, account)
    for _ in range(4):
        assert await http_read(client, account) == 401


class Gate:
    """Holds one method of the worker's ProfileCache until released; keeps its answers."""

    def __init__(self, cache: ProfileCache, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.answers: list[object] = []
        real: Callable[..., Awaitable[object]] = getattr(cache, name)

        async def held(*args: object, **kwargs: object) -> object:
            self.reached.set()
            async with asyncio.timeout(60):
                await self.release.wait()
            answer = await real(*args, **kwargs)
            self.answers.append(answer)
            return answer

        monkeypatch.setattr(cache, name, held)

    async def wait_reached(self) -> None:
        async with asyncio.timeout(15):
            await self.reached.wait()


async def cached(client: aiohttp.ClientSession, account: Account) -> None:
    """Read twice through the gateways: the session and profile are in Redis after."""
    for _ in range(2):
        assert await http_read(client, account) == 200


async def wait_for_redis(worker: CacheWorker, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                await worker.cache.get_user(0)
                return
            except CacheUnavailable:
                await asyncio.sleep(0.05)


# -- one interleaving at a time -----------------------------------------------------------


async def test_reads_before_during_and_after_a_log_out(
    worker: CacheWorker,
    client: aiohttp.ClientSession,
    raw: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = await new_account(client)
    await cached(client, account)
    before = await worker_read(worker, account)  # before: a hit
    assert isinstance(before, messages.Profile) and before.cache_hit
    # During: the log out has deleted the row and not yet written the tombstone.
    gate = Gate(worker.cache, "revoke_session", monkeypatch)
    logout = asyncio.create_task(worker.handle(envelope(messages.Logout(account.hash))))
    await gate.wait_reached()
    during = await worker_read(worker, account)
    assert isinstance(during, messages.Profile)  # served: nothing is acknowledged yet
    assert not logout.done()
    gate.release.set()
    assert isinstance(await logout, messages.Ack)  # acknowledged only now
    assert await raw.get(f"uh:s:{account.hash}") == REVOKED
    await assert_dead(worker, client, account)  # after
    assert await raw.get(f"uh:s:{account.hash}") == REVOKED  # the reads' touches kept it


async def test_a_touch_that_ends_after_the_log_out_keeps_the_tombstone(
    worker: CacheWorker,
    client: aiohttp.ClientSession,
    raw: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attack's interleaving: hit, touch under way, log out, then the touch's write."""
    account = await new_account(client)
    await cached(client, account)
    gate = Gate(worker.cache, "note_touch", monkeypatch)
    hit = await worker_read(worker, account)  # starts a touch (touch interval 0)
    assert isinstance(hit, messages.Profile) and hit.cache_hit
    await gate.wait_reached()  # MySQL was touched; the write to Redis is next
    assert await http_log_out(client, account) == 204
    gate.release.set()
    await asyncio.gather(*worker._background)
    assert gate.answers == [EXISTS]  # it found no live copy, so it wrote nothing
    assert await raw.get(f"uh:s:{account.hash}") == REVOKED
    await assert_dead(worker, client, account)


async def test_a_refill_whose_miss_came_before_the_log_out_is_refused(
    worker: CacheWorker,
    client: aiohttp.ClientSession,
    raw: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = await new_account(client)  # never read: not in Redis
    gate = Gate(worker.cache, "fill", monkeypatch)
    read = asyncio.create_task(worker_read(worker, account))
    await gate.wait_reached()  # missed in Redis, resolved in MySQL before the log out
    assert await http_log_out(client, account) == 204
    gate.release.set()
    assert isinstance(await read, messages.Profile)  # it began before the log out
    assert gate.answers == [EXISTS]  # NX met the tombstone
    assert await raw.get(f"uh:s:{account.hash}") == REVOKED
    await assert_dead(worker, client, account)


async def test_a_refill_across_a_redis_restart_is_refused(
    proxied: ProxiedTree,
    worker: CacheWorker,
    client: aiohttp.ClientSession,
    raw: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = await new_account(client)
    gate = Gate(worker.cache, "fill", monkeypatch)
    read = asyncio.create_task(worker_read(worker, account))
    await gate.wait_reached()
    assert await http_log_out(client, account) == 204
    # Redis keeps nothing on disk: the tombstone (and the epoch) go with the restart.
    await asyncio.to_thread(proxied.tree.ctl, "restart", "redis", check=True)
    await wait_for_redis(worker)
    assert await raw.exists(f"uh:s:{account.hash}") == 0  # SET NX alone would succeed now
    gate.release.set()
    await read
    assert gate.answers == [OTHER_BOOT]
    assert await raw.exists(f"uh:s:{account.hash}") == 0
    await assert_dead(worker, client, account)


async def test_a_log_out_whose_tombstone_fails_is_not_acknowledged_until_retried(
    proxied: ProxiedTree,
    worker: CacheWorker,
    client: aiohttp.ClientSession,
    raw: aioredis.Redis,
) -> None:
    """Redis cut off from the tree's workers, not restarted: it still holds the session."""
    account = await new_account(client)
    await cached(client, account)
    await asyncio.to_thread(proxied.redis.set_mode, "blackhole")
    try:
        async with client.post("/api/v1/logout", headers=account.auth) as r:
            assert r.status == 503, await r.text()
            assert (await r.json())["error"]["code"] == "cache_unavailable"
            assert r.headers["Retry-After"] == "1"
        # Why it must not be acknowledged: the copy is live where Redis still holds
        # it, and a cache worker that reaches that Redis serves it.
        live = await raw.get(f"uh:s:{account.hash}")
        assert isinstance(live, bytes) and live.split(b"|")[0].isdigit(), live
        served = await worker_read(worker, account)
        assert isinstance(served, messages.Profile) and served.cache_hit
    finally:
        await asyncio.to_thread(proxied.redis.set_mode, "pass")
    assert await retry_log_out(client, account) == 204
    assert await raw.get(f"uh:s:{account.hash}") == REVOKED
    await assert_dead(worker, client, account)


async def retry_log_out(client: aiohttp.ClientSession, account: Account) -> int:
    """Log out as a client should: again after Retry-After while 503, for at most 20 s."""
    async with asyncio.timeout(20):
        while True:
            async with client.post("/api/v1/logout", headers=account.auth) as r:
                if r.status != 503:
                    return r.status
                wait = float(r.headers["Retry-After"])
            await asyncio.sleep(wait)


async def test_the_log_out_form_says_so_when_it_is_not_final(
    proxied: ProxiedTree, worker: CacheWorker, client: aiohttp.ClientSession
) -> None:
    account = await new_account(client)
    await form_log_in(client, account.username, account.password)
    cookie = next(c for c in client.cookie_jar if c.key == "userhub_session")
    browser = Account(account.username, account.password, cookie.value)
    token = await page_token(client, "/profile")
    await asyncio.to_thread(proxied.redis.set_mode, "blackhole")
    try:
        async with client.post("/logout", data={"csrf_token": token}, allow_redirects=False) as r:
            html = await r.text()
            assert r.status == 503, html
            assert r.headers["Retry-After"] == "1"
            assert r.content_type == "text/html"
            assert "You are not logged out yet" in html and 'id="logout-again"' in html
            assert "userhub_session" not in r.cookies  # the cookie stays for the retry
        retry_token = csrf_tokens(html)[0]
    finally:
        await asyncio.to_thread(proxied.redis.set_mode, "pass")
    await wait_for_redis(worker)
    async with asyncio.timeout(20):
        while True:  # the button again, until the tree's workers reach Redis again
            async with client.post(
                "/logout", data={"csrf_token": retry_token}, allow_redirects=False
            ) as r:
                if r.status != 503:
                    break
            await asyncio.sleep(1)
    assert r.status == 303 and r.headers["Location"] == "/login?m=logged_out"
    await assert_dead(worker, client, browser)


# -- the attack as found ------------------------------------------------------------------


async def test_forty_sessions_read_while_they_log_out_are_all_dead_after(
    client: aiohttp.ClientSession,
) -> None:
    accounts = [await new_account(client) for _ in range(40)]
    for account in accounts:
        await cached(client, account)  # every hit now starts a touch (interval 0)

    async def race(account: Account) -> int:
        """Reads back to back from before the log out until it is acknowledged."""
        acknowledged = asyncio.Event()

        async def reader() -> None:
            while not acknowledged.is_set():
                await http_read(client, account)

        readers = [asyncio.create_task(reader()) for _ in range(3)]
        await asyncio.sleep(0)  # the reads are under way first
        status = await http_log_out(client, account)
        acknowledged.set()
        await asyncio.gather(*readers)
        return status

    assert await asyncio.gather(*(race(a) for a in accounts)) == [204] * 40
    usable: list[str] = []
    for _ in range(3):  # now, and after any touch still in flight would have landed
        statuses = await asyncio.gather(*(http_read(client, a) for a in accounts))
        usable += [a.username for a, s in zip(accounts, statuses, strict=True) if s != 401]
        await asyncio.sleep(0.5)
    assert usable == [], f"{len(set(usable))} of 40 sessions still work after their log out"
