"""Login throttling: bounded, in memory, keyed so an attacker cannot lock a user out.

Failed logins are counted in fixed windows under three keys: the (account, client
address) pair, the client address, and the account alone. The pair limit is tight,
so one address guessing one password gets slowed at once; the account-wide limit is
generous, so an attacker spraying from many addresses slows guessing without
locking the real user out for longer than one window. A success clears the pair.

The counts are shared by every gateway (SharedLoginThrottle): a cache_worker keeps
them in Redis, so K gateways behind one port give an attacker the limits once, not
K times. Each gateway also keeps its own bounded table (LoginThrottle; the oldest
keys go first), which decides alone while no cache_worker or Redis answers: then,
and only then, an attacker gets up to K times the limits.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

import structlog

from actors.runtime.leasing import WorkerPool
from actors.wire import messages
from actors.wire.errors import Throttled, UserhubError
from actors.wire.messages import R, Request

log = structlog.get_logger("throttle")


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
        for key, limit in self.keys(username, address):
            window_start, count = self._counts.get(key, (now, 0))
            if now - window_start >= self.limits.window_s:
                continue
            if count >= limit:
                retry = max(1, int(window_start + self.limits.window_s - now + 0.999))
                raise Throttled("too many failed logins, try again later", retry_after_s=retry)

    def failed(self, username: str, address: str) -> None:
        now = time.monotonic()
        for key, _ in self.keys(username, address):
            window_start, count = self._counts.pop(key, (now, 0))
            if now - window_start >= self.limits.window_s:
                window_start, count = now, 0
            self._counts[key] = (window_start, count + 1)
        while len(self._counts) > self._max_keys:
            self._counts.popitem(last=False)

    def succeeded(self, username: str, address: str) -> None:
        self._counts.pop(pair_key(username, address), None)

    def keys(self, username: str, address: str) -> list[tuple[str, int]]:
        """Each counter a login attempt touches, with its limit."""
        limits = self.limits
        return [
            (pair_key(username, address), limits.per_pair),
            (f"i:{address}", limits.per_address),
            (f"a:{username}", limits.per_account),
        ]


def pair_key(username: str, address: str) -> str:
    return f"p:{username}\0{address}"


class SharedLoginThrottle:
    """The gateways' common count of failed logins, kept in Redis by a cache_worker.

    ``check`` before a login's password hash, ``failed`` or ``succeeded`` after it.
    A throttle round trip costs a fraction of a millisecond against the hash's tens;
    a success clears the pair only when the check saw failures on record. If no
    cache_worker (or Redis) answers within ``timeout_s``, this gateway's own table
    decides; it is kept up to date either way.
    """

    def __init__(self, local: LoginThrottle, cache: WorkerPool, timeout_s: float = 0.5) -> None:
        self.local = local
        self._cache = cache
        self._timeout_s = timeout_s
        self._window_s = max(1, math.ceil(local.limits.window_s))

    async def check(self, username: str, address: str, trace_id: str) -> bool:
        """Raise Throttled if any counter is at its limit; True if some has failures."""
        keys = self.local.keys(username, address)
        try:
            verdict = await self._call(
                messages.ThrottleCheck(
                    keys=tuple(k for k, _ in keys), limits=tuple(n for _, n in keys)
                ),
                trace_id,
            )
        except UserhubError as exc:
            log.warning("throttle_local_only", error=exc.code)
            self.local.check(username, address)
            return True
        if verdict.retry_after_s > 0:
            raise Throttled(
                "too many failed logins, try again later", retry_after_s=verdict.retry_after_s
            )
        return verdict.counted

    async def failed(self, username: str, address: str, trace_id: str) -> None:
        self.local.failed(username, address)
        keys = tuple(k for k, _ in self.local.keys(username, address))
        await self._update(messages.ThrottleUpdate(failed=keys, window_s=self._window_s), trace_id)

    async def succeeded(self, username: str, address: str, trace_id: str, counted: bool) -> None:
        self.local.succeeded(username, address)
        if counted:
            update = messages.ThrottleUpdate(cleared=(pair_key(username, address),))
            await self._update(update, trace_id)

    async def _update(self, update: messages.ThrottleUpdate, trace_id: str) -> None:
        try:
            await self._call(update, trace_id)
        except UserhubError as exc:
            log.warning("throttle_not_recorded", error=exc.code)

    async def _call(self, message: Request[R], trace_id: str) -> R:
        return await self._cache.call(
            message, deadline=time.time() + self._timeout_s, trace_id=trace_id
        )
