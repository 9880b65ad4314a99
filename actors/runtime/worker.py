"""What every worker process does around its handler: serve, register, drain, stop.

Every request a worker handles leaves one JSON log line, "handled", with its message
type, duration and, when it failed, its stable error code.

A worker listens on an ephemeral port by default (supervisord starts N of a kind with
no port bookkeeping) and tells the pool manager the address clients should use. On
SIGTERM it drains: it reports itself not ready so no new leases point at it, answers
new requests with "busy" so callers retry elsewhere, lets in-flight work finish, and
only then closes its registration.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import structlog

from actors.runtime import gc_tuning, metrics
from actors.runtime.config import CommonConfig, WorkerLimits
from actors.runtime.registration import Registration
from actors.wire import rpc
from actors.wire.errors import UserhubError
from actors.wire.messages import Message

log = structlog.get_logger("worker")


class WorkerRuntime:
    def __init__(
        self,
        kind: str,
        common: CommonConfig,
        limits: WorkerLimits,
        handler: rpc.Handler,
        *,
        ready: Callable[[], bool] = lambda: True,
        mysql_wanted: int = 0,
    ) -> None:
        self.kind = kind
        self.common = common
        self.limits = limits
        self._ready = ready
        self._mysql_wanted = mysql_wanted
        self.stopping = asyncio.Event()
        self._handler = handler
        self._in_flight = metrics.IN_FLIGHT.labels(kind)
        self.server = rpc.Server(
            self._observed,
            max_connections=limits.max_connections,
            max_in_flight=limits.max_in_flight,
            max_frame=common.max_frame,
            on_error=self._count_error,
        )
        self.registration: Registration | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def _observed(self, request: rpc.Request) -> Message:
        """The handler, plus the one log line per request: message, duration, error code.

        ``request_id`` comes from the context rpc binds for the request.
        """
        started = time.perf_counter()
        error_code = ""
        self._in_flight.inc()
        try:
            return await self._handler(request)
        except UserhubError as exc:
            error_code = exc.code
            raise
        except asyncio.CancelledError:
            past = time.time() >= request.deadline
            error_code = "deadline_exceeded" if past else "cancelled"
            raise
        except Exception:
            error_code = "internal"
            raise
        finally:
            self._in_flight.dec()
            fields: dict[str, Any] = {
                "message": type(request.message).__name__,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            if error_code:
                fields["error_code"] = error_code
            log.info("handled", **fields)

    def _count_error(self, request: rpc.Request, exc: BaseException) -> None:
        code = getattr(exc, "code", "internal")
        metrics.ERRORS.labels(self.kind, code).inc()

    async def start(self) -> Registration:
        port = int(os.environ.get("USERHUB_WORKER_PORT", "0") or 0)
        host, port = await self.server.start(self.common.bind_host, port)
        registration = Registration(
            self.common,
            kind=self.kind,
            port=port,
            capacity=self.limits.max_in_flight,
            ready=lambda: self._ready() and not self.stopping.is_set(),
            in_flight=lambda: self.server.stats.in_flight,
            mysql_wanted=self._mysql_wanted,
        )
        self.registration = registration
        self._tasks.append(asyncio.get_running_loop().create_task(registration.run()))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        log.info("listening", addr=f"{host}:{port}", advertised=self.common.advertise_host)
        gc_tuning.tune_after_start()
        return registration

    async def wait_and_drain(self) -> None:
        await self.stopping.wait()
        log.info("draining", in_flight=self.server.stats.in_flight)
        await self.server.drain(self.limits.drain_timeout_s)
        for task in self._tasks:
            task.cancel()
        if self.registration is not None:
            self.registration.close()
        log.info("stopped")
