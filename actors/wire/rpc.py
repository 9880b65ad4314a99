"""Request/response over the frame protocol: a multiplexed client and a bounded server.

Many calls share one TCP connection; each carries a call id and the reply with the
same id completes it. A reply to an id we never issued (or already answered) means
the stream is corrupt, so the connection is closed, never resynchronised. A caller
never waits past its own deadline; a server drops work whose deadline has passed and
never writes to a connection whose peer has gone.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import structlog

from actors.wire import messages, protocol
from actors.wire.errors import (
    Busy,
    ConnectionLost,
    DeadlineExceeded,
    InternalError,
    ProtocolError,
    UserhubError,
)
from actors.wire.messages import Message

log = structlog.get_logger("rpc")

# Replies to calls that timed out are expected and discarded, not treated as a
# protocol error; this many of the most recent abandoned ids are remembered.
_MAX_ABANDONED = 10_000


class _CoalescingWriter:
    """Frames written during one turn of the event loop go out in one system call.

    Under load many calls (or replies) on one connection complete in the same turn;
    writing each at once costs a send() and, on the other side, a wake-up per frame.
    Holding them until the end of the turn (``call_soon``) adds no waiting of its
    own and turns N sends into one.
    """

    __slots__ = ("_chunks", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._chunks: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._chunks:
            self._loop.call_soon(self._flush)
        self._chunks.append(data)

    def _flush(self) -> None:
        chunks, self._chunks = self._chunks, []
        if self._transport.is_closing():
            return  # the peer has gone; never write to a dead connection
        self._transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))


class Connection(asyncio.Protocol):
    """Client side of one multiplexed connection to a worker or the pool manager."""

    def __init__(self, peer: str, max_frame: int = protocol.DEFAULT_MAX_FRAME) -> None:
        self.peer = peer
        self._decoder = protocol.FrameDecoder(max_frame)
        self._max_frame = max_frame
        self._transport: asyncio.Transport | None = None
        self._writer: _CoalescingWriter | None = None
        self._pending: dict[int, asyncio.Future[Message]] = {}
        # Ids of calls we stopped waiting for, oldest first; a late reply to one is
        # dropped. Servers never answer work past its deadline, so most ids are never
        # claimed: the oldest are forgotten beyond a bound.
        self._abandoned: OrderedDict[int, bool] = OrderedDict()
        self._ids = itertools.count(1)
        self._closed = asyncio.get_running_loop().create_future()
        self.close_reason = ""

    # -- opening and closing ---------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        timeout: float,
        max_frame: int = protocol.DEFAULT_MAX_FRAME,
    ) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: cls(f"{host}:{port}", max_frame), host, port
                )
        except (OSError, TimeoutError) as exc:
            raise ConnectionLost(f"cannot connect to {host}:{port}: {exc!r}") from None
        return conn

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._closed.done()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def closed_future(self) -> asyncio.Future[None]:
        """Resolves when the connection closes, for callbacks that react to it."""
        return self._closed

    def close(self, reason: str = "closed by us") -> None:
        if self._transport is not None:
            self._transport.close()
        self._fail_all(reason)

    def abort(self, reason: str) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        if not self._closed.done():
            self.close_reason = reason
            self._closed.set_result(None)
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(f"{self.peer}: {reason}"))

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._writer = _CoalescingWriter(self._transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(f"connection lost ({exc!r})" if exc else "peer closed the connection")

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as exc:
            log.warning("protocol_error", peer=self.peer, error=str(exc))
            self.abort(f"protocol error: {exc}")
            return
        for frame in frames:
            if not frame.is_response:
                self.abort("request frame on a client connection")
                return
            fut = self._pending.pop(frame.call_id, None)
            if fut is None:
                if self._abandoned.pop(frame.call_id, False):
                    continue
                log.warning("unexpected_reply", peer=self.peer, call_id=frame.call_id)
                self.abort("reply to an unknown call id")
                return
            if not fut.done():
                fut.set_result(frame.message)

    # -- calls --------------------------------------------------------------------------

    async def call(self, message: Message, *, deadline: float, trace_id: str) -> Message:
        """Send one request and wait for its reply, never past ``deadline``.

        Raises the peer's error as the matching UserhubError, ConnectionLost if the
        connection fails, DeadlineExceeded when the deadline passes first.
        """
        if not self.is_open:
            raise ConnectionLost(f"{self.peer}: {self.close_reason or 'not connected'}")
        remaining = deadline - time.time()
        if remaining <= 0:
            raise DeadlineExceeded("deadline passed before the call was sent")
        call_id = next(self._ids)
        frame = protocol.encode(
            message,
            call_id=call_id,
            deadline=deadline,
            trace_id=trace_id,
            max_frame=self._max_frame,
        )
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Message] = loop.create_future()
        self._pending[call_id] = fut
        assert self._writer is not None
        self._writer.write(frame)
        # A timer on the future itself: a fraction of asyncio.timeout()'s cost, and
        # this runs for every call a gateway or cache worker makes.
        timer = loop.call_later(remaining, _expire, fut)
        try:
            reply = await fut
        except DeadlineExceeded:
            self._abandon(call_id)
            raise DeadlineExceeded(f"{self.peer} did not answer in time") from None
        except asyncio.CancelledError:
            self._abandon(call_id)
            raise
        finally:
            timer.cancel()
        if isinstance(reply, messages.Error):
            protocol.raise_error(reply)
        return reply

    def _abandon(self, call_id: int) -> None:
        if self._pending.pop(call_id, None) is not None:
            self._abandoned[call_id] = True
            while len(self._abandoned) > _MAX_ABANDONED:
                self._abandoned.popitem(last=False)


def _expire(fut: asyncio.Future[Message]) -> None:
    if not fut.done():
        fut.set_exception(DeadlineExceeded("deadline passed"))


# -- server -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A request as a handler sees it: the typed message and its envelope."""

    message: Message
    deadline: float
    trace_id: str
    peer: str


Handler = Callable[[Request], Awaitable[Message]]
ErrorHook = Callable[[Request, BaseException], None]
CloseHook = Callable[[str], None]


class ServerStats:
    """Counts shared by every connection of one server, for limits and metrics."""

    def __init__(self, max_connections: int, max_in_flight: int) -> None:
        self.max_connections = max_connections
        self.max_in_flight = max_in_flight
        self.connections = 0
        self.in_flight = 0
        self.draining = False


class _ServerConnection(asyncio.Protocol):
    def __init__(
        self,
        handler: Handler,
        stats: ServerStats,
        max_frame: int,
        tasks: set[asyncio.Task[None]],
        on_error: ErrorHook | None,
        registry: dict[str, _ServerConnection],
        on_close: CloseHook | None,
    ) -> None:
        self._handler = handler
        self._stats = stats
        self._decoder = protocol.FrameDecoder(max_frame)
        self._max_frame = max_frame
        self._tasks = tasks
        self._on_error = on_error
        self._registry = registry
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self._writer: _CoalescingWriter | None = None
        self._peer = "?"
        self._counted = False

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._writer = _CoalescingWriter(self._transport)
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
        self._registry[self._peer] = self

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._counted:
            self._stats.connections -= 1
            self._counted = False
            self._registry.pop(self._peer, None)
            if self._on_close is not None:
                self._on_close(self._peer)

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
            if self._stats.draining:
                self._reply_error(frame, Busy("worker is draining"))
                continue
            if self._stats.in_flight >= self._stats.max_in_flight:
                self._reply_error(frame, Busy("too many requests in flight"))
                continue
            self._stats.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(frame))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, frame: protocol.Frame) -> None:
        request = Request(frame.message, frame.deadline, frame.trace_id, self._peer)
        try:
            structlog.contextvars.bind_contextvars(request_id=frame.trace_id)
            try:
                async with asyncio.timeout(frame.deadline - time.time()):
                    reply: Message = await self._handler(request)
            except TimeoutError:
                # Past the deadline nobody waits for an answer; count it, send nothing.
                if self._on_error:
                    self._on_error(request, DeadlineExceeded("deadline passed while handling"))
                return
            except UserhubError as exc:
                if self._on_error:
                    self._on_error(request, exc)
                reply = protocol.error_message(exc)
            except Exception as exc:
                log.exception("handler_failed", message_type=type(frame.message).__name__)
                if self._on_error:
                    self._on_error(request, exc)
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
        if self._on_error:
            self._on_error(Request(frame.message, frame.deadline, frame.trace_id, self._peer), exc)

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
                max_frame=self._max_frame,
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


class Server:
    """A bounded frame server: connection limit, in-flight limit, deadline-aware."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_connections: int = 1024,
        max_in_flight: int = 4096,
        max_frame: int = protocol.DEFAULT_MAX_FRAME,
        on_error: ErrorHook | None = None,
        on_close: CloseHook | None = None,
    ) -> None:
        self._handler = handler
        self._on_close = on_close
        self._connections: dict[str, _ServerConnection] = {}
        self.stats = ServerStats(max_connections, max_in_flight)
        self._max_frame = max_frame
        self._on_error = on_error
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerConnection(
                self._handler,
                self.stats,
                self._max_frame,
                self._tasks,
                self._on_error,
                self._connections,
                self._on_close,
            ),
            host,
            port,
            backlog=1024,
        )
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    def close_peer(self, peer: str) -> None:
        """Cut one client's connection (the pool manager does this to hung workers)."""
        conn = self._connections.get(peer)
        if conn is not None:
            conn.abort()

    async def drain(self, timeout: float) -> None:
        """Stop taking work, let in-flight requests finish (up to ``timeout``), close."""
        self.stats.draining = True
        if self._server is not None:
            self._server.close()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._connections.values()):
            conn.abort()
