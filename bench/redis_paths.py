"""redis-py's asyncio client against the cache worker's lean path, in one process.

    python -m bench.redis_paths [--ops 20000]

Why actors/cache/redis_fast.py exists: the same GET, against the same Redis
(USERHUB_REDIS_URL), one at a time and 64 at once, through redis-py (the baseline)
and through FastRedis (hiredis on an asyncio Protocol, pipelined). It prints the
wall and CPU time per command and the ratio of the two paths' CPU.

It then times what a cached profile read costs the cache worker in Redis calls: the
whole of ProfileCache.get_session_and_user on a hit (the read script, one round
trip, and parsing what it answers), this process's CPU per read.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
import uvloop

from actors.cache.profile_cache import CachedSession, ProfileCache
from actors.cache.redis_fast import FastRedis
from actors.cache.redis_link import RedisLink
from actors.runtime.stores import RedisTarget
from actors.wire import messages

_KEY = "uh:bench:redis_paths"
_TOKEN_HASH = "be" * 32  # the bench's session: uh:s:bebe...
_USER_ID = 999_999_999  # far from any real user id


async def _time(
    get: Callable[[], Awaitable[object]], ops: int, at_once: int
) -> tuple[float, float]:
    """Microseconds of wall and CPU time per command."""

    async def worker(n: int) -> None:
        for _ in range(n):
            await get()

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(ops // at_once) for _ in range(at_once)))
    done = (ops // at_once) * at_once
    return (time.perf_counter() - wall) / done * 1e6, (time.process_time() - cpu) / done * 1e6


async def compare(target: RedisTarget, ops: int) -> list[dict[str, object]]:
    user, password = target.username, target.password
    client = aioredis.Redis.from_url(
        target.url, max_connections=64, driver_info=None, username=user, password=password
    )
    fast = FastRedis(target.url, connections=2, username=user, password=password)
    # With a TTL, like every key userhub writes: a run cut short leaves nothing for good.
    await client.set(_KEY, b"1|" + b"x" * 120, ex=600)
    rows: list[dict[str, object]] = []
    try:
        for at_once in (1, 64):
            await _time(lambda: client.get(_KEY), ops // 10, at_once)  # warm both paths
            await _time(lambda: fast.execute("GET", _KEY), ops // 10, at_once)
            base_wall, base_cpu = await _time(lambda: client.get(_KEY), ops, at_once)
            lean_wall, lean_cpu = await _time(lambda: fast.execute("GET", _KEY), ops, at_once)
            rows.append(
                {
                    "in_flight": at_once,
                    "redis_py_wall_us": round(base_wall, 1),
                    "redis_py_cpu_us": round(base_cpu, 1),
                    "lean_wall_us": round(lean_wall, 1),
                    "lean_cpu_us": round(lean_cpu, 1),
                    "cpu_ratio_lean_vs_redis_py": round(lean_cpu / base_cpu, 3),
                }
            )
    finally:
        await client.delete(_KEY)
        fast.close()
        await client.aclose()
    return rows


async def cached_read(target: RedisTarget, ops: int) -> list[dict[str, object]]:
    """CPU and wall time per cached profile read (a hit), 1 and 64 at once."""
    link = RedisLink(target.url, 8, username=target.username, password=target.password)
    cache = ProfileCache(link, 3600)
    user = messages.User(
        user_id=_USER_ID, username="bench", nickname="bench", avatar_key=None,
        created_at=0.0, version=1,
    )  # fmt: skip
    skey = f"uh:s:{_TOKEN_HASH}"
    now = time.time()
    rows: list[dict[str, object]] = []
    try:
        await cache.put_user(user)
        await link.redis.set(skey, f"{_USER_ID}|{now + 3600!r}|{now!r}", ex=600)

        async def read() -> None:
            session, found = await cache.get_session_and_user(_TOKEN_HASH, 600)
            if not isinstance(session, CachedSession) or found is None:
                raise RuntimeError("the bench's session is not cached")

        for at_once in (1, 64):
            await _time(read, ops // 10, at_once)  # warm up
            wall, cpu = await _time(read, ops, at_once)
            rows.append({"in_flight": at_once, "wall_us": round(wall, 1), "cpu_us": round(cpu, 1)})
    finally:
        await link.redis.delete(skey, f"uh:u:{_USER_ID}")
        await link.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.redis_paths", description=__doc__.split("\n")[0]
    )
    p.add_argument("--ops", type=int, default=20_000)
    args = p.parse_args(argv)
    target = RedisTarget.from_env()
    for row in uvloop.run(compare(target, max(640, args.ops))):
        print(
            f"{row['in_flight']:>3} in flight: redis-py {row['redis_py_cpu_us']} us CPU "
            f"({row['redis_py_wall_us']} us wall), lean {row['lean_cpu_us']} us CPU "
            f"({row['lean_wall_us']} us wall): {row['cpu_ratio_lean_vs_redis_py']} x the CPU"
        )
    for row in uvloop.run(cached_read(target, max(640, args.ops))):
        print(
            f"{row['in_flight']:>3} in flight: cached profile read (hit) {row['cpu_us']} us CPU"
            f" ({row['wall_us']} us wall)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
