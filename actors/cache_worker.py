"""cache_worker: the only actor that touches Redis, in front of the db_workers.

Profile reads are served from Redis; a miss asks a leased db_worker and fills the
cache. Writes (nickname, picture, log out) go to a db_worker first; only after MySQL
has committed is the cache refreshed (set-if-newer) or the session revoked, and only
then does the caller get its answer, so the next read from any gateway sees it.

When Redis is down the worker still answers from MySQL, slower but correct.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from actors.cache.profile_cache import REVOKED, CachedSession, ProfileCache
from actors.rules import tokens
from actors.runtime import logs, metrics
from actors.runtime.config import CacheWorkerConfig
from actors.runtime.leasing import ManagerLink, WorkerPool
from actors.runtime.worker import WorkerRuntime
from actors.wire import messages, rpc
from actors.wire.errors import CacheUnavailable, CallerError, InvalidInput, Unauthenticated
from actors.wire.messages import Message

log = structlog.get_logger("cache_worker")


class CacheWorker:
    def __init__(self, config: CacheWorkerConfig, cache: ProfileCache, db: WorkerPool) -> None:
        self.config = config
        self.cache = cache
        self.db = db
        self._idle_s = config.sessions.idle_timeout_s
        self._touch_s = config.sessions.touch_interval_s
        self._background: set[asyncio.Task[None]] = set()
        self._hit = metrics.CACHE_SECONDS.labels("hit")
        self._miss = metrics.CACHE_SECONDS.labels("miss")
        self._write = metrics.CACHE_SECONDS.labels("write")
        self._hits = metrics.CACHE_LOOKUPS.labels("hit")
        self._misses = metrics.CACHE_LOOKUPS.labels("miss")
        self._bypass = metrics.CACHE_LOOKUPS.labels("bypass")
        metrics.POOL_SIZE.labels("cache_worker", "redis").set(config.redis_pool_size)

    async def handle(self, request: rpc.Request) -> Message:
        # WorkerRuntime logs the "handled" line (duration, error code) for every request.
        msg = request.message
        if isinstance(msg, messages.GetProfile):
            _check_hash(msg.token_hash)
            reply: Message = await self._get_profile(msg.token_hash, request)
        elif isinstance(msg, messages.UpdateProfile):
            _check_hash(msg.token_hash)
            reply = await self._update_profile(msg, request)
        elif isinstance(msg, messages.Logout):
            _check_hash(msg.token_hash)
            reply = await self._logout(msg.token_hash, request)
        elif isinstance(msg, messages.ThrottleCheck):
            if len(msg.keys) != len(msg.limits) or len(msg.keys) > 8:
                raise InvalidInput("a throttle check needs one limit per key, at most 8 keys")
            wait_ms, counted = await self.cache.throttle_check(msg.keys, msg.limits)
            reply = messages.ThrottleVerdict(retry_after_s=-(-wait_ms // 1000), counted=counted)
        elif isinstance(msg, messages.ThrottleUpdate):
            if len(msg.failed) + len(msg.cleared) > 8:
                raise InvalidInput("a throttle update takes at most 8 keys")
            await self.cache.throttle_update(msg.failed, msg.cleared, msg.window_s)
            reply = messages.Ack()
        elif isinstance(msg, messages.Ping):
            reply = messages.Pong(kind="cache_worker")
        else:
            raise CallerError(f"cache_worker does not handle {type(msg).__name__}")
        return reply

    # -- reads ------------------------------------------------------------------------

    async def _get_profile(self, token_hash: str, request: rpc.Request) -> messages.Profile:
        started = time.perf_counter()
        try:
            found, user = await self.cache.get_session_and_user(token_hash, self._idle_s)
            session = self._live(found)
            if session is not None:
                if user is not None:
                    self._hits.inc()
                    self._hit.observe(time.perf_counter() - started)
                    if time.time() - session.last_seen_db >= self._touch_s:
                        self._touch_later(token_hash, session, request)
                    return messages.Profile(user=user, cache_hit=True)
        except CacheUnavailable as exc:
            log.warning("cache_bypassed", error=str(exc))
            self._bypass.inc()
            info = await self._resolve(token_hash, request)
            return messages.Profile(user=info.user)
        self._misses.inc()
        info = await self._resolve(token_hash, request)
        await self._fill(token_hash, info)
        self._miss.observe(time.perf_counter() - started)
        return messages.Profile(user=info.user)

    async def _resolve(self, token_hash: str, request: rpc.Request) -> messages.SessionInfo:
        reply = await self.db.call(
            messages.ResolveSession(token_hash),
            deadline=request.deadline,
            trace_id=request.trace_id,
        )
        assert isinstance(reply, messages.SessionInfo)
        return reply

    async def _fill(self, token_hash: str, info: messages.SessionInfo) -> None:
        started = time.perf_counter()
        try:
            await self.cache.fill(token_hash, info)
        except CacheUnavailable as exc:
            log.warning("cache_fill_failed", error=str(exc))
        self._write.observe(time.perf_counter() - started)

    def _touch_later(self, token_hash: str, session: CachedSession, request: rpc.Request) -> None:
        """Slide the session's idle expiry in MySQL too, without delaying the answer."""

        async def touch() -> None:
            try:
                await self.db.call(
                    messages.TouchSession(token_hash),
                    deadline=time.time() + self.config.common.request_timeout_s,
                    trace_id=request.trace_id,
                )
                await self.cache.note_touch(token_hash, session, self._idle_s)
            except Exception as exc:
                log.info("touch_failed", error=str(exc))

        task = asyncio.get_running_loop().create_task(touch())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cached_session(self, token_hash: str) -> CachedSession | None:
        """The session Redis holds (None on a miss); a revoked or expired one is refused."""
        return self._live(await self.cache.get_session(token_hash, self._idle_s))

    @staticmethod
    def _live(session: CachedSession | bytes | None) -> CachedSession | None:
        """A live cached session, None on a miss; a revoked or expired one is refused."""
        if session == REVOKED:
            raise Unauthenticated("not logged in or the session has ended")
        if isinstance(session, CachedSession):
            if time.time() >= session.expires_at:
                raise Unauthenticated("the session has expired")
            return session
        return None

    async def _session_user(self, token_hash: str, request: rpc.Request) -> int:
        try:
            session = await self._cached_session(token_hash)
        except CacheUnavailable:
            session = None
        if session is not None:
            return session.user_id
        return (await self._resolve(token_hash, request)).user.user_id

    # -- writes -------------------------------------------------------------------------

    async def _update_profile(
        self, msg: messages.UpdateProfile, request: rpc.Request
    ) -> messages.Profile:
        if msg.nickname is None and msg.avatar_key is None:
            raise InvalidInput("nothing to change")
        user_id = await self._session_user(msg.token_hash, request)
        reply = await self.db.call(
            messages.UpdateUser(
                user_id=user_id,
                idempotency_key=msg.idempotency_key,
                nickname=msg.nickname,
                avatar_key=msg.avatar_key,
            ),
            deadline=request.deadline,
            trace_id=request.trace_id,
        )
        assert isinstance(reply, messages.User)
        started = time.perf_counter()
        try:
            await self.cache.put_user(reply)
        except CacheUnavailable as exc:
            # MySQL has the change. While Redis is down reads bypass it; a Redis that
            # comes back empty (it keeps no data on disk) cannot serve the old copy.
            log.warning("cache_refresh_failed", error=str(exc), user_id=user_id)
        self._write.observe(time.perf_counter() - started)
        return messages.Profile(user=reply)

    async def _logout(self, token_hash: str, request: rpc.Request) -> messages.Ack:
        await self.db.call(
            messages.EndSession(token_hash), deadline=request.deadline, trace_id=request.trace_id
        )
        try:
            await self.cache.revoke_session(token_hash, self._idle_s)
        except CacheUnavailable as exc:
            log.warning("cache_revoke_failed", error=str(exc))
        return messages.Ack()


def _check_hash(token_hash: str) -> None:
    if not tokens.is_token_hash(token_hash):
        raise InvalidInput("malformed token hash")


async def main() -> None:
    config = CacheWorkerConfig.from_env()
    logs.configure("cache_worker", config.common.log_level)
    metrics.started("cache_worker")
    cache = ProfileCache(config.redis_url, config.redis_pool_size, config.profile_ttl_s)
    link = ManagerLink(config.common.manager_addr)
    db = WorkerPool(link, "db_worker", caller="cache_worker", want=config.db_leases)
    db.start()
    worker = CacheWorker(config, cache, db)
    runtime = WorkerRuntime(
        "cache_worker", config.common, config.limits, worker.handle, ready=lambda: db.ready
    )
    await runtime.start()
    await runtime.wait_and_drain()
    await db.close()
    link.close()
    await cache.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
