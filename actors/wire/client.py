"""The caller's side of one multiplexed connection to a worker or the pool manager.

Many calls share one TCP connection; each carries a call id and the reply with the
same id completes it. A reply to an id we never issued (or already answered) means
the stream is corrupt, so the connection is closed, never resynchronised. A caller
never waits past its own deadline. Every request names its reply type
(:class:`actors.wire.messages.Request`); a reply of another type is a protocol error
and closes the connection too, since a peer that answers the wrong question cannot
be trusted with the next one.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from collections import OrderedDict
from typing import cast

import structlog

from actors.wire import messages, protocol
from actors.wire.coalesce import CoalescingWriter
from actors.wire.errors import ConnectionLost, DeadlineExceeded, ProtocolError
from actors.wire.identity import HANDSHAKE_TIMEOUT_S, Identity, peer_kind
from actors.wire.messages import Message, R, Request

log = structlog.get_logger("rpc")

# Replies to calls that timed out are expected and discarded, not treated as a
# protocol error; this many of the most recent abandoned ids are remembered.
_MAX_ABANDONED = 10_000


class Connection(asyncio.Protocol):
    """Client side of one multiplexed connection to a worker or the pool manager."""

    def __init__(self, peer: str, max_frame: int = protocol.DEFAULT_MAX_FRAME) -> None:
        self.peer = peer
        self._decoder = protocol.FrameDecoder(max_frame)
        self._max_frame = max_frame
        self._transport: asyncio.Transport | None = None
        self._writer: CoalescingWriter | None = None
        self._pending: dict[int, asyncio.Future[Message]] = {}
        # Ids of calls we stopped waiting for, oldest first; a late reply to one is
        # dropped. Servers never answer work past its deadline, so most ids are never
        # claimed: the oldest are forgotten beyond a bound.
        self._abandoned: OrderedDict[int, bool] = OrderedDict()
        self._ids = itertools.count(1)
        self._closed = asyncio.get_running_loop().create_future()
        self.close_reason = ""
        self.peer_kind = ""
        self.last_active = time.monotonic()

    # -- opening and closing ---------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        timeout: float,
        identity: Identity,
        expect: str,
        max_frame: int = protocol.DEFAULT_MAX_FRAME,
    ) -> Connection:
        """Connect, prove who we are and check that the server is of kind ``expect``.

        A refused or failed connection, a failed TLS handshake and a server of
        another kind all raise ConnectionLost: the caller leaves that address alone
        for a moment, whatever the reason.
        """
        loop = asyncio.get_running_loop()
        peer = f"{host}:{port}"
        try:
            async with asyncio.timeout(timeout):
                transport, conn = await loop.create_connection(
                    lambda: cls(peer, max_frame),
                    host,
                    port,
                    ssl=identity.client,
                    ssl_handshake_timeout=min(timeout, HANDSHAKE_TIMEOUT_S),
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise ConnectionLost(f"cannot connect to {peer}: {exc!r}") from None
        kind = peer_kind(transport)
        if kind != expect:
            conn.abort(f"{peer} is a {kind or 'peer of no kind'}, not a {expect}")
            log.warning("unexpected_peer_kind", peer=peer, kind=kind, expected=expect)
            raise ConnectionLost(f"{peer} is not a {expect}")
        conn.peer_kind = kind
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
        self._writer = CoalescingWriter(self._transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(f"connection lost ({exc!r})" if exc else "peer closed the connection")

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
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

    async def call(self, message: Request[R], *, deadline: float, trace_id: str) -> R:
        """Send one request and wait for its reply, never past ``deadline``.

        Raises the peer's error as the matching UserhubError, ConnectionLost if the
        connection fails, DeadlineExceeded when the deadline passes first, and
        ProtocolError (closing the connection) if the reply is not of the type the
        request names.
        """
        expected = messages.reply_type(message)
        writer = self._writer
        if writer is None or not self.is_open:
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
        writer.write(frame)
        self.last_active = time.monotonic()
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
        if isinstance(reply, expected):
            return reply
        if isinstance(reply, messages.Error):
            protocol.raise_error(reply)
        got, asked = type(reply).__name__, type(message).__name__
        log.warning("wrong_reply_type", peer=self.peer, request=asked, reply=got)
        self.abort(f"{got} is no answer to {asked}")
        raise ProtocolError(f"{self.peer} answered {asked} with {got}")

    def _abandon(self, call_id: int) -> None:
        if self._pending.pop(call_id, None) is not None:
            self._abandoned[call_id] = True
            while len(self._abandoned) > _MAX_ABANDONED:
                self._abandoned.popitem(last=False)


def _expire(fut: asyncio.Future[Message]) -> None:
    if not fut.done():
        fut.set_exception(DeadlineExceeded("deadline passed"))
