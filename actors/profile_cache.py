"""The Redis side of the cache worker: sessions and profiles, written so they stay right.

Keys (all single-key operations, so a Redis Cluster works as well):

* ``uh:s:<token hash>`` -> ``"<user id>|<absolute expiry>|<last seen in MySQL>"``, or
  ``"revoked"`` after a log out. Its TTL is the idle timeout and slides with every hit;
  the absolute expiry is checked in code. A fill uses SET NX, so a read that raced a
  log out can never bring the session back over its tombstone.
* ``uh:u:<user id>`` -> ``"<version>|<profile JSON>"``. Writers and fills go through a
  script that only replaces a lower version, so a slow fill never overwrites a newer
  change: the cache converges on the highest version MySQL has acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from actors import messages
from actors.errors import CacheUnavailable

REVOKED = b"revoked"

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

_user_encoder = msgspec.json.Encoder()
_user_decoder = msgspec.json.Decoder(messages.User)


@dataclass(frozen=True, slots=True)
class CachedSession:
    user_id: int
    expires_at: float
    last_seen_db: float


class ProfileCache:
    def __init__(self, url: str, pool_size: int, profile_ttl_s: int) -> None:
        self._redis = aioredis.Redis.from_url(
            url,
            max_connections=pool_size,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            health_check_interval=30,
        )
        self._profile_ttl_s = profile_ttl_s
        self._set_if_newer = self._redis.register_script(_SET_IF_NEWER)

    async def close(self) -> None:
        await self._redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    # -- sessions ---------------------------------------------------------------------

    async def get_session(self, token_hash: str, idle_s: float) -> CachedSession | bytes | None:
        """The cached session (sliding its idle TTL), None on a miss, REVOKED if logged out."""
        raw = await self._call(self._redis.getex(_skey(token_hash), ex=max(1, int(idle_s))))
        if raw is None:
            return None
        if raw == REVOKED:
            return REVOKED
        try:
            user_id, expires_at, last_seen = raw.split(b"|")
            return CachedSession(int(user_id), float(expires_at), float(last_seen))
        except ValueError:
            return None  # not ours: treat as a miss, the fill will fix it

    async def fill_session(self, token_hash: str, info: messages.SessionInfo) -> None:
        ttl = _session_ttl(info.expires_at, info.idle_timeout_s)
        if ttl <= 0:
            return
        value = f"{info.user.user_id}|{info.expires_at!r}|{info.last_seen!r}"
        await self._call(self._redis.set(_skey(token_hash), value, ex=ttl, nx=True))

    async def note_touch(self, token_hash: str, session: CachedSession, idle_s: float) -> None:
        ttl = _session_ttl(session.expires_at, idle_s)
        if ttl <= 0:
            return
        value = f"{session.user_id}|{session.expires_at!r}|{time.time()!r}"
        await self._call(self._redis.set(_skey(token_hash), value, ex=ttl, xx=True))

    async def revoke_session(self, token_hash: str, idle_s: float) -> None:
        await self._call(self._redis.set(_skey(token_hash), REVOKED, ex=max(1, int(idle_s))))

    # -- profiles -----------------------------------------------------------------------

    async def get_user(self, user_id: int) -> messages.User | None:
        raw = await self._call(self._redis.get(_ukey(user_id)))
        if raw is None:
            return None
        _, _, body = raw.partition(b"|")
        try:
            return _user_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None

    async def put_user(self, user: messages.User) -> bool:
        """Store ``user`` unless the cache already holds this version or a newer one."""
        value = str(user.version).encode() + b"|" + _user_encoder.encode(user)
        done = await self._call(
            self._set_if_newer(
                keys=[_ukey(user.user_id)], args=[value, user.version, self._profile_ttl_s]
            )
        )
        return bool(done)

    @staticmethod
    async def _call(awaitable: Awaitable[Any]) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"Redis failed: {exc}") from None


def _skey(token_hash: str) -> str:
    return f"uh:s:{token_hash}"


def _ukey(user_id: int) -> str:
    return f"uh:u:{user_id}"


def _session_ttl(expires_at: float, idle_s: float) -> int:
    return int(min(idle_s, expires_at - time.time()))
