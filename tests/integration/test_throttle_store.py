"""actors.cache.throttle_store against a real redis-server: the script's rules.

A redis-server of this module's own (no MariaDB, no actors), so the Lua runs as it
does in a tree: atomicity under concurrent callers, Redis's clock, expiries.
Windows are a fraction of a second so back-off and quiet can be watched happen.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from actors.cache.redis_link import RedisLink
from actors.cache.throttle_store import MAX_KEYS, THROTTLE_PREFIX, ThrottleStore
from actors.wire.errors import InvalidInput
from actors.wire.messages import ThrottleRule
from tests.integration.tree import free_port, wait_until

pytestmark = pytest.mark.integration

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    workdir: Path = tmp_path_factory.mktemp("redis")
    command = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen(
        [*command, "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = ["redis-cli", "-p", str(port), "ping"]
        wait_until(
            lambda: subprocess.run(probe, capture_output=True, timeout=2).stdout == b"PONG\n",
            10,
            "redis-server",
        )
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def link(redis_url: str) -> AsyncIterator[RedisLink]:
    link = RedisLink(redis_url, pool_size=64)
    await link.redis.flushdb()
    try:
        yield link
    finally:
        await link.close()


def rule(key: str, limit: int, window_ms: int, cap_ms: int = 0) -> ThrottleRule:
    return ThrottleRule(key=key, limit=limit, window_ms=window_ms, backoff_cap_ms=cap_ms)


async def test_concurrent_attempts_never_overrun_the_limit(link: RedisLink) -> None:
    stores = [ThrottleStore(link) for _ in range(4)]  # as if four cache_workers
    rules = [rule("p:x@1", 5, 60_000, 900_000), rule("i:1", 100, 60_000, 900_000)]
    waits = await asyncio.gather(*(stores[i % 4].attempt(rules) for i in range(50)))
    assert waits.count(0) == 5
    assert all(55_000 < w <= 60_000 for w in waits if w), "blocked for one window"
    assert await link.redis.hget(THROTTLE_PREFIX + "i:1", "n") == b"5", "refused: not counted"


async def test_back_off_doubles_per_admitted_attempt_and_is_capped(link: RedisLink) -> None:
    store = ThrottleStore(link)
    r = [rule("k", 2, 100, 350)]
    assert await store.attempt(r) == 0
    assert await store.attempt(r) == 0  # the limit-th: blocks for one window
    blocks = []
    for _ in range(4):
        wait = await store.attempt(r)
        blocks.append(wait)
        await asyncio.sleep(wait / 1000 + 0.01)
        assert await store.attempt(r) == 0
    # 100, 200, 350 (cap), 350; each measured just after it was set
    assert [round(b, -1) for b in blocks][:1] == [100]
    assert 180 <= blocks[1] <= 200 and 330 <= blocks[2] <= 350 and 330 <= blocks[3] <= 350


async def test_a_fixed_window_blocks_until_it_ends_then_forgets(link: RedisLink) -> None:
    store = ThrottleStore(link)
    r = [rule("s:1", 2, 300)]
    assert await store.attempt(r) == 0
    await asyncio.sleep(0.1)
    assert await store.attempt(r) == 0
    wait = await store.attempt(r)
    assert 150 <= wait <= 200, "the rest of the window from the first attempt"
    await asyncio.sleep(wait / 1000 + 0.02)
    assert not await link.redis.exists(THROTTLE_PREFIX + "s:1")
    assert await store.attempt(r) == 0


async def test_a_quiet_window_after_a_block_forgets_the_key(link: RedisLink) -> None:
    store = ThrottleStore(link)
    r = [rule("q", 1, 200, 10_000)]
    assert await store.attempt(r) == 0
    ttl = await link.redis.pttl(THROTTLE_PREFIX + "q")
    assert 350 < ttl <= 400, "the block plus one quiet window"


async def test_settling_forgets_and_refunds(link: RedisLink) -> None:
    store = ThrottleStore(link)
    pair, address = rule("p", 3, 60_000, 900_000), rule("i", 3, 60_000, 900_000)
    for _ in range(3):
        assert await store.attempt([pair, address]) == 0
    assert await store.attempt([address]) > 0
    await store.settle([pair.key], [address])
    assert not await link.redis.exists(THROTTLE_PREFIX + "p")
    assert await store.attempt([address]) == 0, "the refund lifted the block it had set"
    assert await store.attempt([address]) > 0
    # A refund of a key that has expired or never was leaves nothing behind.
    await store.settle([], [rule("gone", 3, 1000)])
    assert not await link.redis.exists(THROTTLE_PREFIX + "gone")
    # Refunding the only attempt deletes the key.
    one = rule("one", 3, 60_000)
    await store.attempt([one])
    await store.settle([], [one])
    assert not await link.redis.exists(THROTTLE_PREFIX + "one")


async def test_redis_time_decides_not_the_callers_clock(link: RedisLink) -> None:
    store = ThrottleStore(link)
    await store.attempt([rule("t", 1, 5000, 60_000)])
    raw = await link.redis.hget(THROTTLE_PREFIX + "t", "u")
    assert isinstance(raw, bytes)
    blocked = int(raw)
    seconds, micros = await link.redis.time()
    assert abs(blocked - (seconds * 1000 + micros // 1000 + 5000)) < 1000
    assert abs(blocked / 1000 - time.time() - 5) < 5


async def test_requests_no_gateway_sends_are_refused(link: RedisLink) -> None:
    store = ThrottleStore(link)
    for bad in (
        [rule(f"k{i}", 1, 1000) for i in range(MAX_KEYS + 1)],
        [rule("x" * 161, 1, 1000)],
        [rule("", 1, 1000)],
        [rule("k", 0, 1000)],
        [rule("k", 1, 0)],
        [rule("k", 1, 1000, -1)],
        [rule("k", 1, 8 * 24 * 3600 * 1000)],
    ):
        with pytest.raises(InvalidInput):
            await store.attempt(bad)
    with pytest.raises(InvalidInput):
        await store.settle([f"k{i}" for i in range(MAX_KEYS)], [rule("k", 1, 1000)])
    assert await link.redis.dbsize() == 0
