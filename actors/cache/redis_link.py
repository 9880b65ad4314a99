"""One cache worker's connection to Redis, behind the circuit breaker.

Two clients share it: redis-py (scripts, writes, pipelines, the probe) and the lean
hiredis path of :mod:`actors.cache.redis_fast` for the hot reads; TLS or socket
URLs keep redis-py for everything. redis-py's own retries are limited to one
reconnect on a broken pooled connection: its default (ten retries with back-off)
would hold a request for seconds.

While Redis is unreachable the breaker fails every call at once
(:class:`CacheUnavailable`: callers go to MySQL) instead of letting each request
pay a connect or read timeout. A background probe pings Redis every half second;
when it answers, the owner's repair hook runs (writes Redis missed while it was
cut off) and only then does the breaker close.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from actors.cache.redis_fast import FastRedis
from actors.runtime.breaker import Breaker
from actors.wire.errors import CacheUnavailable

log = structlog.get_logger("redis_link")

PROBE_EVERY_S = 0.5  # how often an open breaker asks Redis whether it is back

RepairHook = Callable[[aioredis.Redis], Awaitable[None]]


class RedisLink:
    def __init__(
        self,
        url: str,
        pool_size: int,
        *,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        # Credentials in the URL win over ``username`` and ``password`` (which come
        # from a file: actors.runtime.config.RedisTarget), on both clients alike.
        self.redis = aioredis.Redis.from_url(
            url,
            username=username,
            password=password,
            # No CLIENT SETINFO on connect: the ACL user grants only the commands
            # userhub runs (tools.redis_acl), and that one is not among them.
            driver_info=None,
            max_connections=pool_size,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            health_check_interval=30,
            # One reconnect for a pooled connection that a Redis restart broke; a
            # timeout is not retried (a black-holed Redis would cost it again).
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        try:
            self.fast: FastRedis | None = FastRedis(
                url, connections=2, timeout=1.0, username=username, password=password
            )
        except ValueError:
            self.fast = None
        self.breaker = Breaker()  # open until a probe finds Redis back
        self._prober: asyncio.Task[None] | None = None
        self._repairs: list[RepairHook] = []

    def on_repair(self, hook: RepairHook) -> None:
        """Run ``hook`` when Redis is back, before calls go to it again."""
        self._repairs.append(hook)

    @property
    def trips(self) -> int:
        return self.breaker.trips

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
        if self.fast is not None:
            self.fast.close()
        await self.redis.aclose()

    async def call(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        """Run one Redis operation; any failure is CacheUnavailable."""
        if self.breaker.is_open:
            raise CacheUnavailable("Redis is unreachable (circuit open)")
        try:
            return await operation()
        except (RedisConnectionError, RedisTimeoutError, OSError, RuntimeError) as exc:
            # RuntimeError: uvloop's answer to a write on a transport the peer reset.
            self._trip(exc)  # unreachable: stop asking for a moment
            raise CacheUnavailable(f"Redis failed: {exc}") from None
        except RedisError as exc:
            raise CacheUnavailable(f"Redis failed: {exc}") from None

    async def write_or_drop(self, key: str, write: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``write``, which replaces ``key``; if Redis refuses it for want of memory
        (maxmemory-policy noeviction), delete ``key`` instead and return None.

        A refused write must not leave the copy it meant to replace (an old profile)
        for any cache worker to serve: DEL is never refused for memory, and after it
        a read goes to MySQL. (Tombstones are written by a script exempt from the
        memory limit instead: a deleted session could be filled again.)
        """

        async def write_else_delete() -> Any:
            try:
                return await write()
            except RedisError as exc:
                if not out_of_memory(exc):
                    raise
            log.warning("cache_full_key_dropped", key_kind=key[:5])
            await self.redis.delete(key)
            return None

        return await self.call(write_else_delete)

    def read(self, *args: Any) -> Awaitable[Any]:
        """A plain command on the lean path when there is one."""
        if self.fast is not None:
            return self.fast.execute(*args)
        return self.redis.execute_command(*args)  # type: ignore[no-untyped-call]

    def _trip(self, exc: BaseException) -> None:
        if not self.breaker.trip():
            return
        log.warning("cache_circuit_open", error=str(exc), trips=self.breaker.trips)
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        """Ping Redis until it answers, repair what it missed, then close the breaker."""
        started = time.monotonic()
        while True:
            await asyncio.sleep(PROBE_EVERY_S)
            try:
                await self.redis.ping()
                for repair in self._repairs:
                    await repair(self.redis)
            except Exception:  # whatever it was, Redis is not back yet: keep probing
                continue
            self.breaker.close()
            log.info("cache_circuit_closed", down_s=round(time.monotonic() - started, 3))
            return


def out_of_memory(exc: BaseException) -> bool:
    """Redis refused a write because it is full (``-OOM``; from a script, too)."""
    return isinstance(exc, OutOfMemoryError) or str(exc).startswith("OOM ")
