"""One process lifecycle for every actor: start, serve until told to stop, drain, stop.

Each actor's entry point builds one object with ``start`` and ``stop`` and hands it
to :func:`run`, which owns everything around it: JSON logs, the start counter and
stale metric files, uvloop, the garbage collector's settings, SIGTERM and SIGINT.
The states are explicit and only move forward::

    starting -> running -> draining -> stopped

A worker is ready for leases only while ``running``; SIGTERM moves it to
``draining`` (no new leases point at it, new requests are answered "busy", work
in flight finishes) before ``stop`` closes what it holds. A second signal while
draining is ignored: supervisord's ``stopwaitsecs`` is the bound, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import enum
import signal
from collections.abc import Callable
from typing import Protocol

import structlog

from actors.runtime import gc_tuning, logs, metrics

log = structlog.get_logger("lifecycle")


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


_NEXT: dict[State, State] = {
    State.STARTING: State.RUNNING,
    State.RUNNING: State.DRAINING,
    State.DRAINING: State.STOPPED,
}


class Lifecycle:
    """Where one actor process is in its life; read by readiness checks."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.state = State.STARTING
        self.stop_requested = asyncio.Event()

    @property
    def running(self) -> bool:
        return self.state is State.RUNNING

    def advance(self, to: State) -> None:
        if _NEXT.get(self.state) is not to:
            raise RuntimeError(f"{self.kind}: no move from {self.state.value} to {to.value}")
        self.state = to
        log.info(to.value)

    def request_stop(self) -> None:
        self.stop_requested.set()


class Actor(Protocol):
    async def start(self) -> None:
        """Listen, register, open pools: after this the actor serves."""

    async def stop(self) -> None:
        """Drain what is in flight and close everything the actor holds."""


def run(kind: str, log_level: str, build: Callable[[Lifecycle], Actor]) -> None:
    """The whole life of one actor process; returns when it has stopped."""
    logs.configure(kind, log_level)
    metrics.started(kind)
    import uvloop

    uvloop.run(_serve(kind, build))


async def _serve(kind: str, build: Callable[[Lifecycle], Actor]) -> None:
    lifecycle = Lifecycle(kind)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lifecycle.request_stop)
    actor = build(lifecycle)
    await actor.start()
    gc_tuning.tune_after_start()
    lifecycle.advance(State.RUNNING)
    await lifecycle.stop_requested.wait()
    lifecycle.advance(State.DRAINING)
    await actor.stop()
    lifecycle.advance(State.STOPPED)
