"""The frame protocol as a state machine, against a real Server on loopback.

Hypothesis drives a handful of raw client connections through any interleaving of:
a well-formed request, the first part of a frame, the rest of it, collecting replies,
hanging up, opening a new connection, and garbage (on a fresh connection or on one
with calls in flight). What must hold after every step:

* every reply on a connection answers a call that was sent whole on it, once, with
  the answer the handler gives for that call;
* the server closes a connection only if garbage was sent on it, and always does;
* a connection that got no garbage answers all of its calls;
* the server keeps accepting and serving new connections;
* once nothing is outstanding, the server's in-flight count is back to 0 and its
  connection count matches the connections still open.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from actors.wire import errors, messages, protocol
from actors.wire.client import Connection
from actors.wire.messages import Message
from actors.wire.roles import DB_WORKER, GATEWAY
from actors.wire.server import Envelope, Limits, Server
from tests.loopback import identity

HOST = "127.0.0.1"
T = TypeVar("T")
WAIT_S = 3.0  # far above what any step needs on loopback; only a broken server waits it out


def expected_reply(n: int) -> Message:
    """What the handler answers to a Ping whose trace id carries ``n``."""
    if n % 5 == 0:
        return protocol.error_message(errors.InvalidInput(f"refused {n}", field="n"))
    return messages.Pong(kind="echo", pid=n)


async def handler(request: Envelope[messages.Ping]) -> Message:
    n = int(request.trace_id, 16)
    await asyncio.sleep((n % 3) * 0.002)  # replies come back out of order
    if n % 5 == 0:
        raise errors.InvalidInput(f"refused {n}", field="n")
    return messages.Pong(kind="echo", pid=n)


def request_frame(n: int, call_id: int) -> bytes:
    return protocol.encode(
        messages.Ping(), call_id=call_id, deadline=time.time() + 30, trace_id=f"{n:032x}"
    )


def is_garbage(data: bytes) -> bool:
    """True if the decoder refuses ``data`` as soon as it has all of it."""
    try:
        frames = protocol.FrameDecoder().feed(data)
    except errors.ProtocolError:
        return True
    return any(f.is_response for f in frames)  # a server refuses a response too


def header_then(body: bytes) -> bytes:
    """A valid request header announcing ``body``, then ``body``."""
    code = messages.TYPE_CODES[messages.Heartbeat]
    deadline_ms = int((time.time() + 30) * 1000)
    header = protocol.HEADER.pack(
        protocol.MAGIC, protocol.VERSION, 0, code, 9, deadline_ms, bytes(16), len(body)
    )
    return header + body


# Byte strings the decoder refuses: a wrong magic, a bad header field, a body that is not
# the announced message. Anything a draw gets wrong falls back to a plain bad magic.
_BAD_MAGIC = b"XX" + bytes(protocol.HEADER_SIZE)
_valid = request_frame(7, 1)
garbage = st.one_of(
    st.binary(min_size=protocol.HEADER_SIZE, max_size=120),
    st.builds(
        lambda offset, value: _valid[:offset] + bytes([value]) + _valid[offset + 1 :],
        st.integers(0, protocol.HEADER_SIZE - 5),  # magic, version, flags, type, ids
        st.integers(0, 255),
    ),
    st.builds(
        header_then,
        st.sampled_from([b"", b"[]", b"{", b'{"in_flight": "x"}', b"\xff\xfe", b"nul\0"]),
    ),
).map(lambda raw: raw if is_garbage(raw) else _BAD_MAGIC)


@dataclass(eq=False)
class Client:
    """One raw client connection and what the model expects of it."""

    name: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    decoder: protocol.FrameDecoder = field(default_factory=protocol.FrameDecoder)
    sent: dict[int, int] = field(default_factory=dict)  # call id -> n, sent whole
    replies: dict[int, Message] = field(default_factory=dict)
    partial: bytes = b""  # the rest of a frame whose beginning was sent
    partial_call: tuple[int, int] | None = None
    garbage: bool = False
    hung_up: bool = False  # we closed it
    closed_by_server: bool = False
    errors: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def read_loop(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for frame in self.decoder.feed(data):
                    if frame.call_id in self.replies:
                        self.errors.append(f"second reply to call {frame.call_id}")
                    self.replies[frame.call_id] = frame.message
                    if not frame.is_response:
                        self.errors.append(f"request frame from the server ({frame.call_id})")
        except OSError:
            pass
        except errors.ProtocolError as exc:
            self.errors.append(f"server sent an undecodable frame: {exc}")
        if not self.hung_up:
            self.closed_by_server = True

    @property
    def open(self) -> bool:
        return not self.hung_up and not self.closed_by_server

    def unanswered(self) -> set[int]:
        return set(self.sent) - set(self.replies)


class ProtocolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.server: Server[messages.Ping] = Server(
            DB_WORKER,
            handler,
            (messages.Ping,),
            identity(DB_WORKER),
            limits=Limits(max_connections=64),
            allow={GATEWAY: frozenset({messages.Ping})},
        )
        self.port = 0
        self.names = itertools.count(1)
        self.numbers = itertools.count(1)
        self.all_clients: list[Client] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, WAIT_S * 2))

    async def until(self, pred: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not pred():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.002)

    def live(self, whole: bool | None = None) -> list[Client]:
        """Open connections that got no garbage; ``whole``: with no half-sent frame."""
        return [
            c
            for c in self.all_clients
            if c.open and not c.garbage and (whole is None or whole == (not c.partial))
        ]

    # -- set-up and connections ----------------------------------------------------------

    @initialize()
    def start(self) -> None:
        _, self.port = self.run(self.server.start(HOST, 0))
        self.run(self._connect())

    async def _connect(self) -> Client:
        reader, writer = await asyncio.open_connection(
            HOST, self.port, ssl=identity(GATEWAY).client
        )
        client = Client(next(self.names), reader, writer)
        client.task = asyncio.get_running_loop().create_task(client.read_loop())
        self.all_clients.append(client)
        return client

    @precondition(lambda self: len(self.live()) < 4)
    @rule(count=st.integers(0, 4))
    def connect(self, count: int) -> None:
        client = self.run(self._connect())
        if count:
            self._send(client, count)

    @precondition(lambda self: self.live())
    @rule(pick=st.integers(0, 7))
    def hang_up(self, pick: int) -> None:
        clients = self.live()
        client = clients[pick % len(clients)]
        client.hung_up = True
        client.writer.close()
        self.run(self.until(lambda: client.task is not None and client.task.done(), "close"))

    # -- requests ------------------------------------------------------------------------

    def _new_call(self) -> tuple[int, int]:
        n = next(self.numbers)
        return n, n * 3  # call ids differ from the numbers, so a mix-up shows

    @precondition(lambda self: self.live(whole=True))
    @rule(pick=st.integers(0, 7), count=st.integers(1, 8))
    def send_requests(self, pick: int, count: int) -> None:
        clients = self.live(whole=True)  # a frame now would land inside a half-sent one
        self._send(clients[pick % len(clients)], count)

    def _send(self, client: Client, count: int) -> None:
        data = b""
        for _ in range(count):
            n, call_id = self._new_call()
            data += request_frame(n, call_id)
            client.sent[call_id] = n
        client.writer.write(data)
        self.run(client.writer.drain())

    @precondition(lambda self: self.live(whole=True))
    @rule(pick=st.integers(0, 7), cut=st.floats(0.0, 1.0, exclude_max=True))
    def send_partial(self, pick: int, cut: float) -> None:
        clients = self.live(whole=True)
        client = clients[pick % len(clients)]
        n, call_id = self._new_call()
        frame = request_frame(n, call_id)
        at = max(1, int(len(frame) * cut))
        client.writer.write(frame[:at])
        client.partial = frame[at:]
        client.partial_call = (call_id, n)
        self.run(client.writer.drain())

    @precondition(lambda self: self.live(whole=False))
    @rule(pick=st.integers(0, 7))
    def complete_partial(self, pick: int) -> None:
        clients = self.live(whole=False)
        client = clients[pick % len(clients)]
        assert client.partial_call is not None
        call_id, n = client.partial_call
        client.writer.write(client.partial)
        client.sent[call_id] = n
        client.partial, client.partial_call = b"", None
        self.run(client.writer.drain())

    @precondition(lambda self: self.live())
    @rule(pick=st.integers(0, 7))
    def collect(self, pick: int) -> None:
        """Wait for every call sent whole on a healthy connection to be answered."""
        clients = self.live()
        client = clients[pick % len(clients)]
        self.run(self.until(lambda: not client.unanswered() or not client.open, "replies"))
        assert client.open, f"client {client.name} was closed with calls in flight"

    # -- garbage ---------------------------------------------------------------------------

    @rule(pick=st.integers(0, 7), junk=garbage, fresh=st.booleans())
    def send_garbage(self, pick: int, junk: bytes, fresh: bool) -> None:
        """Garbage on a new connection, or after whole calls on an existing one."""
        clients = self.live(whole=True)
        if fresh or not clients:
            client = self.run(self._connect())
        else:
            client = clients[pick % len(clients)]
        client.garbage = True
        client.writer.write(junk)
        self.run(self.until(lambda: client.closed_by_server, "the server to hang up"))
        if not client.sent:
            assert not client.replies, "a garbage-only connection got a reply"

    # -- the server keeps serving ----------------------------------------------------------

    @rule()
    def new_connection_is_served(self) -> None:
        async def go() -> Message:
            conn = await Connection.open(
                HOST, self.port, timeout=WAIT_S, identity=identity(GATEWAY), expect=DB_WORKER
            )
            try:
                return await conn.call(
                    messages.Ping(), deadline=time.time() + WAIT_S, trace_id=f"{1:032x}"
                )
            finally:
                conn.close()

        assert self.run(go()) == messages.Pong(kind="echo", pid=1)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def replies_match_calls(self) -> None:
        for client in self.all_clients:
            assert not client.errors, (client.name, client.errors)
            for call_id, reply in client.replies.items():
                assert call_id in client.sent, (client.name, call_id, "reply to an unsent call")
                assert reply == expected_reply(client.sent[call_id]), (client.name, call_id)

    @invariant()
    def only_garbage_gets_a_connection_closed(self) -> None:
        for client in self.all_clients:
            if client.closed_by_server:
                assert client.garbage, f"client {client.name} closed without garbage"

    def teardown(self) -> None:
        try:
            self.run(self._settle())
        finally:
            for client in self.all_clients:
                client.writer.close()
            self.run(self.server.drain(0.5))
            for client in self.all_clients:
                if client.task is not None:
                    client.task.cancel()
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()

    async def _settle(self) -> None:
        """Nothing outstanding: every healthy call answered, counters back at rest."""
        healthy = [c for c in self.all_clients if c.open and not c.garbage]
        await self.until(lambda: all(not c.unanswered() for c in healthy), "the last replies")
        for client in healthy:
            assert client.open, f"client {client.name} was closed"
        await self.until(lambda: self.server.stats.in_flight == 0, "in-flight back to 0")
        still_open = sum(c.open for c in self.all_clients)
        await self.until(
            lambda: self.server.stats.connections == sum(c.open for c in self.all_clients),
            f"the server to count {still_open} open connections",
        )
        self.replies_match_calls()


ProtocolMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestProtocolStateMachine = ProtocolMachine.TestCase
