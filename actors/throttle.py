"""Login throttling: bounded, in memory, keyed so an attacker cannot lock a user out.

Failed logins are counted in fixed windows under three keys: the (account, client
address) pair, the client address, and the account alone. The pair limit is tight,
so one address guessing one password gets slowed at once; the account-wide limit is
generous, so an attacker spraying from many addresses slows guessing without
locking the real user out for longer than one window. A success clears the pair.

Each gateway process keeps its own table (bounded: the oldest keys go first), so
with K gateways an attacker gets at most K times the limits; they stay small.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from actors.errors import Throttled


@dataclass(frozen=True, slots=True)
class Limits:
    per_pair: int
    per_address: int
    per_account: int
    window_s: float


class LoginThrottle:
    def __init__(self, limits: Limits, max_keys: int = 100_000) -> None:
        self.limits = limits
        self._max_keys = max_keys
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def check(self, username: str, address: str) -> None:
        """Raise Throttled (with Retry-After) if any key is over its limit."""
        now = time.monotonic()
        for key, limit in self._keys(username, address):
            window_start, count = self._counts.get(key, (now, 0))
            if now - window_start >= self.limits.window_s:
                continue
            if count >= limit:
                retry = max(1, int(window_start + self.limits.window_s - now + 0.999))
                raise Throttled("too many failed logins, try again later", retry_after_s=retry)

    def failed(self, username: str, address: str) -> None:
        now = time.monotonic()
        for key, _ in self._keys(username, address):
            window_start, count = self._counts.pop(key, (now, 0))
            if now - window_start >= self.limits.window_s:
                window_start, count = now, 0
            self._counts[key] = (window_start, count + 1)
        while len(self._counts) > self._max_keys:
            self._counts.popitem(last=False)

    def succeeded(self, username: str, address: str) -> None:
        self._counts.pop(f"p:{username}\0{address}", None)

    def _keys(self, username: str, address: str) -> list[tuple[str, int]]:
        limits = self.limits
        return [
            (f"p:{username}\0{address}", limits.per_pair),
            (f"i:{address}", limits.per_address),
            (f"a:{username}", limits.per_account),
        ]
