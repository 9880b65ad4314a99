"""Failed-login counters in Redis, shared by every gateway (actors.web.throttle).

Each key counts failures in a fixed window: the first failure sets the key's
expiry, so the window starts with it and the count vanishes with it. A check
reports how long until every key is under its limit and whether any key has
failures on record (so a success knows whether there is anything to clear).
Both run as one script each: one round trip, and no other command in between.
"""

from __future__ import annotations

from actors.cache.redis_link import RedisLink

THROTTLE_PREFIX = "uh:t:"

_CHECK = """
local wait, counted = 0, 0
for i, key in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', key) or '0')
  if n > 0 then counted = 1 end
  if n >= tonumber(ARGV[i]) then
    local ttl = redis.call('PTTL', key)
    if ttl > wait then wait = ttl end
  end
end
return {wait, counted}
"""

_UPDATE = """
local failed = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if i <= failed then
    if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[2]) end
  else
    redis.call('DEL', key)
  end
end
return 1
"""


class ThrottleStore:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._check = link.redis.register_script(_CHECK)
        self._update = link.redis.register_script(_UPDATE)

    async def check(self, keys: tuple[str, ...], limits: tuple[int, ...]) -> tuple[int, bool]:
        """Milliseconds until every key is under its limit (0: now), and whether any
        key has failures on record."""
        found = await self._link.call(
            lambda: self._check(keys=[THROTTLE_PREFIX + k for k in keys], args=list(limits))
        )
        return int(found[0]), bool(int(found[1]))

    async def update(
        self, failed: tuple[str, ...], cleared: tuple[str, ...], window_s: int
    ) -> None:
        """Count one failure under each ``failed`` key, forget each ``cleared`` one."""
        keys = [THROTTLE_PREFIX + k for k in (*failed, *cleared)]
        await self._link.call(
            lambda: self._update(keys=keys, args=[len(failed), max(1, window_s) * 1000])
        )
