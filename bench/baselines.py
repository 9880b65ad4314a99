"""Baselines measured in the same run as the scenarios, so machine noise cancels out.

* ``hello``: a bare aiohttp hello-world on uvloop, the ceiling for any Python HTTP
  path on this machine under this load tool.
* ``floor``: a raw asyncio server that answers every request with a fixed response
  without parsing it: the latency the load tool itself adds.
* the argon2id hashing ceiling: cores divided by one verify's time.

    python -m bench.baselines hello PORT   |   python -m bench.baselines floor PORT
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time

_FIXED = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"


class _Floor(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # One response per request head received (the load tool never pipelines).
        self.transport.write(_FIXED * data.count(b"\r\n\r\n"))  # type: ignore[attr-defined]


async def serve_floor(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Floor, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def serve_hello(port: int) -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def argon2_ceiling(samples: int = 20) -> dict[str, float]:
    """Verifies per second the machine can do: cores / median time of one verify."""
    from actors.db.passwords import make_hasher

    hasher = make_hasher()
    digest = hasher.hash("ceiling-probe-1")
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        hasher.verify(digest, "ceiling-probe-1")
        times.append(time.perf_counter() - started)
    one = statistics.median(times)
    cores = os.cpu_count() or 1
    return {
        "cores": cores,
        "verify_ms": round(one * 1000, 3),
        "ceiling_per_s": cores / one,
        "parallel_per_s": _parallel_verifies(hasher, digest, cores),
    }


def _parallel_verifies(hasher: object, digest: str, threads: int, seconds: float = 3.0) -> float:
    """Verifies per second with one thread per core hashing at once: what the machine
    really sustains when the hashes share caches and memory bandwidth."""
    from concurrent.futures import ThreadPoolExecutor

    stop_at = time.perf_counter() + seconds

    def loop() -> int:
        done = 0
        while time.perf_counter() < stop_at:
            hasher.verify(digest, "ceiling-probe-1")  # type: ignore[attr-defined]
            done += 1
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(lambda _: loop(), range(threads)))
    return total / (time.perf_counter() - started)


def main() -> None:
    import uvloop

    kind, port = sys.argv[1], int(sys.argv[2])
    uvloop.run(serve_hello(port) if kind == "hello" else serve_floor(port))


if __name__ == "__main__":
    main()
