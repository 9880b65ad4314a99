"""What TLS costs on an actor link, in one process: the same exchange with and without.

    python -m bench.link_cost [--calls 20000] [--rounds 5]

Actor links are mutual TLS, loopback included (actors/wire/identity.py). This
measures what that costs, as the CPU both ends of a link spend per round trip:

* ``raw plain`` / ``raw tls``: a 200-byte message echoed over an asyncio Protocol,
  without and with TLS 1.3 (the same certificates the tree uses), one at a time and
  64 in flight; the difference is what encryption adds per round trip;
* ``frame call``: a real ``Connection.call(Ping)`` to a real ``Server`` over mutual
  TLS, the whole cost of one actor call on this machine, for scale.

Rounds are interleaved (plain, tls, plain, tls, ...) and each figure is the median
of the rounds with its min-max, so a busy moment of the machine shows as spread
rather than as a difference. Client and server share one process and one core:
the CPU time is what both ends spend together.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from actors.wire import messages
from actors.wire.client import Connection
from actors.wire.identity import Identity
from actors.wire.messages import Message
from actors.wire.roles import DB_WORKER, GATEWAY
from actors.wire.server import Envelope, Server
from tools import pki

HOST = "127.0.0.1"
PAYLOAD = b"x" * 200


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


class _Client(asyncio.Protocol):
    """Counts echoed bytes; wakes whoever waits for a given total."""

    def __init__(self) -> None:
        self.received = 0
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        while self.waiters and self.waiters[0][0] <= self.received:
            _, fut = self.waiters.pop(0)
            fut.set_result(None)

    def echo(self, expected_total: int) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append((expected_total, fut))
        self.transport.write(PAYLOAD)  # type: ignore[attr-defined]
        return fut


async def _cpu_per_op(op: Callable[[], Awaitable[object]], calls: int, at_once: int) -> float:
    """Microseconds of this process's CPU per operation."""

    async def worker(n: int) -> None:
        for _ in range(n):
            await op()

    per = calls // at_once
    started = time.process_time()
    await asyncio.gather(*(worker(per) for _ in range(at_once)))
    return (time.process_time() - started) / (per * at_once) * 1e6


async def raw_round_trips(tls: bool, ids: tuple[Identity, Identity], calls: int) -> list[float]:
    loop = asyncio.get_running_loop()
    server_id, client_id = ids
    server = await loop.create_server(_Echo, HOST, 0, ssl=server_id.server if tls else None)
    port = server.sockets[0].getsockname()[1]
    transport, client = await loop.create_connection(
        _Client, HOST, port, ssl=client_id.client if tls else None
    )
    sent = 0

    def one() -> asyncio.Future[None]:
        nonlocal sent
        sent += len(PAYLOAD)
        return client.echo(sent)

    try:
        return [await _cpu_per_op(one, calls, 1), await _cpu_per_op(one, calls, 64)]
    finally:
        transport.close()
        server.close()


async def frame_calls(ids: tuple[Identity, Identity], calls: int) -> list[float]:
    server_id, client_id = ids

    async def pong(request: Envelope[Message]) -> Message:
        return messages.Pong()

    server: Server[Message] = Server(
        DB_WORKER, pong, (messages.Ping,), server_id, allow={GATEWAY: frozenset({messages.Ping})}
    )
    _, port = await server.start(HOST, 0)
    conn = await Connection.open(HOST, port, timeout=5, identity=client_id, expect=DB_WORKER)

    def one() -> Awaitable[messages.Pong]:
        return conn.call(messages.Ping(), deadline=time.time() + 5, trace_id="")

    try:
        return [await _cpu_per_op(one, calls, 1), await _cpu_per_op(one, calls, 64)]
    finally:
        conn.close()
        await server.drain(0.5)


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"


async def main_async(calls: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="uh-link-cost-") as tmp:
        pki.ensure(Path(tmp))
        ids = (Identity.load(Path(tmp), DB_WORKER), Identity.load(Path(tmp), GATEWAY))
        results: dict[str, list[list[float]]] = {"raw plain": [], "raw tls": [], "frame call": []}
        await raw_round_trips(True, ids, calls // 10)  # warm up both paths
        await frame_calls(ids, calls // 10)
        for _ in range(rounds):
            results["raw plain"].append(await raw_round_trips(False, ids, calls))
            results["raw tls"].append(await raw_round_trips(True, ids, calls))
            results["frame call"].append(await frame_calls(ids, calls))
    print(f"CPU us per round trip, both ends, median (min-max) of {rounds} rounds, {calls} each")
    print(f"{'':12} {'one at a time':>22} {'64 in flight':>22}")
    for name, rows in results.items():
        print(f"{name:12} {_spread([r[0] for r in rows]):>22} {_spread([r[1] for r in rows]):>22}")
    for column, label in ((0, "one at a time"), (1, "64 in flight")):
        added = [
            t[column] - p[column]
            for t, p in zip(results["raw tls"], results["raw plain"], strict=True)
        ]
        print(f"TLS adds, {label}: {_spread(added)} us per round trip")
    print(f"OpenSSL: {ssl.OPENSSL_VERSION}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.link_cost", description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    uvloop.run(main_async(args.calls, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
