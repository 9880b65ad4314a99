"""Who may open an actor link, what each kind may say on it, and the per-link bounds.

Real TLS over loopback, certificates from tools.pki: a throwaway tree CA for the
session (tests.identities) and, where a test needs one, a second CA nobody trusts.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.wire import errors, messages, protocol
from actors.wire.client import Connection
from actors.wire.identity import Identity
from actors.wire.messages import Message
from actors.wire.roles import ADMIN, CACHE_WORKER, DB_WORKER, GATEWAY, POOL_MANAGER
from actors.wire.server import Envelope, Limits, Server
from tests.loopback import identity
from tools import pki

HOST = "127.0.0.1"


def dl(seconds: float) -> float:
    return time.time() + seconds


async def pong(request: Envelope[Message]) -> Message:
    """Pong to a Ping; to anything else "not found", which says the handler ran."""
    if isinstance(request.message, messages.Ping):
        return messages.Pong(kind="db_worker")
    raise errors.NotFound("handled")


@pytest.fixture
async def db_server() -> AsyncIterator[tuple[Server[Message], int]]:
    """A server with the db_worker's role table and certificate."""
    server: Server[Message] = Server(
        DB_WORKER, pong, messages.members(messages.DbWorkerRequest), identity(DB_WORKER)
    )
    _, port = await server.start(HOST, 0)
    try:
        yield server, port
    finally:
        await server.drain(0.2)


async def connect(port: int, kind: str, expect: str = DB_WORKER) -> Connection:
    return await Connection.open(HOST, port, timeout=2, identity=identity(kind), expect=expect)


# -- who may connect ------------------------------------------------------------------------


async def test_a_plain_tcp_client_gets_no_frame_read(
    db_server: tuple[Server[Message], int],
) -> None:
    server, port = db_server
    reader, writer = await asyncio.open_connection(HOST, port)
    ping = protocol.encode(messages.Ping(), call_id=1, deadline=dl(5), trace_id="")
    writer.write(ping)
    async with asyncio.timeout(2):
        answer = await reader.read(65536)
    # Whatever came back (a TLS alert at most) is no frame, and nothing was handled.
    assert not answer.startswith(protocol.MAGIC)
    assert server.stats.in_flight == 0 and server.stats.connections == 0
    writer.close()


async def test_a_certificate_of_another_ca_is_refused(
    db_server: tuple[Server[Message], int], tmp_path: Path
) -> None:
    server, port = db_server
    pki.ensure(tmp_path / "other")
    stranger = Identity.load(tmp_path / "other", GATEWAY)
    with pytest.raises(errors.ConnectionLost):
        await Connection.open(HOST, port, timeout=2, identity=stranger, expect=DB_WORKER)
    assert server.stats.connections == 0


async def test_a_client_without_a_certificate_is_refused(
    db_server: tuple[Server[Message], int],
) -> None:
    server, port = db_server
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(HOST, port, ssl=anonymous)
    writer.write(protocol.encode(messages.Ping(), call_id=1, deadline=dl(5), trace_id=""))
    async with asyncio.timeout(2):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            if not await reader.read(65536):
                raise ConnectionResetError("closed")
    assert server.stats.connections == 0


async def test_a_client_refuses_a_server_of_another_kind(
    db_server: tuple[Server[Message], int],
) -> None:
    _, port = db_server
    with pytest.raises(errors.ConnectionLost, match="is not a cache_worker"):
        await connect(port, GATEWAY, expect=CACHE_WORKER)


async def test_a_client_refuses_a_server_of_another_ca(tmp_path: Path) -> None:
    pki.ensure(tmp_path / "other")
    fake = Identity.load(tmp_path / "other", DB_WORKER)
    server: Server[Message] = Server(
        DB_WORKER, pong, messages.members(messages.DbWorkerRequest), fake
    )
    _, port = await server.start(HOST, 0)
    try:
        with pytest.raises(errors.ConnectionLost):
            await connect(port, GATEWAY)
    finally:
        await server.drain(0.1)


# -- what each kind may say ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "message", "allowed"),
    [
        (GATEWAY, messages.Login("ann", "pw-pw-pw-pw"), True),
        (GATEWAY, messages.UpdateUser(user_id=4, idempotency_key="k", nickname="x"), False),
        (GATEWAY, messages.ResolveSession("ab" * 32), False),
        (CACHE_WORKER, messages.UpdateUser(user_id=4, idempotency_key="k", nickname="x"), True),
        (CACHE_WORKER, messages.Login("ann", "pw-pw-pw-pw"), False),
        (ADMIN, messages.Login("ann", "pw-pw-pw-pw"), False),
        (ADMIN, messages.Ping(), True),
    ],
    ids=lambda v: v if isinstance(v, str | bool) else type(v).__name__,
)
async def test_each_kind_may_send_only_what_its_role_needs(
    db_server: tuple[Server[Message], int],
    kind: str,
    message: messages.Request[Message],
    allowed: bool,
) -> None:
    _, port = db_server
    conn = await connect(port, kind)
    try:
        expected = (errors.NotFound if allowed else errors.Forbidden,)
        if isinstance(message, messages.Ping) and allowed:
            assert await conn.call(message, deadline=dl(2), trace_id="") == messages.Pong(
                kind="db_worker"
            )
        else:
            with pytest.raises(expected):
                await conn.call(message, deadline=dl(2), trace_id="")
        assert conn.is_open, "a refused request does not cost the connection"
    finally:
        conn.close()


def test_the_role_table_only_grants_what_each_actor_handles() -> None:
    for server_kind, union in (
        (POOL_MANAGER, messages.ManagerRequest),
        (DB_WORKER, messages.DbWorkerRequest),
        (CACHE_WORKER, messages.CacheWorkerRequest),
    ):
        Server(server_kind, pong, messages.members(union), identity(server_kind))  # no ValueError
    with pytest.raises(ValueError, match="does not handle"):
        Server(DB_WORKER, pong, (messages.Ping,), identity(DB_WORKER))


# -- bounds per connection ------------------------------------------------------------------


async def test_one_connection_cannot_take_every_slot() -> None:
    gate = asyncio.Event()

    async def slow(request: Envelope[Message]) -> Message:
        await gate.wait()
        return messages.Pong()

    server: Server[Message] = Server(
        DB_WORKER,
        slow,
        messages.members(messages.DbWorkerRequest),
        identity(DB_WORKER),
        limits=Limits(max_in_flight=100, max_in_flight_per_connection=3),
    )
    _, port = await server.start(HOST, 0)
    try:
        greedy, other = await connect(port, GATEWAY), await connect(port, GATEWAY)
        held = [
            asyncio.create_task(greedy.call(messages.Ping(), deadline=dl(3), trace_id=""))
            for _ in range(3)
        ]
        await asyncio.sleep(0.1)
        with pytest.raises(errors.Busy, match="on this connection"):
            await greedy.call(messages.Ping(), deadline=dl(1), trace_id="")
        second = asyncio.create_task(other.call(messages.Ping(), deadline=dl(3), trace_id=""))
        await asyncio.sleep(0.1)
        gate.set()
        assert await asyncio.gather(*held, second) == [messages.Pong()] * 4
    finally:
        gate.set()
        await server.drain(0.2)


async def test_a_silent_connection_is_closed_after_the_idle_timeout() -> None:
    server: Server[Message] = Server(
        DB_WORKER,
        pong,
        messages.members(messages.DbWorkerRequest),
        identity(DB_WORKER),
        limits=Limits(idle_timeout_s=0.3),
    )
    _, port = await server.start(HOST, 0)
    try:
        busy, silent = await connect(port, GATEWAY), await connect(port, GATEWAY)
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # keeps talking: stays open
            await busy.call(messages.Ping(), deadline=dl(1), trace_id="")
            await asyncio.sleep(0.05)
        async with asyncio.timeout(1):
            await silent.wait_closed()
        assert busy.is_open
        assert server.stats.connections == 1
    finally:
        await server.drain(0.1)


async def test_a_peer_that_never_reads_is_not_read_either() -> None:
    """Pings from a peer that reads no reply: once the replies waiting to be written pass
    the high-water mark, the server stops reading from it, so its memory stays bounded."""
    handled = 0

    async def counting(request: Envelope[Message]) -> Message:
        nonlocal handled
        handled += 1
        return messages.Pong()

    server: Server[Message] = Server(
        DB_WORKER, counting, messages.members(messages.DbWorkerRequest), identity(DB_WORKER)
    )
    _, port = await server.start(HOST, 0)
    _, writer = await asyncio.open_connection(HOST, port, ssl=identity(GATEWAY).client)
    try:
        ping = protocol.encode(messages.Ping(), call_id=1, deadline=dl(60), trace_id="")
        paused = False
        deadline = time.monotonic() + 20
        while not paused and time.monotonic() < deadline:
            writer.write(ping * 1000)  # far more replies than any buffer holds, in time
            try:
                async with asyncio.timeout(0.05):
                    await writer.drain()
            except TimeoutError:
                pass  # our own send buffer is full: the server is not reading
            paused = any(c.paused for c in server.connections.values())
        assert paused, "the server never stopped reading from a peer that reads nothing"
        stalled_at = handled
        await asyncio.sleep(0.5)
        assert handled == stalled_at, "the server kept reading from a peer that reads nothing"
        (conn,) = server.connections.values()
        assert conn._transport is not None
        assert conn._transport.get_write_buffer_size() < 4 * 1024 * 1024
    finally:
        writer.transport.abort()
        await server.drain(0.1)
