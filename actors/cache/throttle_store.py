"""Throttle counters in Redis, shared by every gateway (actors.web.throttle).

An attempt (a login, a sign-up, an upload) names every counter it is judged by,
each with its limit, window and back-off cap (messages.ThrottleRule). One script
decides and counts in a single step: if any key is blocked the attempt is refused
with the longest wait and nothing changes; otherwise it is counted under every key
before the caller does the expensive part (the password hash). Because nothing
runs between the decision and the count, N gateways sending attempts at once can
never admit more than the limit between them.

Each key is a hash: ``n`` (attempts counted) and ``u`` (blocked until, in Redis's
own milliseconds, so gateways' and workers' clocks do not matter). Below the limit
the window is fixed, starting with the first attempt (the key's expiry). The
attempt that reaches the limit blocks the key: for the rest of the window
(``backoff_cap_ms`` 0), or for one window, doubling with every further admitted
attempt up to the cap; the key then lives one window past its block, so a quiet
window forgets it. A refused attempt changes nothing: it cost nothing, and
counting it would let anyone who knows a key push its wait to the cap.

Settling an attempt forgets keys (a success clears its pair) and refunds one
attempt on others (a success does not count against its address), lifting a block
that the refunded attempt itself set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from actors.cache.redis_link import RedisLink
from actors.wire.errors import InvalidInput
from actors.wire.messages import ThrottleRule

# Not the retired counters' "uh:t:": those were strings, these are hashes.
THROTTLE_PREFIX: Final = "uh:th:"

#: Most keys one attempt or settlement may name.
MAX_KEYS: Final = 8
MAX_KEY_CHARS: Final = 160
MAX_LIMIT: Final = 1_000_000
MAX_WINDOW_MS: Final = 7 * 24 * 3600 * 1000

_ATTEMPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for _, key in ipairs(KEYS) do
  local blocked = tonumber(redis.call('HGET', key, 'u') or '0')
  if blocked - now > wait then wait = blocked - now end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 * i - 2])
  local window = tonumber(ARGV[3 * i - 1])
  local cap = tonumber(ARGV[3 * i])
  local n = redis.call('HINCRBY', key, 'n', 1)
  if n == 1 then redis.call('PEXPIRE', key, window) end
  if n >= limit then
    if cap > 0 then
      local block = math.min(cap, window * 2 ^ math.min(n - limit, 40))
      block = math.floor(block)
      redis.call('HSET', key, 'u', now + block)
      redis.call('PEXPIRE', key, block + window)
    else
      local ttl = redis.call('PTTL', key)
      if ttl > 0 then redis.call('HSET', key, 'u', now + ttl) end
    end
  end
end
return 0
"""

_SETTLE = """
local forget = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if i <= forget then
    redis.call('DEL', key)
  elseif redis.call('EXISTS', key) == 1 then
    local n = redis.call('HINCRBY', key, 'n', -1)
    if n <= 0 then
      redis.call('DEL', key)
    elseif n < tonumber(ARGV[i + 1 - forget]) then
      redis.call('HDEL', key, 'u')
    end
  end
end
return 1
"""


def check_rules(rules: Sequence[ThrottleRule], forget: Sequence[str] = ()) -> None:
    """Refuse what no gateway sends: too many keys, odd keys, limits or windows."""
    if len(rules) + len(forget) > MAX_KEYS:
        raise InvalidInput(f"a throttle request names at most {MAX_KEYS} keys")
    for key in (*(r.key for r in rules), *forget):
        if not 0 < len(key) <= MAX_KEY_CHARS:
            raise InvalidInput(f"a throttle key is 1 to {MAX_KEY_CHARS} characters")
    for rule in rules:
        if not 1 <= rule.limit <= MAX_LIMIT:
            raise InvalidInput(f"a throttle limit is 1 to {MAX_LIMIT}")
        if not 1 <= rule.window_ms <= MAX_WINDOW_MS:
            raise InvalidInput("a throttle window is 1 ms to 7 days")
        if not 0 <= rule.backoff_cap_ms <= MAX_WINDOW_MS:
            raise InvalidInput("a throttle back-off cap is 0 to 7 days")


class ThrottleStore:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._attempt = link.redis.register_script(_ATTEMPT)
        self._settle = link.redis.register_script(_SETTLE)

    async def attempt(self, rules: Sequence[ThrottleRule]) -> int:
        """Milliseconds the attempt must wait (refused, nothing counted), or 0 (counted)."""
        check_rules(rules)
        if not rules:
            return 0
        keys = [THROTTLE_PREFIX + r.key for r in rules]
        args = [v for r in rules for v in (r.limit, r.window_ms, r.backoff_cap_ms)]
        return int(await self._link.call(lambda: self._attempt(keys=keys, args=args)))

    async def settle(self, forget: Sequence[str], refund: Sequence[ThrottleRule]) -> None:
        """Forget each ``forget`` key; take back one attempt from each ``refund`` key."""
        check_rules(refund, forget)
        if not forget and not refund:
            return
        keys = [THROTTLE_PREFIX + k for k in (*forget, *(r.key for r in refund))]
        args = [len(forget), *(r.limit for r in refund)]
        await self._link.call(lambda: self._settle(keys=keys, args=args))
