"""One gateway's own throttle counters: what decides while no cache_worker answers.

The rules are those of the shared counters in Redis (actors/cache/throttle_store.py,
whose docstring explains them): a refused attempt changes nothing; an admitted one
is counted under every key before the caller goes on; below the limit a window is
fixed from its first attempt; the attempt that reaches the limit blocks the key,
for the rest of the window or, with a back-off cap, for a window that doubles with
each further admitted attempt, and the key is forgotten one window after its block.

Deciding and counting happen in one synchronous call, with no await in between, so
attempts racing on one gateway's event loop cannot overrun a limit; with K gateways
cut off from Redis an attacker gets at most K times the limits. The table is
bounded: past ``max_keys`` the least recently used keys are dropped first.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from actors.wire.messages import ThrottleRule

#: Largest exponent of the doubling: far past any cap, far below overflow.
_MAX_DOUBLINGS = 40


@dataclass(slots=True)
class _Counter:
    count: int
    expires: float  # time.monotonic() at which the key is forgotten
    blocked_until: float = 0.0


def block_seconds(rule: ThrottleRule, count: int) -> float:
    """How long the ``count``-th admitted attempt blocks a key with a back-off cap."""
    window = rule.window_ms / 1000
    cap = rule.backoff_cap_ms / 1000
    return min(cap, math.ldexp(window, min(count - rule.limit, _MAX_DOUBLINGS)))


class LocalCounters:
    def __init__(self, max_keys: int = 100_000) -> None:
        self._max_keys = max_keys
        self._counters: OrderedDict[str, _Counter] = OrderedDict()

    def __len__(self) -> int:
        return len(self._counters)

    def _live(self, key: str, now: float) -> _Counter | None:
        counter = self._counters.get(key)
        if counter is not None and counter.expires <= now:
            del self._counters[key]
            return None
        return counter

    def wait(self, keys: Sequence[str]) -> float:
        """Seconds until none of ``keys`` is blocked (0: none is)."""
        now = time.monotonic()
        waits = [c.blocked_until - now for k in keys if (c := self._live(k, now)) is not None]
        return max([0.0, *waits])

    def attempt(self, rules: Sequence[ThrottleRule]) -> float:
        """Seconds to wait if any key is blocked (nothing counted); else 0, counted."""
        wait = self.wait([rule.key for rule in rules])
        if wait > 0:
            return wait
        self.record(rules)
        return 0.0

    def record(self, rules: Sequence[ThrottleRule]) -> None:
        """Count one attempt under every key, without judging it (decided elsewhere)."""
        now = time.monotonic()
        for rule in rules:
            counter = self._live(rule.key, now)
            if counter is None:
                counter = _Counter(count=0, expires=now + rule.window_ms / 1000)
                self._counters[rule.key] = counter
            counter.count += 1
            if counter.count >= rule.limit:
                if rule.backoff_cap_ms > 0:
                    block = block_seconds(rule, counter.count)
                    counter.blocked_until = now + block
                    counter.expires = now + block + rule.window_ms / 1000
                else:
                    counter.blocked_until = counter.expires
            self._counters.move_to_end(rule.key)
        while len(self._counters) > self._max_keys:
            self._counters.popitem(last=False)

    def settle(self, forget: Sequence[str], refund: Sequence[ThrottleRule]) -> None:
        """Forget each ``forget`` key; take back one attempt from each ``refund`` key."""
        now = time.monotonic()
        for key in forget:
            self._counters.pop(key, None)
        for rule in refund:
            counter = self._live(rule.key, now)
            if counter is None:
                continue
            counter.count -= 1
            if counter.count <= 0:
                del self._counters[rule.key]
            elif counter.count < rule.limit:
                counter.blocked_until = 0.0
