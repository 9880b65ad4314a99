"""How many picture uploads one gateway reads at once.

An upload costs a gateway up to 2 MiB of memory while it arrives and a full image
decode after that. :class:`UploadSlots` lets at most ``size`` of them be read and
decoded at once; the next one is answered 503 ``busy`` with Retry-After at once
instead of waiting in a queue that a slow-upload attacker could fill. How many
uploads an account may make is a throttle shared by every gateway
(actors.web.throttle, asked by actors.web.flows.upload_allowed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from actors.runtime import metrics
from actors.wire.errors import Busy


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
