"""Load generation: open loop at a fixed rate, closed loop for the maximum throughput.

Open loop sends request i at its intended time ``start + i / rate`` whatever happened
to earlier requests, and measures latency from that intended time, so a stall shows
up in every request it delays (no coordinated omission). Requests wait for one of at
most ``connections`` keep-alive connections; that wait is part of their latency.
Closed loop runs ``concurrency`` clients back to back to find the ceiling.

Both are bounded in time, count errors by HTTP status and error code, and spread
over several processes when one cannot keep the rate (``processes``). Loopback only.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.httpclient import HttpConnection

# request number -> raw HTTP request bytes; built per process from a picklable spec
RequestFactory = Callable[[int], bytes]
_REQUEST_TIMEOUT_S = 10.0


@dataclass
class RunResult:
    mode: str
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    target_rate: float = 0.0

    @property
    def completed(self) -> int:
        return len(self.latencies_ms)

    @property
    def achieved_rps(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def merge(self, other: RunResult) -> None:
        self.latencies_ms.extend(other.latencies_ms)
        self.errors.update(other.errors)
        self.seconds = max(self.seconds, other.seconds)
        self.target_rate += other.target_rate

    def summary(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "rate": round(self.target_rate, 1) if self.mode == "open" else None,
            "achieved_rps": round(self.achieved_rps, 1),
            "completed": self.completed,
            "p50_ms": round(self.percentile(0.50), 3),
            "p90_ms": round(self.percentile(0.90), 3),
            "p99_ms": round(self.percentile(0.99), 3),
            "max_ms": round(max(self.latencies_ms, default=float("nan")), 3),
            "errors": sum(self.errors.values()),
            "errors_by_code": dict(self.errors),
        }


def _error_code(status: int, body: bytes) -> str:
    try:
        return f"{status}:{json.loads(body)['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return str(status)


async def _one(
    conn: HttpConnection, raw: bytes, ok: Callable[[int], bool], result: RunResult, t0: float
) -> None:
    try:
        async with asyncio.timeout(_REQUEST_TIMEOUT_S):
            status, body = await conn.request(raw)
    except TimeoutError:
        conn.close()
        result.errors["timeout"] += 1
        return
    except (OSError, asyncio.IncompleteReadError):
        result.errors["connection_error"] += 1
        return
    if ok(status):
        result.latencies_ms.append((time.perf_counter() - t0) * 1000)
    else:
        result.errors[_error_code(status, body)] += 1


async def _open_all(pool: list[HttpConnection], at_once: int = 100) -> None:
    gate = asyncio.Semaphore(at_once)

    async def open_one(conn: HttpConnection) -> None:
        async with gate:
            try:
                await conn.connect()
            except OSError:
                pass  # counted when a request finds it closed

    await asyncio.gather(*(open_one(c) for c in pool))


async def open_loop(
    host: str,
    port: int,
    make: RequestFactory,
    *,
    rate: float,
    seconds: float,
    connections: int,
    ok: Callable[[int], bool] = lambda s: s < 400,
) -> RunResult:
    result = RunResult("open", seconds, target_rate=rate)
    free: asyncio.Queue[HttpConnection] = asyncio.Queue()
    pool = [HttpConnection(host, port) for _ in range(connections)]
    # The connections are opened before the clock starts: the scenario is about
    # requests over N established connections, not about N TCP handshakes.
    await _open_all(pool)
    for conn in pool:
        free.put_nowait(conn)
    tasks: set[asyncio.Task[None]] = set()

    async def send(i: int, intended: float) -> None:
        conn = await free.get()
        try:
            await _one(conn, make(i), ok, result, intended)
        finally:
            free.put_nowait(conn)

    start = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        intended = start + i / rate
        delay = intended - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        task = asyncio.get_running_loop().create_task(send(i, intended))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(set(tasks), timeout=_REQUEST_TIMEOUT_S + 1)
    result.seconds = time.perf_counter() - start
    return result


async def closed_loop(
    host: str,
    port: int,
    make: RequestFactory,
    *,
    concurrency: int,
    seconds: float,
    ok: Callable[[int], bool] = lambda s: s < 400,
    offset: int = 0,
) -> RunResult:
    result = RunResult("closed", seconds)
    counter = iter(range(offset, offset + 10**9, 1))
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        conn = HttpConnection(host, port)
        while time.perf_counter() < stop_at:
            await _one(conn, make(next(counter)), ok, result, time.perf_counter())
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


# -- several processes ------------------------------------------------------------------


def _worker(args: tuple[str, dict[str, object], int, int]) -> RunResult:
    import uvloop

    from bench import scenarios

    mode, spec, index, processes = args
    make = scenarios.request_factory(spec, index, processes)
    host, port = str(spec["host"]), int(spec["port"])  # type: ignore[call-overload]
    seconds = float(spec["seconds"])  # type: ignore[arg-type]
    if mode == "open":
        coro = open_loop(
            host, port, make,
            rate=float(spec["rate"]) / processes,  # type: ignore[arg-type]
            seconds=seconds,
            connections=max(1, int(spec["connections"]) // processes),  # type: ignore[call-overload]
        )  # fmt: skip
    else:
        coro = closed_loop(
            host, port, make,
            concurrency=max(1, int(spec["concurrency"]) // processes),  # type: ignore[call-overload]
            seconds=seconds,
            offset=index * 10**8,
        )  # fmt: skip
    return uvloop.run(coro)


def run(mode: str, spec: dict[str, object], processes: int = 1) -> RunResult:
    """Run a scenario (see bench.scenarios) in ``processes`` processes and merge."""
    jobs = [(mode, spec, i, processes) for i in range(processes)]
    if processes == 1:
        return _worker(jobs[0])
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_worker, jobs)
    merged = RunResult(mode, 0.0)
    for part in parts:
        merged.merge(part)
    return merged
