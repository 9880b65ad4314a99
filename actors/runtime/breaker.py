"""The one circuit breaker of userhub, for a dependency or a peer that keeps failing.

Closed, calls go through; open, callers fail at once instead of waiting for a
timeout that is bound to come. A breaker opens on :meth:`Breaker.trip` and closes
either by itself ``cooldown_s`` after the last trip (the next call is then the
trial) or when someone who checked says the resource is back (:meth:`Breaker.close`,
after a probe answered). Its users:

* the cache worker's Redis client: open until a probe finds Redis back and the
  writes Redis missed are repaired (no cooldown);
* the db worker's MySQL pool: open for one operation timeout after a failure, so
  calls queued behind failing ones fail at once rather than time out in turn;
* a client's leases (:class:`BreakerSet`): each worker that failed is left alone
  for a moment before it is leased or connected to again.

Time is ``time.monotonic`` unless a test passes a clock of its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

Clock = Callable[[], float]


class Breaker:
    def __init__(self, cooldown_s: float = math.inf, clock: Clock = time.monotonic) -> None:
        self.cooldown_s = cooldown_s
        self._clock = clock
        self.tripped_at = -math.inf
        self.trips = 0  # times it went from closed to open

    @property
    def is_open(self) -> bool:
        return self._clock() - self.tripped_at < self.cooldown_s

    def trip(self) -> bool:
        """Open (or keep open, from now); True if it was closed until now."""
        opened = not self.is_open
        self.tripped_at = self._clock()
        if opened:
            self.trips += 1
        return opened

    def close(self) -> None:
        """The resource is known to be back."""
        self.tripped_at = -math.inf

    def tripped_since(self, moment: float) -> bool:
        """Whether a failure was seen after ``moment`` (on this breaker's clock)."""
        return self.tripped_at > moment


class BreakerSet(Generic[K]):
    """One breaker per key (a worker's address, its id), forgotten once closed."""

    def __init__(self, cooldown_s: float, clock: Clock = time.monotonic) -> None:
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._open: dict[K, Breaker] = {}

    def trip(self, key: K) -> None:
        breaker = self._open.get(key)
        if breaker is None:
            breaker = self._open[key] = Breaker(self.cooldown_s, self._clock)
        breaker.trip()

    def is_open(self, key: K) -> bool:
        breaker = self._open.get(key)
        return breaker is not None and breaker.is_open

    def open_keys(self) -> set[K]:
        """The keys still open; closed ones are forgotten here."""
        self._open = {k: b for k, b in self._open.items() if b.is_open}
        return set(self._open)
