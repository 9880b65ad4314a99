"""What every worker process does around its handler: serve, register, drain.

Every request a worker handles leaves one JSON log line, "handled", with its message
type, duration and, when it failed, its stable error code.

A worker listens on an ephemeral port by default (supervisord starts N of a kind with
no port bookkeeping) and tells the pool manager the address clients should use. It
is ready for leases only while its lifecycle is running and its own check (a MySQL
pool, leased db_workers) passes; once draining it reports itself not ready, so no
new leases point at it, answers new requests with "busy" so callers retry
elsewhere, lets in-flight work finish, and only then closes its registration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import structlog

from actors.runtime import metrics
from actors.runtime.config import CommonConfig, WorkerLimits
from actors.runtime.env import worker_port
from actors.runtime.lifecycle import Lifecycle
from actors.runtime.registration import Registration
from actors.wire.errors import UserhubError
from actors.wire.identity import Identity
from actors.wire.messages import Message, members
from actors.wire.server import Envelope, Limits, Server

log = structlog.get_logger("worker")

M = TypeVar("M", bound=Message)


class WorkerServer(Generic[M]):
    def __init__(
        self,
        kind: str,
        accepts: object,
        handler: Callable[[Envelope[M]], Awaitable[Message]],
        *,
        common: CommonConfig,
        limits: WorkerLimits,
        identity: Identity,
        lifecycle: Lifecycle,
        ready: Callable[[], bool] = lambda: True,
        mysql_wanted: int = 0,
    ) -> None:
        """``accepts`` is the kind's request union (``messages.DbWorkerRequest``, ...)."""
        self.kind = kind
        self.common = common
        self.limits = limits
        self._lifecycle = lifecycle
        self._ready = ready
        self._mysql_wanted = mysql_wanted
        self._handler = handler
        self._in_flight = metrics.IN_FLIGHT.labels(kind)
        self.identity = identity
        self.server: Server[M] = Server(
            kind,
            self._observed,
            members(accepts),
            identity,
            limits=Limits(
                max_connections=limits.max_connections,
                max_in_flight=limits.max_in_flight,
                max_frame=common.max_frame,
            ),
            on_error=self._count_error,
        )
        self.registration: Registration | None = None
        self._registering: asyncio.Task[None] | None = None

    async def _observed(self, envelope: Envelope[M]) -> Message:
        """The handler, plus the one log line per request: message, duration, error code.

        ``request_id`` comes from the context the server binds for the request.
        """
        started = time.perf_counter()
        error_code = ""
        self._in_flight.inc()
        try:
            return await self._handler(envelope)
        except UserhubError as exc:
            error_code = exc.code
            raise
        except asyncio.CancelledError:
            past = time.time() >= envelope.deadline
            error_code = "deadline_exceeded" if past else "cancelled"
            raise
        except Exception:
            error_code = "internal"
            raise
        finally:
            self._in_flight.dec()
            fields: dict[str, Any] = {
                "message": type(envelope.message).__name__,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            if error_code:
                fields["error_code"] = error_code
            log.info("handled", **fields)

    def _count_error(self, envelope: Envelope[Message], exc: BaseException) -> None:
        code = exc.code if isinstance(exc, UserhubError) else "internal"
        metrics.ERRORS.labels(self.kind, code).inc()

    def _is_ready(self) -> bool:
        return self._lifecycle.running and self._ready()

    async def start(self) -> Registration:
        """Listen, then register with the pool manager (and keep registering)."""
        host, port = await self.server.start(self.common.bind_host, worker_port())
        registration = Registration(
            self.common,
            self.identity,
            kind=self.kind,
            port=port,
            capacity=self.limits.max_in_flight,
            ready=self._is_ready,
            in_flight=lambda: self.server.stats.in_flight,
            mysql_wanted=self._mysql_wanted,
        )
        self.registration = registration
        self._registering = asyncio.get_running_loop().create_task(registration.run())
        log.info("listening", addr=f"{host}:{port}", advertised=self.common.advertise_host)
        return registration

    async def drain(self) -> None:
        """Finish what is in flight (bounded), then leave the pool manager's registry."""
        log.info("draining_requests", in_flight=self.server.stats.in_flight)
        await self.server.drain(self.limits.drain_timeout_s)
        if self._registering is not None:
            self._registering.cancel()
        if self.registration is not None:
            self.registration.close()
