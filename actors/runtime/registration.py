"""A worker's side of the pool manager: register, heartbeat, and register again.

The registration connection stays open for the worker's whole life; the pool manager
takes its closing as the worker's death. If the pool manager dies instead, the worker
keeps serving the clients it already has and registers again as soon as a new pool
manager answers, without a restart of its own.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import msgspec
import structlog

from actors.runtime.config import CommonConfig
from actors.wire import messages
from actors.wire.client import Connection
from actors.wire.errors import UserhubError
from actors.wire.identity import Identity
from actors.wire.roles import POOL_MANAGER

log = structlog.get_logger("registration")

_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 1.0


class Registration:
    """Keeps one worker registered with the pool manager, across manager restarts."""

    def __init__(
        self,
        common: CommonConfig,
        identity: Identity,
        *,
        kind: str,
        port: int,
        capacity: int,
        ready: Callable[[], bool],
        in_flight: Callable[[], int],
        mysql_wanted: int = 0,
    ) -> None:
        self._common = common
        self._identity = identity
        self._register = messages.Register(
            kind=kind,
            host=common.advertise_host,
            port=port,
            capacity=capacity,
            pid=os.getpid(),
            mysql_wanted=mysql_wanted,
        )
        self._ready = ready
        self._in_flight = in_flight
        self.worker_id = ""
        self.mysql_granted = asyncio.get_running_loop().create_future()
        self.registrations = 0
        self._conn: Connection | None = None

    async def run(self) -> None:
        """Register and heartbeat forever; reconnect with capped backoff on any failure."""
        backoff = _BACKOFF_MIN_S
        while True:
            registered_before = self.registrations
            error = "connection closed"
            try:
                await self._session()
            except (UserhubError, OSError) as exc:
                error = str(exc)
            finally:
                self.worker_id = ""
                if self._conn is not None:
                    self._conn.close("re-registering")
                    self._conn = None
            if self.registrations > registered_before:
                backoff = _BACKOFF_MIN_S  # we were registered: come back fast
            log.info("manager_unreachable", error=error, retry_in_s=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _session(self) -> None:
        host, port = self._common.manager_addr
        timeout = 2.0
        self._conn = conn = await Connection.open(
            host, port, timeout=timeout, identity=self._identity, expect=POOL_MANAGER
        )
        msg = msgspec.structs.replace(self._register, ready=self._ready())
        reply = await conn.call(msg, deadline=time.time() + timeout, trace_id="")
        self.worker_id = reply.worker_id
        self.registrations += 1
        if not self.mysql_granted.done():
            self.mysql_granted.set_result(reply.mysql_granted)
        log.info(
            "registered",
            worker_id=reply.worker_id,
            mysql_granted=reply.mysql_granted,
            times=self.registrations,
        )
        interval = reply.heartbeat_interval_s
        while conn.is_open:
            await asyncio.sleep(interval)
            beat = messages.Heartbeat(in_flight=self._in_flight(), ready=self._ready())
            await conn.call(beat, deadline=time.time() + max(interval, 1.0), trace_id="")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close("worker stopping")
