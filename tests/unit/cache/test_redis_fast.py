"""The lean Redis connection against a scripted RESP server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import hiredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from actors.cache.redis_fast import FastRedis, pack

Reply = Callable[[list[bytes]], bytes | None]  # a command -> raw reply (None: stay silent)


class FakeRedis:
    """Answers each command with ``reply(command)``, in order, and records them."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.commands: list[list[bytes]] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.received = asyncio.Event()  # set whenever a command arrives
        self.ended = 0  # connections the client closed
        self.end = asyncio.Event()  # set whenever one is

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        parser = hiredis.Reader()
        while data := await reader.read(65536):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                self.commands.append(command)
                self.received.set()
                answer = self.reply(command)
                if answer is not None:
                    writer.write(answer)
        writer.close()
        self.ended += 1
        self.end.set()


# Starts a FakeRedis answering with the given Reply: (the server, its redis:// URL).
Serve = Callable[[Reply], Awaitable[tuple[FakeRedis, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply) -> tuple[FakeRedis, str]:
        fake = FakeRedis(reply)
        server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return fake, f"redis://127.0.0.1:{port}/0"

    yield start
    for server in servers:
        server.close()


def echo_get(command: list[bytes]) -> bytes:
    if command[0] == b"GET":
        return b"$%d\r\n%s\r\n" % (len(command[1]), command[1])
    if command[0] == b"BAD":
        return b"-ERR unknown command\r\n"
    return b"+OK\r\n"


def test_pack_writes_resp_arrays_of_bulk_strings() -> None:
    assert (
        pack(("SET", "k", b"v\r\n", 5))
        == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$1\r\n5\r\n"
    )


async def test_many_commands_in_flight_get_their_own_replies(serve: Serve) -> None:
    fake, url = await serve(echo_get)
    client = FastRedis(url, connections=2)
    keys = [f"key-{i}".encode() for i in range(200)]
    replies = await asyncio.gather(*(client.execute("GET", k) for k in keys))
    assert replies == keys
    assert fake.connections == 2  # pipelined over two connections, not one per command
    client.close()


async def test_an_error_reply_fails_only_its_command(serve: Serve) -> None:
    _, url = await serve(echo_get)
    client = FastRedis(url, connections=1)
    results = await asyncio.gather(
        client.execute("GET", "a"), client.execute("BAD"), client.execute("GET", "b"),
        return_exceptions=True,
    )  # fmt: skip
    assert results[0] == b"a" and results[2] == b"b"
    assert isinstance(results[1], ResponseError) and "unknown command" in str(results[1])
    client.close()


async def test_a_silent_server_times_out_and_the_next_call_reconnects(serve: Serve) -> None:
    silent = {"on": True}
    fake, url = await serve(lambda c: None if silent["on"] else echo_get(c))
    client = FastRedis(url, connections=1, timeout=0.2)
    with pytest.raises(RedisTimeoutError):
        await client.execute("GET", "x")
    silent["on"] = False
    assert await client.execute("GET", "y") == b"y"
    assert fake.connections == 2  # the stuck connection was dropped, not reused
    client.close()


async def test_a_cut_connection_fails_every_command_in_flight(serve: Serve) -> None:
    fake, url = await serve(lambda c: None)
    client = FastRedis(url, connections=1, timeout=5)
    calls = [asyncio.ensure_future(client.execute("GET", str(i))) for i in range(3)]
    async with asyncio.timeout(5):
        while len(fake.commands) < 3:
            fake.received.clear()
            await fake.received.wait()
    fake.writers[0].transport.abort()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    client.close()


async def test_nothing_listening_is_a_connection_error() -> None:
    client = FastRedis("redis://127.0.0.1:1/0", timeout=0.5)
    with pytest.raises(RedisConnectionError):
        await client.execute("GET", "x")


async def test_password_and_database_are_sent_first(serve: Serve) -> None:
    fake, url = await serve(echo_get)
    client = FastRedis(url.replace("redis://", "redis://user:s%40cret@").replace("/0", "/3"))
    assert await client.execute("GET", "k") == b"k"
    assert fake.commands[:3] == [[b"AUTH", b"user", b"s@cret"], [b"SELECT", b"3"], [b"GET", b"k"]]
    client.close()


async def test_credentials_from_a_file_are_sent_when_the_url_has_none(serve: Serve) -> None:
    fake, url = await serve(echo_get)
    client = FastRedis(url.replace("redis://", "redis://userhub@"), password="from-file")
    assert await client.execute("GET", "k") == b"k"
    assert fake.commands[:2] == [[b"AUTH", b"userhub", b"from-file"], [b"GET", b"k"]]
    client.close()


async def test_the_urls_own_password_wins(serve: Serve) -> None:
    fake, url = await serve(echo_get)
    client = FastRedis(url.replace("redis://", "redis://ops:own@"), username="u", password="p")
    assert await client.execute("GET", "k") == b"k"
    assert fake.commands[0] == [b"AUTH", b"ops", b"own"]
    client.close()


async def test_a_refused_password_is_a_connection_error_and_closes_the_socket(
    serve: Serve,
) -> None:
    def refuse_auth(command: list[bytes]) -> bytes:
        if command[0] == b"AUTH":
            return b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        return echo_get(command)

    fake, url = await serve(refuse_auth)
    client = FastRedis(url, connections=1, username="userhub", password="old")
    for _ in range(3):
        with pytest.raises(RedisConnectionError, match="WRONGPASS"):
            await client.execute("GET", "k")
    assert fake.commands == [[b"AUTH", b"userhub", b"old"]] * 3  # GET never sent
    async with asyncio.timeout(5):  # every refused connection was closed from our side
        while fake.ended < 3:
            await fake.end.wait()
            fake.end.clear()
    client.close()


def test_only_plain_redis_urls_take_the_fast_path() -> None:
    with pytest.raises(ValueError):
        FastRedis("rediss://127.0.0.1:6379/0")
