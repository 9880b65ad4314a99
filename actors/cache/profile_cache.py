"""The Redis side of the cache worker: sessions and profiles, written so they stay right.

Keys (one Redis: the cached read's script reads a key it derives from the first,
and the session scripts read ``uh:boot`` beside the key they name):

* ``uh:s:<token hash>`` -> ``"<user id>|<absolute expiry>|<last seen in MySQL>"``, or
  ``"revoked"`` (a tombstone) after a log out. Its TTL is the idle timeout and slides
  with every read, tombstones included; the absolute expiry is checked in code.
* ``uh:u:<user id>`` -> ``"<version>|<profile JSON>"``. Writers and fills go through a
  script that only replaces a lower version, so a slow fill never overwrites a newer
  change: the cache converges on the highest version MySQL has acknowledged.
* ``uh:boot`` -> this Redis's epoch: no TTL, made by the first read that finds it
  missing, so it changes whenever Redis loses its data (a restart without
  persistence, a FLUSHALL) and only then.

Why a logout is final
---------------------
A log out deletes the session's row in MySQL (the record) and then writes the
tombstone; the cache worker acknowledges it only once the tombstone is written
(:meth:`ProfileCache.revoke_session` raises otherwise and the client is told to
retry). After that, no write can bring the session back into Redis:

* A tombstone is written unconditionally, so it replaces a live copy whatever that
  copy was; reads then refuse the token, and sliding a tombstone's TTL is harmless.
* A touch (``last seen`` after a hit) is a compare-and-set script: it refreshes a
  live session of the same user and expiry and nothing else. It never replaces a
  tombstone and never creates a key (a touch that arrives after the key expired or
  was lost does nothing).
* A fill after a miss can only carry the session if its MySQL read came before the
  delete; the miss was read before that. The fill script writes only with NX (never
  over a tombstone) and only if ``uh:boot`` is still the epoch the miss saw and the
  miss is younger than ``min(FILL_MAX_AGE_S, idle timeout)`` by Redis's own clock.
  If the epoch is the same, Redis has not lost its data since the miss, so a
  tombstone written after the miss is still there unless its TTL ran out; a
  tombstone lives at least the idle timeout (reads only ever slide it to the idle
  timeout), and the fill is refused past that age. So a fill that raced a logout
  finds the tombstone, or is refused, whatever happened to Redis in between.
  The epoch is made of Redis's clock (microseconds) and the token hash of the read
  that made it: it only has to differ from every earlier epoch of this Redis. Lua's
  ``math.random`` cannot serve, being seeded identically at every start of Redis.
* Every other write (a profile) leaves ``uh:s:*`` alone, and the repair after a cut
  writes tombstones only.

A Redis that lost a tombstone (restart, flush) misses on the next read, and the
miss resolves in MySQL, where the row is gone. A hit stays one round trip: the
epoch is read only by a miss, inside the same script.

What this relies on: Redis does not evict keys (noeviction; with an LRU policy a
tombstone could be evicted while the epoch stays, the one way past this), and a
write Redis acknowledged is not lost without losing the epoch with it (with
replicas, a failover to a replica that missed the tombstone keeps the epoch).

Repair after a cut
------------------
Every call goes through the worker's :class:`~actors.cache.redis_link.RedisLink`
and its breaker. A profile written while Redis could not be told is remembered, a
bounded number of them, and deleted before the breaker closes: a Redis that was only
cut off (not restarted) still holds the old copy. This is best effort for profiles,
by design: the list lives in one process's memory, is bounded, and is never run
after an error that did not open the breaker (``READONLY`` after a failover), so a
stale profile may be served until its TTL (``USERHUB_PROFILE_TTL_S``) runs out; a
profile is not a secret, and the next write or fill replaces it. Sessions do not
depend on it: a log out whose tombstone failed is not acknowledged. Its tombstone is
remembered all the same, so a client that never retries still has the session
revoked when this worker next closes its breaker.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from actors.cache.redis_link import RedisLink
from actors.wire import messages
from actors.wire.errors import CacheUnavailable

log = structlog.get_logger("profile_cache")

REVOKED = b"revoked"
BOOT_KEY = "uh:boot"
MAX_DIRTY = 10_000  # profiles and sessions remembered for repair, each
#: A fill whose miss Redis read longer ago than this (or than the idle timeout, if
#: shorter) is refused: no request waits that long (5 s deadlines), and a
#: tombstone is only sure to be there for the idle timeout.
FILL_MAX_AGE_S = 5.0

# What a session fill or touch did (the scripts' answers).
STORED = 1
EXISTS = 0  # a fill found the key taken (a live copy or a tombstone); a touch found no live copy
OTHER_BOOT = -1  # a fill whose miss was read before Redis lost its data
TOO_OLD = -2  # a fill whose miss is older than the fill's bound

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
# when it names a user, that user's profile. On a miss it answers this Redis's epoch
# (making it if it is missing) and the time in milliseconds, which the fill hands
# back. It reads keys it derives (so it needs one Redis, not a Cluster).
_READ_PROFILE = """
local s = redis.call('GETEX', KEYS[1], 'EX', ARGV[1])
if not s then
  local t = redis.call('TIME')
  local boot = redis.call('GET', '@BOOT@')
  if not boot then
    boot = t[1] .. '.' .. t[2] .. ':' .. KEYS[1]
    redis.call('SET', '@BOOT@', boot)
  end
  return {false, boot, t[1] * 1000 + math.floor(t[2] / 1000)}
end
local uid = string.match(s, '^(%d+)|')
if not uid then return {s} end
local p = redis.call('GET', ARGV[2] .. uid)
if not p then return {s} end
return {s, p}
""".replace("@BOOT@", BOOT_KEY)

# The session half of a fill: ARGV value, TTL, the miss's epoch and time (ms), the
# oldest miss accepted (ms). NX: never over a tombstone or a live copy.
_FILL_SESSION = """
if redis.call('GET', '@BOOT@') ~= ARGV[3] then return -1 end
local t = redis.call('TIME')
if t[1] * 1000 + math.floor(t[2] / 1000) - tonumber(ARGV[4]) >= tonumber(ARGV[5]) then
  return -2
end
if redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'NX') then return 1 end
return 0
""".replace("@BOOT@", BOOT_KEY)

# A touch: ARGV the live value's "<user id>|<absolute expiry>|" prefix, the new
# value, its TTL. Anything else under the key (a tombstone, another session's
# value, nothing) is left as it is.
_TOUCH_SESSION = """
local cur = redis.call('GET', KEYS[1])
if not cur or string.sub(cur, 1, string.len(ARGV[1])) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


# A tombstone: written even when Redis is full. Under noeviction a full Redis refuses
# writes, and a refused tombstone would leave the live copy; allow-oom exempts this
# script (a tombstone is small, and lives the idle timeout at most).
_TOMBSTONE = """#!lua flags=allow-oom
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


_user_encoder = msgspec.json.Encoder()
_user_decoder = msgspec.json.Decoder(messages.User)


@dataclass(frozen=True, slots=True)
class CachedSession:
    user_id: int
    expires_at: float
    last_seen_db: float


@dataclass(frozen=True, slots=True)
class Miss:
    """Redis had no copy of the session: the epoch and time (ms) it said so at, for the fill."""

    boot: bytes
    at_ms: int


#: What a cached read finds under a session key: a live copy, a tombstone (REVOKED),
#: a miss, or None for a value that is not one of ours (then nothing may be filled).
Found = CachedSession | Miss | bytes | None


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
        self._fill_script = self._redis.register_script(_FILL_SESSION)
        self._touch_script = self._redis.register_script(_TOUCH_SESSION)
        self._tombstone_script = self._redis.register_script(_TOMBSTONE)
        self._dirty_users: dict[int, None] = {}  # insertion-ordered: oldest first
        self._dirty_sessions: dict[str, int] = {}  # token hash -> tombstone TTL
        link.on_repair(self._repair)

    # -- sessions ---------------------------------------------------------------------

    async def get_session(self, token_hash: str, idle_s: float) -> CachedSession | bytes | None:
        """The cached session (sliding its idle TTL), None on a miss, REVOKED if logged out.

        For callers that never fill the cache (a change resolves a miss in MySQL)."""
        ttl = _idle_ttl(idle_s)
        raw = await self._call(lambda: self._read("GETEX", _skey(token_hash), "EX", ttl))
        return _session(raw)

    async def get_session_and_user(
        self, token_hash: str, idle_s: float
    ) -> tuple[Found, messages.User | None]:
        """The session and, for a live one, its profile, in one round trip (see Found)."""
        ttl = _idle_ttl(idle_s)
        found = await self._call(lambda: self._read_profile(_skey(token_hash), ttl))
        if not found:
            return None, None
        if found[0] is None:
            return Miss(bytes(found[1]), int(found[2])), None
        session = _session(found[0])
        user = _profile(found[1]) if len(found) > 1 else None
        if not isinstance(session, CachedSession) or (user and user.user_id != session.user_id):
            return session, None
        return session, user

    async def _read_profile(self, skey: str, ttl: int) -> list[Any]:
        if self._fast is not None:
            try:
                args = (1, skey, ttl, "uh:u:")
                return list(await self._fast.execute("EVALSHA", self._read_script.sha, *args))
            except ResponseError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
        return list(await self._read_script(keys=[skey], args=[ttl, "uh:u:"]))

    async def fill(self, token_hash: str, info: messages.SessionInfo, miss: Miss | None) -> int:
        """After a read that found no profile: the profile (set-if-newer) and, after
        ``miss``, the session (the fill script), in one round trip to Redis.

        Answers what became of the session: STORED, EXISTS (taken already, or no
        ``miss`` to fill after), OTHER_BOOT or TOO_OLD (refused)."""
        ttl = _session_ttl(info.expires_at, info.idle_timeout_s)
        user = info.user
        session = f"{user.user_id}|{info.expires_at!r}|{info.last_seen!r}"
        profile = str(user.version).encode() + b"|" + _user_encoder.encode(user)
        max_age_ms = int(1000 * min(FILL_MAX_AGE_S, _idle_ttl(info.idle_timeout_s)))

        async def both() -> list[Any]:
            # Both in flight at once: one round trip, as a pipeline on the fast path.
            writes = [self._put_profile(user.user_id, profile, user.version)]
            if ttl > 0 and miss is not None:
                args = (session, ttl, miss.boot, miss.at_ms, max_age_ms)
                writes.append(self._eval(self._fill_script, _skey(token_hash), *args))
            return list(await asyncio.gather(*writes))

        done = await self._call(both)
        outcome = int(done[1]) if len(done) > 1 else EXISTS
        if outcome < EXISTS:
            log.info("session_fill_refused", reason="other_boot" if outcome == -1 else "too_old")
        return outcome

    async def note_touch(self, token_hash: str, session: CachedSession, idle_s: float) -> int:
        """Record that MySQL's last_seen was just refreshed, on a live copy only.

        Answers STORED, or EXISTS when there was no live copy of this session to
        refresh (a tombstone, or nothing): then nothing is written."""
        ttl = _session_ttl(session.expires_at, idle_s)
        if ttl <= 0:
            return EXISTS
        live = f"{session.user_id}|{session.expires_at!r}|"
        value = f"{live}{time.time()!r}"
        script, key = self._touch_script, _skey(token_hash)
        return int(await self._call(lambda: self._eval(script, key, live, value, ttl)))

    async def revoke_session(self, token_hash: str, idle_s: float) -> None:
        """Write the session's tombstone; CacheUnavailable if Redis did not take it.

        The caller must not report the log out done unless this returned: a Redis
        that was only cut off (or that other cache workers still reach) may hold a
        live copy. The tombstone is remembered for the repair all the same."""
        ttl = _idle_ttl(idle_s)
        try:
            script, key = self._tombstone_script, _skey(token_hash)
            await self._call(lambda: self._eval(script, key, REVOKED, ttl))
        except CacheUnavailable:
            _remember(self._dirty_sessions, token_hash, ttl)
            raise
        self._dirty_sessions.pop(token_hash, None)

    async def _eval(self, script: AsyncScript, key: str, *args: Any) -> Any:
        """A one-key script, by its hash on the fast path; redis-py loads it into a
        Redis that does not know it yet (a fresh start, a flushed cache)."""
        if self._fast is not None:
            try:
                return await self._fast.execute("EVALSHA", script.sha, 1, key, *args)
            except ResponseError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
        return await script(keys=[key], args=list(args))

    # -- profiles -----------------------------------------------------------------------

    async def get_user(self, user_id: int) -> messages.User | None:
        return _profile(await self._call(lambda: self._read("GET", _ukey(user_id))))

    async def put_user(self, user: messages.User) -> bool:
        """Store ``user`` unless the cache already holds this version or a newer one."""
        value = str(user.version).encode() + b"|" + _user_encoder.encode(user)
        try:
            done = await self._link.write_or_drop(
                _ukey(user.user_id), lambda: self._put_profile(user.user_id, value, user.version)
            )
        except CacheUnavailable:
            # Redis may still hold an older copy (a cut, not a restart): repair it later.
            _remember(self._dirty_users, user.user_id, None)
            raise
        return bool(done)

    async def _put_profile(self, user_id: int, value: bytes, version: int) -> Any:
        return await self._eval(
            self._set_if_newer, _ukey(user_id), value, version, self._profile_ttl_s
        )

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
        return None  # not ours: the cache worker resolves it in MySQL and fills nothing


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


def _idle_ttl(idle_s: float) -> int:
    """The TTL reads slide sessions and tombstones to, and tombstones start with."""
    return max(1, int(idle_s))


def _session_ttl(expires_at: float, idle_s: float) -> int:
    return int(min(idle_s, expires_at - time.time()))
