"""cache_worker: the only actor that touches Redis, in front of the db_workers.

Profile reads are served from Redis; a miss asks a leased db_worker and fills the
cache. Writes (nickname, picture, log out) go to a db_worker first; only after MySQL
has committed is the cache refreshed (set-if-newer) or the session revoked, and only
then does the caller get its answer, so the next read from any gateway sees it.

When Redis is down the worker still answers reads and changes from MySQL, slower
but correct. A log out is the exception: it is acknowledged only once the session's
tombstone is in Redis (actors.cache.profile_cache says why that makes it final), so
while Redis cannot take it the log out answers ``cache_unavailable`` (retriable)
after the MySQL row is already gone, and the client's retry completes it.
"""

from __future__ import annotations

import asyncio
import time
from typing import assert_never

import structlog

from actors.cache.profile_cache import REVOKED, CachedSession, Found, Miss, ProfileCache
from actors.cache.redis_link import RedisLink
from actors.cache.throttle_store import ThrottleStore
from actors.runtime import credentials, lifecycle, metrics
from actors.runtime.config import CacheWorkerConfig
from actors.runtime.leasing import ManagerLink, WorkerPool
from actors.runtime.lifecycle import Lifecycle
from actors.runtime.worker import WorkerServer
from actors.wire import messages
from actors.wire.errors import CacheUnavailable, InvalidInput, Unauthenticated
from actors.wire.messages import CacheWorkerRequest, Message
from actors.wire.roles import CACHE_WORKER
from actors.wire.server import Envelope

log = structlog.get_logger("cache_worker")


class CacheWorker:
    def __init__(self, config: CacheWorkerConfig, life: Lifecycle) -> None:
        self.config = config
        self.redis = RedisLink(
            config.redis_url,
            config.redis_pool_size,
            username=config.redis_username,
            password=config.redis_password,
        )
        self.cache = ProfileCache(self.redis, config.profile_ttl_s)
        self.throttle = ThrottleStore(self.redis)
        identity = credentials.identity(config.common, CACHE_WORKER)
        self.link = ManagerLink(config.common.manager_addr, identity)
        self.db = WorkerPool(self.link, "db_worker", caller="cache_worker", want=config.db_leases)
        self.worker: WorkerServer[CacheWorkerRequest] = WorkerServer(
            CACHE_WORKER,
            CacheWorkerRequest,
            self.handle,
            common=config.common,
            limits=config.limits,
            identity=identity,
            lifecycle=life,
            ready=lambda: self.db.ready,
        )
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

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.db.start()
        await self.worker.start()

    async def stop(self) -> None:
        await self.worker.drain()
        await self.db.close()
        self.link.close()
        await self.redis.close()

    # -- requests ---------------------------------------------------------------------

    async def handle(self, envelope: Envelope[CacheWorkerRequest]) -> Message:
        # WorkerServer logs the "handled" line (duration, error code) for every request.
        match envelope.message:
            case messages.GetProfile(token_hash=token_hash):
                return await self._get_profile(token_hash, envelope)
            case messages.UpdateProfile() as msg:
                return await self._update_profile(msg, envelope)
            case messages.Logout(token_hash=token_hash):
                return await self._logout(token_hash, envelope)
            case messages.ThrottleAttempt(rules=rules):
                wait_ms = await self.throttle.attempt(rules)
                return messages.ThrottleAnswer(retry_after_ms=wait_ms)
            case messages.ThrottleSettle(forget=forget, refund=refund):
                await self.throttle.settle(forget, refund)
                return messages.Ack()
            case messages.Ping():
                return messages.Pong(kind="cache_worker")
            case _ as unreachable:
                assert_never(unreachable)

    # -- reads ------------------------------------------------------------------------

    async def _get_profile(self, token_hash: str, envelope: Envelope[Message]) -> messages.Profile:
        started = time.perf_counter()
        try:
            found, user = await self.cache.get_session_and_user(token_hash, self._idle_s)
            session = self._live(found)
            if session is not None:
                if user is not None:
                    self._hits.inc()
                    self._hit.observe(time.perf_counter() - started)
                    if time.time() - session.last_seen_db >= self._touch_s:
                        self._touch_later(token_hash, session, envelope)
                    return messages.Profile(user=user, cache_hit=True)
        except CacheUnavailable as exc:
            log.warning("cache_bypassed", error=str(exc))
            self._bypass.inc()
            info = await self._resolve(token_hash, envelope)
            return messages.Profile(user=info.user)
        self._misses.inc()
        info = await self._resolve(token_hash, envelope)
        # Only a miss carries what a session fill needs (to be refused after a log
        # out); a live session whose profile was missing gets the profile alone.
        await self._fill(token_hash, info, found if isinstance(found, Miss) else None)
        self._miss.observe(time.perf_counter() - started)
        return messages.Profile(user=info.user)

    async def _resolve(self, token_hash: str, envelope: Envelope[Message]) -> messages.SessionInfo:
        return await self.db.call(
            messages.ResolveSession(token_hash),
            deadline=envelope.deadline,
            trace_id=envelope.trace_id,
        )

    async def _fill(self, token_hash: str, info: messages.SessionInfo, miss: Miss | None) -> None:
        started = time.perf_counter()
        try:
            await self.cache.fill(token_hash, info, miss)
        except CacheUnavailable as exc:
            log.warning("cache_fill_failed", error=str(exc))
        self._write.observe(time.perf_counter() - started)

    def _touch_later(
        self, token_hash: str, session: CachedSession, envelope: Envelope[Message]
    ) -> None:
        """Slide the session's idle expiry in MySQL too, without delaying the answer.

        The note in Redis is a compare-and-set: a log out that lands between the read
        and this write keeps its tombstone (ProfileCache.note_touch)."""

        async def touch() -> None:
            try:
                await self.db.call(
                    messages.TouchSession(token_hash),
                    deadline=time.time() + self.config.common.request_timeout_s,
                    trace_id=envelope.trace_id,
                )
                await self.cache.note_touch(token_hash, session, self._idle_s)
            except Exception as exc:
                log.info("touch_failed", error=str(exc))

        task = asyncio.get_running_loop().create_task(touch())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    def _live(session: Found) -> CachedSession | None:
        """A live cached session, None on a miss; a revoked or expired one is refused."""
        if session == REVOKED:
            raise Unauthenticated("not logged in or the session has ended")
        if isinstance(session, CachedSession):
            if time.time() >= session.expires_at:
                raise Unauthenticated("the session has expired")
            return session
        return None

    async def _session_user(self, token_hash: str, envelope: Envelope[Message]) -> int:
        try:
            session = self._live(await self.cache.get_session(token_hash, self._idle_s))
        except CacheUnavailable:
            session = None
        if session is not None:
            return session.user_id
        return (await self._resolve(token_hash, envelope)).user.user_id

    # -- writes -------------------------------------------------------------------------

    async def _update_profile(
        self, msg: messages.UpdateProfile, envelope: Envelope[Message]
    ) -> messages.Profile:
        if msg.nickname is None and msg.avatar_key is None:
            raise InvalidInput("nothing to change")
        user_id = await self._session_user(msg.token_hash, envelope)
        user = await self.db.call(
            messages.UpdateUser(
                user_id=user_id,
                idempotency_key=msg.idempotency_key,
                nickname=msg.nickname,
                avatar_key=msg.avatar_key,
            ),
            deadline=envelope.deadline,
            trace_id=envelope.trace_id,
        )
        started = time.perf_counter()
        try:
            await self.cache.put_user(user)
        except CacheUnavailable as exc:
            # MySQL has the change. While Redis is down reads bypass it; a Redis that
            # comes back empty (it keeps no data on disk) cannot serve the old copy.
            log.warning("cache_refresh_failed", error=str(exc), user_id=user_id)
        self._write.observe(time.perf_counter() - started)
        return messages.Profile(user=user)

    async def _logout(self, token_hash: str, envelope: Envelope[Message]) -> messages.Ack:
        """Delete the row, then tombstone the cached copy; acknowledge only both.

        A tombstone that Redis did not take (breaker open, a cut, ``READONLY`` after
        a failover, out of memory) fails the log out with ``cache_unavailable``:
        a Redis this worker cannot reach may still hold a live copy that other
        workers serve. The row is already gone and EndSession is idempotent, so
        the client's retry only has the tombstone left to write."""
        await self.db.call(
            messages.EndSession(token_hash), deadline=envelope.deadline, trace_id=envelope.trace_id
        )
        try:
            await self.cache.revoke_session(token_hash, self._idle_s)
        except CacheUnavailable as exc:
            log.warning("logout_not_final", error=str(exc))
            raise CacheUnavailable(
                "the session is ended in the database but the cache did not take its"
                " revocation; retry the log out"
            ) from None
        return messages.Ack()


def main() -> None:
    config = CacheWorkerConfig.from_env()
    lifecycle.run("cache_worker", config.common.log_level, lambda life: CacheWorker(config, life))


if __name__ == "__main__":
    main()
