"""Bounds on picture uploads in one gateway: how often per account, how many at once.

An upload costs a gateway up to 2 MiB of memory while it arrives and a full image
decode after that, so both are bounded before a byte of it is read:

* :class:`UploadRate` counts uploads per account in fixed windows and refuses the
  one past the limit with 429 and Retry-After. It counts before it checks, so
  refused attempts count too. The table is bounded (the oldest windows go first).
  It is this gateway's own count; the count shared by every gateway belongs in
  actors.web.throttle, and :func:`actors.web.flows.upload_allowed` is the one
  place that asks either.
* :class:`UploadSlots` lets at most ``size`` uploads be read and decoded at once;
  the next one is answered 503 ``busy`` with Retry-After at once instead of waiting
  in a queue that a slow-upload attacker could fill.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from actors.runtime import metrics
from actors.runtime.config import UploadPolicy
from actors.wire.errors import Busy


class UploadRate:
    def __init__(
        self,
        per_account: int,
        window_s: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_account = per_account
        self.window_s = window_s
        self._max_keys = max_keys
        self._clock = clock
        self._counts: OrderedDict[int, tuple[float, int]] = OrderedDict()

    def count(self, user_id: int) -> int:
        """Count one upload for ``user_id``: 0 if it may go ahead, else seconds to wait."""
        now = self._clock()
        window_start, count = self._counts.pop(user_id, (now, 0))
        if now - window_start >= self.window_s:
            window_start, count = now, 0
        count += 1
        self._counts[user_id] = (window_start, count)
        while len(self._counts) > self._max_keys:
            self._counts.popitem(last=False)
        if count <= self.per_account:
            return 0
        return max(1, math.ceil(window_start + self.window_s - now))


class UploadSlots:
    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0

    @contextmanager
    def take(self) -> Iterator[None]:
        """Hold one slot for the block; ``Busy`` (503) at once when none is free."""
        if self.in_use >= self.size:
            metrics.UPLOADS_REFUSED.labels(Busy.code).inc()
            raise Busy(f"more than {self.size} uploads at once in this gateway")
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1


@dataclass(frozen=True, slots=True)
class UploadGuard:
    rate: UploadRate
    slots: UploadSlots

    @classmethod
    def from_policy(cls, policy: UploadPolicy) -> UploadGuard:
        return cls(UploadRate(policy.per_account, policy.window_s), UploadSlots(policy.concurrent))
