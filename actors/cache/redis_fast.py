"""A lean Redis connection for the cache worker's hot reads: hiredis on an asyncio Protocol.

redis-py serves every other Redis call in the project (scripts, writes, pipelines,
the probe). For the two reads behind every cached profile (GETEX of the session,
GET of the profile) its per-command machinery dominates the cache worker's time: a
sequential GET through redis-py's asyncio client costs about 90-120 us of CPU
(``python -m bench.redis_paths`` compares the two), most of it in the pool
checkout, health check, retry and observability wrappers and the StreamReader
wake-ups around a round trip that Redis itself answers in a few microseconds. This
module keeps only what those reads need:

* a few plain TCP connections, each an ``asyncio.Protocol`` whose replies are parsed
  by hiredis (the C parser redis-py itself uses) straight from ``data_received``;
* replies matched to callers in order (Redis answers in order), so any number of
  commands may be in flight on one connection: pipelining for free;
* the commands of one loop turn written in one system call;
* every wait bounded by ``timeout``; a connection that fails, or is cut while
  commands are in flight, fails them all with ``ConnectionError`` and is replaced
  on the next call.

Errors from Redis (``-ERR ...``) come back as ``ResponseError`` for that command only.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _RespConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not self._waiting:
                self._fail(RedisConnectionError("a Redis reply nobody asked for"))
                return
            future = self._waiting.popleft()
            if future.done():
                continue  # its caller timed out or left; the reply is simply dropped
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        if self.closed:
            future.set_exception(RedisConnectionError("connection to Redis is closed"))
            return future
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(command)
        self._waiting.append(future)
        return future

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._transport is not None and not self.closed:
            self._transport.write(b"".join(out))

    def abort(self, reason: str) -> None:
        self._fail(RedisConnectionError(reason))

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()
        waiting, self._waiting = self._waiting, deque()
        for future in waiting:
            if not future.done():
                future.set_exception(exc)


class FastRedis:
    """A handful of pipelined connections to one Redis, for simple commands."""

    def __init__(
        self,
        url: str,
        connections: int = 2,
        timeout: float = 1.0,
        *,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        """``username`` and ``password`` apply when the URL carries none, as in redis-py."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", ""):
            raise ValueError("the fast path speaks plain redis:// only")
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._password = unquote(parts.password) if parts.password else password
        self._username = unquote(parts.username) if parts.username else username
        self._db = int(parts.path.lstrip("/") or 0)
        self._timeout = timeout
        self._slots: list[_RespConnection | None] = [None] * max(1, connections)
        self._next = itertools.cycle(range(len(self._slots)))
        self._opening: dict[int, asyncio.Task[_RespConnection]] = {}

    async def execute(self, *args: Any) -> Any:
        """Send one command and wait for its reply, at most ``timeout`` seconds."""
        slot = next(self._next)
        conn = self._slots[slot]
        if conn is None or conn.closed:
            conn = await self._connect(slot)
        future = conn.send(pack(args))
        try:
            async with asyncio.timeout(self._timeout):
                return await future
        except TimeoutError:
            # A reply that late means Redis (or the path to it) is stuck: drop the
            # connection so nothing else queues behind it.
            conn.abort("Redis did not answer in time")
            raise RedisTimeoutError("Redis did not answer in time") from None

    async def _connect(self, slot: int) -> _RespConnection:
        task = self._opening.get(slot)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._open())
            self._opening[slot] = task
        try:
            conn = await asyncio.shield(task)
        finally:
            if task.done():
                self._opening.pop(slot, None)
        self._slots[slot] = conn
        return conn

    async def _open(self) -> _RespConnection:
        loop = asyncio.get_running_loop()
        conn: _RespConnection | None = None
        try:
            async with asyncio.timeout(self._timeout):
                _, conn = await loop.create_connection(_RespConnection, self._host, self._port)
                if self._password is not None:
                    auth = (self._username, self._password) if self._username else (self._password,)
                    await conn.send(pack(("AUTH", *auth)))
                if self._db:
                    await conn.send(pack(("SELECT", self._db)))
        except (OSError, TimeoutError, ResponseError) as exc:
            # A refused AUTH (WRONGPASS) is as unusable as no connection at all, and
            # the socket must not be left open behind it.
            if conn is not None:
                conn.abort("set-up failed")
            detail = str(exc) or type(exc).__name__  # a timeout says nothing of itself
            raise RedisConnectionError(f"cannot connect to Redis: {detail}") from None
        return conn

    def close(self) -> None:
        for conn in self._slots:
            if conn is not None:
                conn.abort("closed")
        self._slots = [None] * len(self._slots)
