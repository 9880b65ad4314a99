"""The session writes of actors.cache.profile_cache against a real Redis of the test's own.

No tree: a bare redis-server on a free port, stopped and started again where a test
needs Redis to lose its data. Each test drives one interleaving of a read, a touch
or a fill with a log out, step by step, and then reads the key back as the cache
worker would: a logged-out session must read as a tombstone or a miss, never as a
live copy.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from actors.cache import profile_cache
from actors.cache.profile_cache import (
    BOOT_KEY,
    EXISTS,
    OTHER_BOOT,
    REVOKED,
    STORED,
    TOO_OLD,
    CachedSession,
    Miss,
    ProfileCache,
)
from actors.cache.redis_link import RedisLink
from actors.wire import messages
from actors.wire.errors import CacheUnavailable
from tools.ports import free_port

pytestmark = pytest.mark.integration

IDLE_S = 600.0
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class BareRedis:
    """One redis-server without persistence on a fixed loopback port, restartable."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.directory)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, timeout=5
            ).stdout.strip()
            != b"PONG"
        ):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def bare_redis(tmp_path: Path) -> Iterator[BareRedis]:
    server = BareRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def link(bare_redis: BareRedis) -> AsyncIterator[RedisLink]:
    link = RedisLink(bare_redis.url, 4)
    yield link
    await link.close()


@pytest.fixture
async def raw(bare_redis: BareRedis) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's own: what is really in Redis, whatever the cache thinks."""
    client = aioredis.Redis.from_url(bare_redis.url)
    yield client
    await client.aclose()


USER = messages.User(
    user_id=42, username="alice", nickname="Alice", avatar_key=None, created_at=1.0, version=3
)


async def stored(raw: aioredis.Redis, token_hash: str) -> bytes:
    """The session key's value as it really is in Redis (b"" for no key)."""
    value = await raw.get(f"uh:s:{token_hash}")
    assert value is None or isinstance(value, bytes)
    return value or b""


def token(n: int = 0) -> str:
    return f"{n:064x}"


def info_now() -> messages.SessionInfo:
    """What a db_worker's ResolveSession answers for a live session of USER."""
    now = time.time()
    return messages.SessionInfo(
        user=USER, expires_at=now + 3600, last_seen=now, idle_timeout_s=IDLE_S
    )


async def cached_live(cache: ProfileCache, token_hash: str) -> CachedSession:
    """Fill the session after a real miss, and read it back as a hit."""
    found, _ = await cache.get_session_and_user(token_hash, IDLE_S)
    assert isinstance(found, Miss)
    assert await cache.fill(token_hash, info_now(), found) == STORED
    session, user = await cache.get_session_and_user(token_hash, IDLE_S)
    assert isinstance(session, CachedSession) and user == USER
    return session


async def assert_dead(cache: ProfileCache, raw: aioredis.Redis, token_hash: str) -> None:
    """The key holds no live copy: a read finds a tombstone or a miss (MySQL then says no)."""
    found, user = await cache.get_session_and_user(token_hash, IDLE_S)
    assert found == REVOKED or isinstance(found, Miss), found
    assert user is None
    assert await raw.get(f"uh:s:{token_hash}") in (REVOKED, None)


# -- the epoch --------------------------------------------------------------------------


async def test_a_miss_makes_the_epoch_once_and_answers_it(
    link: RedisLink, raw: aioredis.Redis
) -> None:
    cache = ProfileCache(link, 3600)
    assert await raw.get(BOOT_KEY) is None
    first, _ = await cache.get_session_and_user(token(1), IDLE_S)
    second, _ = await cache.get_session_and_user(token(2), IDLE_S)
    assert isinstance(first, Miss) and isinstance(second, Miss)
    assert first.boot == second.boot == await raw.get(BOOT_KEY)
    assert await raw.ttl(BOOT_KEY) == -1  # no TTL: it goes only with Redis's data
    redis_ms = int((await raw.time())[0]) * 1000
    assert abs(first.at_ms - redis_ms) < 5000  # Redis's own clock, in milliseconds
    assert await raw.exists("uh:s:" + token(1)) == 0  # a miss creates no session key


async def test_a_hit_is_still_one_script_and_touches_no_epoch(
    link: RedisLink, raw: aioredis.Redis
) -> None:
    cache = ProfileCache(link, 3600)
    await cached_live(cache, token(3))
    await raw.delete(BOOT_KEY)
    session, user = await cache.get_session_and_user(token(3), IDLE_S)
    assert isinstance(session, CachedSession) and user == USER
    assert await raw.get(BOOT_KEY) is None  # hits never read or make it


# -- a touch racing a log out (the touch used to be SET XX) --------------------------------


async def test_a_touch_after_the_tombstone_leaves_the_tombstone(
    link: RedisLink, raw: aioredis.Redis
) -> None:
    cache = ProfileCache(link, 3600)
    session = await cached_live(cache, token(4))  # the hit that starts a touch
    await cache.revoke_session(token(4), IDLE_S)  # the log out lands meanwhile
    assert await cache.note_touch(token(4), session, IDLE_S) == EXISTS  # the touch ends
    assert await raw.get("uh:s:" + token(4)) == REVOKED
    await assert_dead(cache, raw, token(4))


async def test_a_touch_never_creates_a_key(link: RedisLink, raw: aioredis.Redis) -> None:
    cache = ProfileCache(link, 3600)
    session = await cached_live(cache, token(5))
    await raw.delete("uh:s:" + token(5))  # expired, or lost with a Redis restart
    assert await cache.note_touch(token(5), session, IDLE_S) == EXISTS
    assert await raw.exists("uh:s:" + token(5)) == 0


async def test_a_touch_refreshes_only_the_same_live_session(
    link: RedisLink, raw: aioredis.Redis
) -> None:
    cache = ProfileCache(link, 3600)
    session = await cached_live(cache, token(6))
    before = await stored(raw, token(6))
    assert await cache.note_touch(token(6), session, IDLE_S) == STORED
    after = await stored(raw, token(6))
    assert after != before and after.rsplit(b"|", 1)[0] == before.rsplit(b"|", 1)[0]
    other = CachedSession(user_id=7, expires_at=session.expires_at, last_seen_db=0.0)
    assert await cache.note_touch(token(6), other, IDLE_S) == EXISTS
    assert await stored(raw, token(6)) == after


# -- a fill racing a log out ------------------------------------------------------------------


async def test_a_fill_after_the_tombstone_is_refused(link: RedisLink, raw: aioredis.Redis) -> None:
    cache = ProfileCache(link, 3600)
    miss, _ = await cache.get_session_and_user(token(8), IDLE_S)  # the miss
    assert isinstance(miss, Miss)
    info = info_now()  # MySQL read before the log out deleted the row
    await cache.revoke_session(token(8), IDLE_S)  # the log out
    assert await cache.fill(token(8), info, miss) == EXISTS
    await assert_dead(cache, raw, token(8))


@pytest.mark.parametrize("recreated", [False, True], ids=["epoch-missing", "epoch-new"])
async def test_a_fill_across_a_redis_restart_is_refused(
    bare_redis: BareRedis, link: RedisLink, raw: aioredis.Redis, recreated: bool
) -> None:
    cache = ProfileCache(link, 3600)
    miss, _ = await cache.get_session_and_user(token(9), IDLE_S)
    assert isinstance(miss, Miss)
    info = info_now()
    await cache.revoke_session(token(9), IDLE_S)
    bare_redis.stop()  # no persistence: the tombstone and the epoch are gone
    bare_redis.start()
    await wait_for_redis(cache)
    assert await raw.exists("uh:s:" + token(9)) == 0  # SET NX alone would now succeed
    if recreated:  # another read made the new boot's epoch first
        assert isinstance((await cache.get_session_and_user(token(10), IDLE_S))[0], Miss)
    assert await cache.fill(token(9), info, miss) == OTHER_BOOT
    await assert_dead(cache, raw, token(9))


async def test_a_fill_across_a_flushall_is_refused(link: RedisLink, raw: aioredis.Redis) -> None:
    cache = ProfileCache(link, 3600)
    miss, _ = await cache.get_session_and_user(token(11), IDLE_S)
    assert isinstance(miss, Miss)
    await cache.revoke_session(token(11), IDLE_S)
    await raw.flushall()
    assert await cache.fill(token(11), info_now(), miss) == OTHER_BOOT
    await assert_dead(cache, raw, token(11))


async def test_a_fill_older_than_its_bound_is_refused(link: RedisLink, raw: aioredis.Redis) -> None:
    """A fill that outlived the tombstone's shortest life (a stalled process) is refused."""
    cache = ProfileCache(link, 3600)
    miss, _ = await cache.get_session_and_user(token(12), IDLE_S)
    assert isinstance(miss, Miss)
    stale = Miss(miss.boot, miss.at_ms - int(profile_cache.FILL_MAX_AGE_S * 1000) - 1)
    assert await cache.fill(token(12), info_now(), stale) == TOO_OLD
    assert await raw.exists("uh:s:" + token(12)) == 0
    assert await cache.fill(token(12), info_now(), miss) == STORED  # the fresh one is fine


async def test_a_fill_without_a_miss_writes_the_profile_only(
    link: RedisLink, raw: aioredis.Redis
) -> None:
    cache = ProfileCache(link, 3600)
    assert await cache.fill(token(13), info_now(), None) == EXISTS
    assert await raw.exists("uh:s:" + token(13)) == 0
    assert await cache.get_user(USER.user_id) == USER


# -- a tombstone that Redis does not take fails the log out -----------------------------------


async def test_a_read_only_redis_fails_the_revocation_without_opening_the_breaker(
    link: RedisLink, raw: aioredis.Redis
) -> None:
    """READONLY (a failover left us on a replica) is not a connection error."""
    cache = ProfileCache(link, 3600)
    await cached_live(cache, token(14))
    await raw.replicaof("127.0.0.1", free_port())  # a master nowhere
    try:
        with pytest.raises(CacheUnavailable):
            await cache.revoke_session(token(14), IDLE_S)
        assert not link.breaker.is_open  # so no repair would ever run for it
        assert (await stored(raw, token(14))).startswith(b"42|")  # still live there
    finally:
        await raw.replicaof("NO", "ONE")
    await cache.revoke_session(token(14), IDLE_S)  # the retry, once Redis takes writes
    await assert_dead(cache, raw, token(14))


async def test_an_open_breaker_fails_the_revocation_and_the_repair_tombstones_later(
    bare_redis: BareRedis, link: RedisLink, raw: aioredis.Redis
) -> None:
    cache = ProfileCache(link, 3600)
    await cached_live(cache, token(15))

    async def cut() -> None:
        raise RedisConnectionError("connection reset by peer")

    with pytest.raises(CacheUnavailable):  # a call that found Redis cut off opens the breaker
        await link.call(cut)
    assert link.breaker.is_open
    with pytest.raises(CacheUnavailable):  # so the tombstone is refused at once
        await cache.revoke_session(token(15), IDLE_S)
    assert (await stored(raw, token(15))).startswith(b"42|")  # Redis was only cut off
    # The client may never retry: the repair that runs before the breaker closes
    # writes the tombstone all the same.
    async with asyncio.timeout(10):  # the probe runs every PROBE_EVERY_S
        while True:
            if not link.breaker.is_open:
                break
            await asyncio.sleep(0.05)
    assert await raw.get("uh:s:" + token(15)) == REVOKED


async def wait_for_redis(cache: ProfileCache, timeout: float = 10) -> None:
    """Until a call through the cache's link succeeds (the breaker closes after a probe)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await cache.get_user(0)
                return
            except CacheUnavailable:
                await asyncio.sleep(0.05)
