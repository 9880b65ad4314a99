"""The worker's side of the frame protocol: a bounded, deadline-aware server.

A server drops work whose deadline has passed and never writes to a connection
whose peer has gone. It hands its handler only requests of the union its actor
accepts (``accepts``), and checks that each reply has the type the request names,
so a handler's mistake reaches the caller as an internal error, never as a wrong
answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

import structlog

from actors.wire import messages, protocol
from actors.wire.coalesce import CoalescingWriter
from actors.wire.errors import (
    Busy,
    CallerError,
    DeadlineExceeded,
    InternalError,
    ProtocolError,
    UserhubError,
)
from actors.wire.messages import Message

log = structlog.get_logger("rpc")

M = TypeVar("M", bound=Message)
M_co = TypeVar("M_co", bound=Message, covariant=True)


@dataclass(frozen=True, slots=True)
class Envelope(Generic[M_co]):
    """A request as a handler sees it: the typed message and what travelled with it."""

    message: M_co
    deadline: float
    trace_id: str
    peer: str


ErrorHook = Callable[[Envelope[Message], BaseException], None]
CloseHook = Callable[[str], None]


class ServerStats:
    """Counts shared by every connection of one server, for limits and metrics."""

    def __init__(self, max_connections: int, max_in_flight: int) -> None:
        self.max_connections = max_connections
        self.max_in_flight = max_in_flight
        self.connections = 0
        self.in_flight = 0
        self.draining = False


class Server(Generic[M]):
    """A bounded frame server: connection limit, in-flight limit, deadline-aware.

    ``accepts`` is the tuple of message classes of the actor's request union (see
    :func:`actors.wire.messages.members`); anything else is refused with
    ``bad_request`` before a handler runs.
    """

    def __init__(
        self,
        name: str,
        handler: Callable[[Envelope[M]], Awaitable[Message]],
        accepts: tuple[type[Message], ...],
        *,
        max_connections: int = 1024,
        max_in_flight: int = 4096,
        max_frame: int = protocol.DEFAULT_MAX_FRAME,
        on_error: ErrorHook | None = None,
        on_close: CloseHook | None = None,
    ) -> None:
        self.name = name
        self.handler = handler
        self.accepts = frozenset(accepts)
        self.max_frame = max_frame
        self.on_error = on_error
        self.on_close = on_close
        self.stats = ServerStats(max_connections, max_in_flight)
        self.connections: dict[str, _ServerConnection[M]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerConnection(self), host, port, backlog=1024
        )
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
        if self._server is not None:
            self._server.close()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.connections.values()):
            conn.abort()


class _ServerConnection(asyncio.Protocol, Generic[M]):
    def __init__(self, server: Server[M]) -> None:
        self._server = server
        self._stats = server.stats
        self._decoder = protocol.FrameDecoder(server.max_frame)
        self._transport: asyncio.Transport | None = None
        self._writer: CoalescingWriter | None = None
        self._peer = "?"
        self._counted = False

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._writer = CoalescingWriter(self._transport)
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        if self._stats.connections >= self._stats.max_connections or self._stats.draining:
            # Over the limit: say why on call id 0 and hang up.
            # Written at once (no coalescing): the close right after would drop it.
            self._writer = None
            self._send(0, time.time() + 1, "", protocol.error_message(Busy("too many connections")))
            transport.close()
            return
        self._stats.connections += 1
        self._counted = True
        self._server.connections[self._peer] = self

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._counted:
            self._stats.connections -= 1
            self._counted = False
            self._server.connections.pop(self._peer, None)
            if self._server.on_close is not None:
                self._server.on_close(self._peer)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as exc:
            log.warning("protocol_error", peer=self._peer, error=str(exc))
            self._transport.abort()
            return
        now = time.time()
        for frame in frames:
            if frame.is_response:
                log.warning("protocol_error", peer=self._peer, error="response sent to a server")
                self._transport.abort()
                return
            if frame.deadline <= now:
                # The caller has given up already: drop the work, but say so.
                self._note_failure(frame, DeadlineExceeded("deadline passed on arrival"))
                continue
            if type(frame.message) not in self._server.accepts:
                name = type(frame.message).__name__
                self._reply_error(frame, CallerError(f"{self._server.name} does not handle {name}"))
                continue
            if self._stats.draining:
                self._reply_error(frame, Busy("worker is draining"))
                continue
            if self._stats.in_flight >= self._stats.max_in_flight:
                self._reply_error(frame, Busy("too many requests in flight"))
                continue
            self._stats.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(frame))
            self._server.tasks.add(task)
            task.add_done_callback(self._server.tasks.discard)

    async def _run(self, frame: protocol.Frame) -> None:
        # ``accepts`` holds exactly the classes of M: the check above made this an M.
        envelope = Envelope(cast(M, frame.message), frame.deadline, frame.trace_id, self._peer)
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
            envelope = Envelope(frame.message, frame.deadline, frame.trace_id, self._peer)
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
                max_frame=self._server.max_frame,
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
