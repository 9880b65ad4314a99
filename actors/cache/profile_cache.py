"""The Redis side of the cache worker: sessions and profiles, written so they stay right.

Keys (all single-key operations, so a Redis Cluster works as well):

* ``uh:s:<token hash>`` -> ``"<user id>|<absolute expiry>|<last seen in MySQL>"``, or
  ``"revoked"`` after a log out. Its TTL is the idle timeout and slides with every hit;
  the absolute expiry is checked in code. A fill uses SET NX, so a read that raced a
  log out can never bring the session back over its tombstone.
* ``uh:u:<user id>`` -> ``"<version>|<profile JSON>"``. Writers and fills go through a
  script that only replaces a lower version, so a slow fill never overwrites a newer
  change: the cache converges on the highest version MySQL has acknowledged.

Every call goes through the worker's :class:`~actors.cache.redis_link.RedisLink`
and its breaker. A profile written (or a session revoked) while Redis could not be
told is remembered, a bounded number of them, and repaired (profile deleted,
session tombstoned) before the breaker closes. A restarted Redis has lost everything anyway,
but a Redis that was only cut off still holds the old copy, which would otherwise be
served until its TTL ran out. Past the bound the oldest entries are forgotten and
their TTL is the limit on staleness.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from actors.cache.redis_link import RedisLink
from actors.wire import messages
from actors.wire.errors import CacheUnavailable

log = structlog.get_logger("profile_cache")

REVOKED = b"revoked"
MAX_DIRTY = 10_000  # profiles and sessions remembered for repair, each

_SET_IF_NEWER = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  if sep and tonumber(string.sub(cur, 1, sep - 1)) >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""

# A cached profile read in one round trip: the session (sliding its idle TTL) and,
# when it names a user, that user's profile. It reads a key it derives from the
# first (so it needs one Redis, not a Cluster); the two-command path is kept for
# when the script cannot run.
_READ_PROFILE = """
local s = redis.call('GETEX', KEYS[1], 'EX', ARGV[1])
if not s then return {} end
local uid = string.match(s, '^(%d+)|')
if not uid then return {s} end
local p = redis.call('GET', ARGV[2] .. uid)
if not p then return {s} end
return {s, p}
"""


_user_encoder = msgspec.json.Encoder()
_user_decoder = msgspec.json.Decoder(messages.User)


@dataclass(frozen=True, slots=True)
class CachedSession:
    user_id: int
    expires_at: float
    last_seen_db: float


class ProfileCache:
    def __init__(self, link: RedisLink, profile_ttl_s: int) -> None:
        self._link = link
        self._call = link.call
        self._read = link.read
        self._redis = link.redis
        self._fast = link.fast
        self._profile_ttl_s = profile_ttl_s
        self._set_if_newer = self._redis.register_script(_SET_IF_NEWER)
        self._read_script = self._redis.register_script(_READ_PROFILE)
        self._dirty_users: dict[int, None] = {}  # insertion-ordered: oldest first
        self._dirty_sessions: dict[str, int] = {}  # token hash -> tombstone TTL
        link.on_repair(self._repair)

    # -- sessions ---------------------------------------------------------------------

    async def get_session(self, token_hash: str, idle_s: float) -> CachedSession | bytes | None:
        """The cached session (sliding its idle TTL), None on a miss, REVOKED if logged out."""
        ttl = max(1, int(idle_s))
        raw = await self._call(lambda: self._read("GETEX", _skey(token_hash), "EX", ttl))
        return _session(raw)

    async def get_session_and_user(
        self, token_hash: str, idle_s: float
    ) -> tuple[CachedSession | bytes | None, messages.User | None]:
        """``get_session`` and, for a live session, ``get_user`` in one round trip."""
        ttl = max(1, int(idle_s))
        if self._fast is None:
            session = await self.get_session(token_hash, idle_s)
            if not isinstance(session, CachedSession):
                return session, None
            return session, await self.get_user(session.user_id)
        found = await self._call(lambda: self._read_profile(_skey(token_hash), ttl))
        session = _session(found[0]) if found else None
        user = _profile(found[1]) if len(found) > 1 else None
        if not isinstance(session, CachedSession) or (user and user.user_id != session.user_id):
            return session, None
        return session, user

    async def _read_profile(self, skey: str, ttl: int) -> list[bytes]:
        assert self._fast is not None
        args = (1, skey, ttl, "uh:u:")
        try:
            return list(await self._fast.execute("EVALSHA", self._read_script.sha, *args))
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return list(await self._read_script(keys=[skey], args=[ttl, "uh:u:"]))

    async def fill(self, token_hash: str, info: messages.SessionInfo) -> None:
        """After a miss: the session (SET NX) and the profile (set-if-newer) in one
        round trip to Redis."""
        ttl = _session_ttl(info.expires_at, info.idle_timeout_s)
        user = info.user
        session = f"{user.user_id}|{info.expires_at!r}|{info.last_seen!r}"
        profile = str(user.version).encode() + b"|" + _user_encoder.encode(user)

        async def both() -> Any:
            if self._fast is not None:
                # Both commands in flight at once: one round trip, as a pipeline.
                writes = [self._put_profile(user.user_id, profile, user.version)]
                if ttl > 0:
                    writes.append(
                        self._fast.execute("SET", _skey(token_hash), session, "EX", ttl, "NX")
                    )
                return await asyncio.gather(*writes)
            pipe = self._redis.pipeline(transaction=False)
            if ttl > 0:
                pipe.set(_skey(token_hash), session, ex=ttl, nx=True)
            await self._set_if_newer(  # queues EVALSHA on the pipeline
                keys=[_ukey(user.user_id)],
                args=[profile, user.version, self._profile_ttl_s],
                client=pipe,
            )
            return await pipe.execute()

        await self._call(both)

    async def note_touch(self, token_hash: str, session: CachedSession, idle_s: float) -> None:
        ttl = _session_ttl(session.expires_at, idle_s)
        if ttl <= 0:
            return
        value = f"{session.user_id}|{session.expires_at!r}|{time.time()!r}"
        await self._call(lambda: self._redis.set(_skey(token_hash), value, ex=ttl, xx=True))

    async def revoke_session(self, token_hash: str, idle_s: float) -> None:
        ttl = max(1, int(idle_s))
        try:
            await self._call(lambda: self._redis.set(_skey(token_hash), REVOKED, ex=ttl))
        except CacheUnavailable:
            _remember(self._dirty_sessions, token_hash, ttl)
            raise

    # -- profiles -----------------------------------------------------------------------

    async def get_user(self, user_id: int) -> messages.User | None:
        return _profile(await self._call(lambda: self._read("GET", _ukey(user_id))))

    async def put_user(self, user: messages.User) -> bool:
        """Store ``user`` unless the cache already holds this version or a newer one."""
        value = str(user.version).encode() + b"|" + _user_encoder.encode(user)
        try:
            done = await self._call(lambda: self._put_profile(user.user_id, value, user.version))
        except CacheUnavailable:
            # Redis may still hold an older copy (a cut, not a restart): repair it later.
            _remember(self._dirty_users, user.user_id, None)
            raise
        return bool(done)

    async def _put_profile(self, user_id: int, value: bytes, version: int) -> Any:
        """The set-if-newer script, by its hash on the fast path; redis-py loads it
        into a Redis that does not know it yet (a fresh start, a flushed cache)."""
        key, ttl = _ukey(user_id), self._profile_ttl_s
        if self._fast is not None:
            try:
                return await self._fast.execute(
                    "EVALSHA", self._set_if_newer.sha, 1, key, value, version, ttl
                )
            except ResponseError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
        return await self._set_if_newer(keys=[key], args=[value, version, ttl])

    # -- repair after a cut ------------------------------------------------------------

    async def _repair(self, redis: aioredis.Redis) -> None:
        """Drop profiles and tombstone sessions whose update Redis never received."""
        while self._dirty_users or self._dirty_sessions:
            users = list(self._dirty_users)[:500]
            sessions = list(self._dirty_sessions.items())[:500]
            pipe = redis.pipeline(transaction=False)
            for user_id in users:
                pipe.delete(_ukey(user_id))
            for token_hash, ttl in sessions:
                pipe.set(_skey(token_hash), REVOKED, ex=ttl)
            await pipe.execute()
            for user_id in users:
                self._dirty_users.pop(user_id, None)
            for token_hash, _ in sessions:
                self._dirty_sessions.pop(token_hash, None)
            log.info("cache_repaired", profiles=len(users), sessions=len(sessions))


def _remember(dirty: dict[Any, Any], key: Any, value: Any) -> None:
    dirty.pop(key, None)
    dirty[key] = value
    if len(dirty) > MAX_DIRTY:
        dirty.pop(next(iter(dirty)))
        log.warning("cache_repair_list_full", bound=MAX_DIRTY)


def _session(raw: bytes | None) -> CachedSession | bytes | None:
    if raw is None:
        return None
    if raw == REVOKED:
        return REVOKED
    try:
        user_id, expires_at, last_seen = raw.split(b"|")
        return CachedSession(int(user_id), float(expires_at), float(last_seen))
    except ValueError:
        return None  # not ours: treat as a miss, the fill will fix it


def _profile(raw: bytes | None) -> messages.User | None:
    if raw is None:
        return None
    _, _, body = raw.partition(b"|")
    try:
        return _user_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _skey(token_hash: str) -> str:
    return f"uh:s:{token_hash}"


def _ukey(user_id: int) -> str:
    return f"uh:u:{user_id}"


def _session_ttl(expires_at: float, idle_s: float) -> int:
    return int(min(idle_s, expires_at - time.time()))
