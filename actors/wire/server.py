"""The worker's side of the frame protocol: authenticated, bounded, deadline-aware.

Every connection is mutual TLS (actors.wire.identity); the peer's kind comes from
its certificate, and a frame is read only once the handshake has proved it. A
server then hands its handler only the requests that kind may send it
(actors.wire.roles), refusing the rest with ``forbidden``; it checks that each reply
has the type the request names, so a handler's mistake reaches the caller as an
internal error, never as a wrong answer.

Bounds, per server and per connection: connections, requests in flight (both), the
frame size, the time a connection may sit idle, and the bytes waiting to be written
to a peer that does not read (reading from it pauses until it catches up). Work
whose deadline has passed is dropped, and nothing is written to a connection whose
peer has gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

import structlog

from actors.wire import messages, protocol, roles
from actors.wire.coalesce import CoalescingWriter
from actors.wire.errors import (
    Busy,
    DeadlineExceeded,
    Forbidden,
    InternalError,
    ProtocolError,
    UserhubError,
)
from actors.wire.identity import HANDSHAKE_TIMEOUT_S, Identity, peer_kind
from actors.wire.messages import Message

log = structlog.get_logger("rpc")

M = TypeVar("M", bound=Message)
M_co = TypeVar("M_co", bound=Message, covariant=True)

#: Bytes waiting to be sent to one peer before the server stops reading from it.
WRITE_HIGH_WATER = 256 * 1024


@dataclass(frozen=True, slots=True)
class Envelope(Generic[M_co]):
    """A request as a handler sees it: the typed message and what travelled with it."""

    message: M_co
    deadline: float
    trace_id: str
    peer: str
    peer_kind: str = ""


ErrorHook = Callable[[Envelope[Message], BaseException], None]
CloseHook = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one server accepts; beyond these, callers get ``busy`` or are cut off."""

    max_connections: int = 1024
    max_in_flight: int = 4096
    max_in_flight_per_connection: int = 1024
    max_frame: int = protocol.DEFAULT_MAX_FRAME
    idle_timeout_s: float = 60.0


class ServerStats:
    """Counts shared by every connection of one server, for limits and metrics."""

    def __init__(self, limits: Limits) -> None:
        self.max_connections = limits.max_connections
        self.max_in_flight = limits.max_in_flight
        self.connections = 0
        self.in_flight = 0
        self.draining = False


class Server(Generic[M]):
    """An actor's listening side.

    ``kind`` is the actor's kind: it selects the roles table of what each peer kind
    may send (``allow`` replaces that table, for tests). ``accepts`` is the tuple of
    message classes of the actor's request union (:func:`messages.members`); whatever
    ``allow`` grants must be among them.
    """

    def __init__(
        self,
        kind: str,
        handler: Callable[[Envelope[M]], Awaitable[Message]],
        accepts: tuple[type[Message], ...],
        identity: Identity,
        *,
        limits: Limits | None = None,
        allow: Mapping[str, frozenset[type[Message]]] | None = None,
        on_error: ErrorHook | None = None,
        on_close: CloseHook | None = None,
    ) -> None:
        self.kind = kind
        self.handler = handler
        self.identity = identity
        self.limits = limits or Limits()
        self.allow = dict(allow if allow is not None else roles.ALLOWED.get(kind, {}))
        stray = {t for granted in self.allow.values() for t in granted} - set(accepts)
        if stray:
            names = sorted(t.__name__ for t in stray)
            raise ValueError(f"{kind} is allowed requests it does not handle: {names}")
        self.on_error = on_error
        self.on_close = on_close
        self.stats = ServerStats(self.limits)
        self.connections: dict[str, _ServerConnection[M]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerConnection(self),
            host,
            port,
            backlog=1024,
            ssl=self.identity.server,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
        )
        self._reaper = loop.create_task(self._close_idle_forever())
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    def close_peer(self, peer: str) -> None:
        """Cut one client's connection (the pool manager does this to hung workers)."""
        conn = self.connections.get(peer)
        if conn is not None:
            conn.abort()

    async def drain(self, timeout: float) -> None:
        """Stop taking work, let in-flight requests finish (up to ``timeout``), close."""
        self.stats.draining = True
        if self._reaper is not None:
            self._reaper.cancel()
        if self._server is not None:
            self._server.close()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.connections.values()):
            conn.abort()

    async def _close_idle_forever(self) -> None:
        """A connection that has carried nothing for ``idle_timeout_s`` is closed.

        Clients keep the connections they use busy with requests, or with a ping when
        they have nothing to ask (actors.runtime.leasing); what stays silent is gone.
        """
        idle_s = self.limits.idle_timeout_s
        while True:
            await asyncio.sleep(max(0.05, idle_s / 4))
            cutoff = time.monotonic() - idle_s
            for conn in list(self.connections.values()):
                if conn.last_active < cutoff and conn.in_flight == 0:
                    log.info("idle_connection_closed", peer=conn.peer, peer_kind=conn.kind)
                    conn.abort()


class _ServerConnection(asyncio.Protocol, Generic[M]):
    def __init__(self, server: Server[M]) -> None:
        self._server = server
        self._stats = server.stats
        self._limits = server.limits
        self._decoder = protocol.FrameDecoder(server.limits.max_frame)
        self._transport: asyncio.Transport | None = None
        self._writer: CoalescingWriter | None = None
        self.peer = "?"
        self.kind = ""
        self._allowed: frozenset[type[Message]] = frozenset()
        self._counted = False
        self.in_flight = 0
        self.last_active = time.monotonic()
        self.paused = False  # not reading: the peer does not read its replies

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called once the TLS handshake has verified the peer's certificate chain.
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        kind = peer_kind(transport)
        if kind is None:
            log.warning("refused_peer", peer=self.peer, reason="its certificate names no kind")
            self._transport.abort()
            return
        self.kind = kind
        self._allowed = self._server.allow.get(kind, frozenset())
        self._writer = CoalescingWriter(self._transport)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self._stats.connections >= self._stats.max_connections or self._stats.draining:
            # Over the limit: say why on call id 0 and hang up.
            # Written at once (no coalescing): the close right after would drop it.
            self._writer = None
            self._send(0, time.time() + 1, "", protocol.error_message(Busy("too many connections")))
            transport.close()
            return
        self._stats.connections += 1
        self._counted = True
        self._server.connections[self.peer] = self

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._counted:
            self._stats.connections -= 1
            self._counted = False
            self._server.connections.pop(self.peer, None)
            if self._server.on_close is not None:
                self._server.on_close(self.peer)

    # -- backpressure: a peer that does not read its replies is not read from either --

    def pause_writing(self) -> None:
        if self._transport is not None:
            log.info("peer_not_reading", peer=self.peer, peer_kind=self.kind)
            self.paused = True
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self.paused = False
            self._transport.resume_reading()

    # -- frames ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._transport is None or not self._counted:
            return
        self.last_active = time.monotonic()
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as exc:
            log.warning("protocol_error", peer=self.peer, error=str(exc))
            self._transport.abort()
            return
        now = time.time()
        for frame in frames:
            if frame.is_response:
                log.warning("protocol_error", peer=self.peer, error="response sent to a server")
                self._transport.abort()
                return
            self._take(frame, now)

    def _take(self, frame: protocol.Frame, now: float) -> None:
        if frame.deadline <= now:
            # The caller has given up already: drop the work, but say so.
            self._note_failure(frame, DeadlineExceeded("deadline passed on arrival"))
            return
        if type(frame.message) not in self._allowed:
            name = type(frame.message).__name__
            log.warning("forbidden_request", peer=self.peer, peer_kind=self.kind, message=name)
            self._reply_error(frame, Forbidden(f"a {self.kind} may not send {name} here"))
            return
        if self._stats.draining:
            self._reply_error(frame, Busy("worker is draining"))
            return
        if self._stats.in_flight >= self._stats.max_in_flight:
            self._reply_error(frame, Busy("too many requests in flight"))
            return
        if self.in_flight >= self._limits.max_in_flight_per_connection:
            self._reply_error(frame, Busy("too many requests in flight on this connection"))
            return
        self._stats.in_flight += 1
        self.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._run(frame))
        self._server.tasks.add(task)
        task.add_done_callback(self._server.tasks.discard)

    async def _run(self, frame: protocol.Frame) -> None:
        # The role check made this one of the classes of M.
        envelope = Envelope(
            cast(M, frame.message), frame.deadline, frame.trace_id, self.peer, self.kind
        )
        on_error = self._server.on_error
        try:
            structlog.contextvars.bind_contextvars(request_id=frame.trace_id)
            try:
                async with asyncio.timeout(frame.deadline - time.time()):
                    reply = await self._server.handler(envelope)
                _check_reply(frame.message, reply)
            except TimeoutError:
                # Past the deadline nobody waits for an answer; count it, send nothing.
                if on_error:
                    on_error(envelope, DeadlineExceeded("deadline passed while handling"))
                return
            except UserhubError as exc:
                if on_error:
                    on_error(envelope, exc)
                reply = protocol.error_message(exc)
            except Exception as exc:
                log.exception("handler_failed", message_type=type(frame.message).__name__)
                if on_error:
                    on_error(envelope, exc)
                reply = protocol.error_message(InternalError("internal error"))
            self._send(frame.call_id, frame.deadline, frame.trace_id, reply)
        finally:
            self._stats.in_flight -= 1
            self.in_flight -= 1
            self.last_active = time.monotonic()

    def _reply_error(self, frame: protocol.Frame, exc: UserhubError) -> None:
        self._note_failure(frame, exc)
        self._send(frame.call_id, frame.deadline, frame.trace_id, protocol.error_message(exc))

    def _note_failure(self, frame: protocol.Frame, exc: UserhubError) -> None:
        """A request refused before any handler ran: one log line and the error count."""
        log.info(
            "rejected",
            request_id=frame.trace_id,
            message=type(frame.message).__name__,
            error_code=exc.code,
        )
        if self._server.on_error:
            envelope = Envelope(frame.message, frame.deadline, frame.trace_id, self.peer, self.kind)
            self._server.on_error(envelope, exc)

    def _send(self, call_id: int, deadline: float, trace_id: str, reply: Message) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return  # the peer has gone; never write to a dead connection
        try:
            data = protocol.encode(
                reply,
                call_id=call_id,
                deadline=deadline,
                trace_id=trace_id,
                response=True,
                max_frame=self._limits.max_frame,
            )
        except ProtocolError as exc:
            log.error("reply_too_large", error=str(exc))
            data = protocol.encode(
                protocol.error_message(InternalError("reply too large")),
                call_id=call_id,
                deadline=deadline,
                trace_id=trace_id,
                response=True,
            )
        (self._writer or transport).write(data)


def _check_reply(request: Message, reply: object) -> None:
    """A handler must answer with the type its request names (errors are raised)."""
    if not isinstance(request, messages.Request):
        raise InternalError(f"{type(request).__name__} is not a request")
    expected = messages.reply_type(request)
    if not isinstance(reply, expected):
        log.error("wrong_reply_type", request=type(request).__name__, reply=type(reply).__name__)
        raise InternalError(
            f"handler answered {type(request).__name__} with {type(reply).__name__},"
            f" not {expected.__name__}"
        )
