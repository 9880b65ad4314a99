"""actors.runtime.leasing: WorkerPool and ManagerLink against a real PoolManager and fake workers.

Everything runs in the test process on loopback port 0: a PoolManager, and a few fake
workers, each a server that answers Pong with its own marker and keeps itself
registered through actors.runtime.registration.Registration, like a real worker does.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from actors.manager.registry import Registry
from actors.pool_manager import PoolManager
from actors.runtime import leasing, registration
from actors.runtime.config import CommonConfig, ManagerConfig
from actors.runtime.leasing import ManagerLink, WorkerPool
from actors.runtime.registration import Registration
from actors.wire import errors, messages
from actors.wire.messages import Message, R, Request
from actors.wire.roles import GATEWAY
from actors.wire.server import Envelope, Server
from tests.loopback import common_config, identity

HOST = "127.0.0.1"
KIND = "cache_worker"


def dl(seconds: float) -> float:
    return time.time() + seconds


async def until(pred: Callable[[], bool], timeout: float = 1.5) -> None:
    async with asyncio.timeout(timeout):
        while not pred():  # noqa: ASYNC110  (pool and registry state have no event)
            await asyncio.sleep(0.005)


class Manager:
    """A PoolManager on a fixed loopback port that can be stopped and started again."""

    def __init__(self, tmp_path: Path, *, ttl_s: float = 30.0) -> None:
        self.tmp_path = tmp_path
        self.ttl_s = ttl_s
        self.port = 0
        self.pm: PoolManager | None = None
        self._housekeeping: asyncio.Task[None] | None = None

    async def start(self) -> PoolManager:
        config = ManagerConfig(
            common=common_config(self.port, self.tmp_path),
            mysql_budget=100,
            heartbeat_interval_s=0.05,
            lease_ttl_s=self.ttl_s,
        )
        self.pm = PoolManager(config)
        _, self.port = await self.pm.server.start(HOST, self.port)
        self._housekeeping = asyncio.create_task(self.pm.housekeeping())
        return self.pm

    async def stop(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        if self.pm is not None:
            await self.pm.server.drain(0)
            self.pm = None

    @property
    def registry(self) -> Registry:
        assert self.pm is not None
        return self.pm.registry

    def common(self) -> CommonConfig:
        return common_config(self.port, self.tmp_path)


class FakeWorker:
    """A server answering Ping with Pong(kind=marker), registered like a real worker."""

    def __init__(self, marker: str, common: CommonConfig) -> None:
        self.marker = marker
        self.common = common
        self.server: Server[messages.Ping] = Server(
            KIND,
            self.handle,
            (messages.Ping,),
            identity(KIND),
            allow={GATEWAY: frozenset({messages.Ping})},
        )
        self.hold: asyncio.Event | None = None  # when set, calls wait for it
        self.calls = 0
        self.ready = True
        self.port = 0
        self.registration: Registration | None = None
        self._task: asyncio.Task[None] | None = None

    async def handle(self, request: Envelope[messages.Ping]) -> Message:
        self.calls += 1
        if self.hold is not None:
            await self.hold.wait()
        return messages.Pong(kind=self.marker)

    async def start(self) -> FakeWorker:
        _, self.port = await self.server.start(HOST, 0)
        self.registration = Registration(
            self.common,
            identity(KIND),
            kind=KIND,
            port=self.port,
            capacity=100,
            ready=lambda: self.ready,
            in_flight=lambda: self.server.stats.in_flight,
        )
        self._task = asyncio.create_task(self.registration.run())
        return self

    @property
    def registrations(self) -> int:
        return self.registration.registrations if self.registration else 0

    async def die(self) -> None:
        """What a crash looks like from outside: every connection of the process closes."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.registration is not None:
            self.registration.close()
        await self.server.drain(0)


class RecordingLink(ManagerLink):
    """A ManagerLink that remembers what the pool manager answered to each renewal."""

    def __init__(self, addr: tuple[str, int]) -> None:
        super().__init__(addr, identity(GATEWAY))
        self.renewals: list[str] = []

    async def call(self, message: Request[R], timeout: float = 1.0) -> R:
        try:
            reply = await super().call(message, timeout)
        except errors.UserhubError as exc:
            if isinstance(message, messages.RenewLease):
                self.renewals.append(exc.code)
            raise
        if isinstance(message, messages.RenewLease):
            self.renewals.append("renewed")
        return reply


class Env:
    """One test's manager, workers and pools, all torn down at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.manager = Manager(tmp_path)
        self.workers: list[FakeWorker] = []
        self.pools: list[WorkerPool] = []
        self.links: list[ManagerLink] = []

    async def worker(self, marker: str) -> FakeWorker:
        worker = await FakeWorker(marker, self.manager.common()).start()
        self.workers.append(worker)
        return worker

    async def pool(self, want: int = 2) -> tuple[WorkerPool, RecordingLink]:
        link = RecordingLink((HOST, self.manager.port))
        self.links.append(link)
        pool = WorkerPool(link, KIND, caller="test", want=want)
        pool.start()
        self.pools.append(pool)
        return pool, link

    def registered(self) -> int:
        pm = self.manager.pm
        return 0 if pm is None else len(pm.registry.workers)

    async def close(self) -> None:
        for worker in self.workers:
            if worker.hold is not None:
                worker.hold.set()
        for pool in self.pools:
            await pool.close()
        for link in self.links:
            link.close()
        for worker in self.workers:
            await worker.die()
        await self.manager.stop()
        for _ in range(3):
            await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def fast_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leasing, "_MAINTAIN_EVERY_S", 0.03)
    monkeypatch.setattr(registration, "_BACKOFF_MAX_S", 0.1)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path)
    await e.manager.start()
    try:
        yield e
    finally:
        await e.close()


async def ping(pool: WorkerPool, *, timeout: float = 1.0, retry: bool = True) -> str:
    reply = await pool.call(messages.Ping(), deadline=dl(timeout), trace_id="", retry=retry)
    return reply.kind


async def two_workers_and_a_pool(env: Env) -> tuple[FakeWorker, FakeWorker, WorkerPool]:
    a = await env.worker("A")
    b = await env.worker("B")
    await until(lambda: env.registered() == 2)
    pool, _ = await env.pool(want=2)
    await until(lambda: pool.connected_workers == 2)
    return a, b, pool


# -- ManagerLink ------------------------------------------------------------------------------


async def test_manager_link_calls_and_reconnects(env: Env) -> None:
    link = ManagerLink((HOST, env.manager.port), identity(GATEWAY))
    env.links.append(link)
    reply = await link.call(messages.Ping())
    assert reply.kind == "pool_manager"
    with pytest.raises(errors.NoWorker):
        await link.call(messages.AcquireLease(KIND))
    await env.manager.stop()
    with pytest.raises(errors.ManagerUnavailable):
        await link.call(messages.Ping(), timeout=0.3)
    await env.manager.start()
    reply = await link.call(messages.Ping())
    assert isinstance(reply, messages.Pong)


async def test_manager_link_unreachable(tmp_path: Path) -> None:
    server = await asyncio.start_server(lambda r, w: None, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    link = ManagerLink((HOST, port), identity(GATEWAY))
    start = time.monotonic()
    with pytest.raises(errors.ManagerUnavailable) as info:
        await link.call(messages.Ping(), timeout=0.3)
    assert info.value.retriable
    assert time.monotonic() - start < 0.5
    link.close()


# -- WorkerPool: routing ------------------------------------------------------------------------


async def test_ready_and_connected_workers(env: Env) -> None:
    pool, _ = await env.pool(want=3)
    assert not pool.ready
    assert pool.connected_workers == 0
    a = await env.worker("A")
    await until(lambda: pool.ready)
    assert pool.connected_workers == 1
    b = await env.worker("B")
    await until(lambda: pool.connected_workers == 2)
    assert pool.ready
    # the pool holds a lease on each, and never two on one worker
    assert env.manager.registry.listing(KIND).leases == 2
    await a.die()
    await until(lambda: pool.connected_workers == 1)
    assert pool.ready
    await b.die()
    await until(lambda: pool.connected_workers == 0)
    assert not pool.ready


async def test_calls_are_spread_over_both_workers(env: Env) -> None:
    a, b, pool = await two_workers_and_a_pool(env)
    gate = asyncio.Event()
    a.hold = b.hold = gate
    calls = [asyncio.create_task(ping(pool)) for _ in range(20)]
    await until(lambda: a.calls + b.calls == 20)
    gate.set()
    async with asyncio.timeout(1):
        markers = Counter(await asyncio.gather(*calls))
    assert markers == Counter({"A": 10, "B": 10})  # least busy first: they alternate


async def test_calls_go_to_the_least_busy_worker(env: Env) -> None:
    a, b, pool = await two_workers_and_a_pool(env)
    a.hold = asyncio.Event()
    stuck = [asyncio.create_task(ping(pool)) for _ in range(2)]
    await until(lambda: a.calls == 1)
    b.hold = None
    # while A holds one call, everything else goes to B
    for _ in range(5):
        assert await ping(pool) == "B"
    a.hold.set()
    async with asyncio.timeout(1):
        assert sorted(await asyncio.gather(*stuck)) == ["A", "B"]


async def test_worker_death_in_flight_and_following_calls_go_elsewhere(env: Env) -> None:
    a, b, pool = await two_workers_and_a_pool(env)
    a.hold = asyncio.Event()  # A never answers before it dies
    calls = [asyncio.create_task(ping(pool, timeout=2.0)) for _ in range(10)]
    await until(lambda: a.calls == 5)
    await asyncio.sleep(0.02)
    assert not any(c.done() for c in calls[::2])
    start = time.monotonic()
    await a.die()
    async with asyncio.timeout(1.5):
        markers = await asyncio.gather(*calls)
    assert markers == ["B"] * 10  # the five in flight on A were sent again to B
    assert time.monotonic() - start < 0.5
    assert b.calls == 10
    for _ in range(10):
        assert await ping(pool) == "B"
    await until(lambda: pool.connected_workers == 1)
    assert pool.ready
    await until(lambda: env.registered() == 1)
    await until(lambda: env.manager.registry.listing(KIND).leases == 1)


async def test_without_retry_the_connection_error_surfaces(env: Env) -> None:
    a, b, pool = await two_workers_and_a_pool(env)
    a.hold = asyncio.Event()
    calls = [asyncio.create_task(ping(pool, timeout=2.0, retry=False)) for _ in range(6)]
    await until(lambda: a.calls == 3 and b.calls == 3)
    await a.die()
    async with asyncio.timeout(1):
        results = await asyncio.gather(*calls, return_exceptions=True)
    lost = [r for r in results if isinstance(r, errors.ConnectionLost)]
    assert len(lost) == 3, results
    assert sorted(r for r in results if isinstance(r, str)) == ["B"] * 3
    assert all(r.retriable for r in lost)
    assert await ping(pool, retry=False) == "B"


async def test_busy_worker_is_retried_elsewhere_or_surfaces(env: Env) -> None:
    a, b, pool = await two_workers_and_a_pool(env)
    a.server.stats.draining = True  # A answers "busy" to every new request
    markers = [await ping(pool) for _ in range(6)]
    assert markers == ["B"] * 6
    b.server.stats.draining = True
    with pytest.raises(errors.Busy):
        await ping(pool, retry=False)
    start = time.monotonic()
    # both busy: retried until the deadline, then given up, never later
    with pytest.raises((errors.Busy, errors.DeadlineExceeded)):
        await ping(pool, timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 0.6
    b.server.stats.draining = False
    assert await ping(pool) == "B"


async def test_no_worker_at_the_deadline(env: Env) -> None:
    pool, _ = await env.pool()
    start = time.monotonic()
    with pytest.raises(errors.NoWorker) as info:
        await ping(pool, timeout=0.3)
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 0.6
    assert info.value.retriable


async def test_a_waiting_call_is_served_by_a_worker_that_turns_up(env: Env) -> None:
    pool, _ = await env.pool()
    call = asyncio.create_task(ping(pool, timeout=2.0))
    await asyncio.sleep(0.1)
    assert not call.done()
    await env.worker("late")
    async with asyncio.timeout(1.5):
        assert await call == "late"


async def test_not_ready_workers_are_not_leased(env: Env) -> None:
    a = await env.worker("A")
    a.ready = False
    await until(lambda: env.registered() == 1)
    pool, _ = await env.pool()
    with pytest.raises(errors.NoWorker):
        await ping(pool, timeout=0.2)
    a.ready = True  # the next heartbeat tells the manager
    assert await ping(pool, timeout=1.0) == "A"


async def test_pool_close_gives_leases_back(env: Env) -> None:
    _, _, pool = await two_workers_and_a_pool(env)
    assert env.manager.registry.listing(KIND).leases == 2
    await pool.close()
    assert env.manager.registry.listing(KIND).leases == 0
    assert pool.connected_workers == 0
    assert not pool.ready


async def test_a_dead_worker_is_replaced_by_a_new_one(env: Env) -> None:
    a, _, pool = await two_workers_and_a_pool(env)
    await a.die()
    await until(lambda: pool.connected_workers == 1)
    await env.worker("C")
    await until(lambda: pool.connected_workers == 2)
    gate = asyncio.Event()
    for w in env.workers:
        w.hold = gate
    calls = [asyncio.create_task(ping(pool)) for _ in range(4)]
    await until(lambda: sum(w.calls for w in env.workers) >= 4 + a.calls)
    gate.set()
    async with asyncio.timeout(1):
        assert sorted(await asyncio.gather(*calls)) == ["B", "B", "C", "C"]


# -- the pool manager restarting ----------------------------------------------------------------


async def test_pool_manager_restart(env: Env) -> None:
    env.manager.ttl_s = 0.3  # renewals every 0.1 s
    await env.manager.stop()
    await env.manager.start()
    a, b, pool = await two_workers_and_a_pool(env)
    _, link = env.pools[0], env.links[0]
    assert isinstance(link, RecordingLink)
    await until(lambda: "renewed" in link.renewals)
    assert (a.registrations, b.registrations) == (1, 1)
    conns = {addr: peer.conn for addr, peer in pool._peers.items()}

    await env.manager.stop()
    # the outage: calls on existing connections keep working
    outage_end = time.monotonic() + 0.3
    served: list[str] = []
    while time.monotonic() < outage_end:
        served.extend(await asyncio.gather(ping(pool), ping(pool)))
        await asyncio.sleep(0.01)
    assert set(served) == {"A", "B"}
    assert pool.connected_workers == 2

    pm = await env.manager.start()  # same port
    # workers register again on their own...
    await until(lambda: a.registrations == 2 and b.registrations == 2)
    assert len(pm.registry.workers) == 2
    # ...and the pool, told its leases are unknown, leases again
    await until(
        lambda: len(pm.registry.leases) == 2 and set(pool._leases) == set(pm.registry.leases)
    )
    assert "lease_unknown" in link.renewals
    assert {lease.worker_id for lease in pm.registry.leases.values()} == set(pm.registry.workers)
    await until(lambda: pool.connected_workers == 2)
    # the connections to workers it leased again were kept, never reopened
    assert {addr: peer.conn for addr, peer in pool._peers.items()} == conns
    gate = asyncio.Event()
    a.hold = b.hold = gate
    calls = [asyncio.create_task(ping(pool)) for _ in range(4)]
    await until(lambda: a.calls + b.calls >= len(served) + 4)
    gate.set()
    async with asyncio.timeout(1):
        assert sorted(await asyncio.gather(*calls)) == ["A", "A", "B", "B"]


async def test_unleased_connection_is_kept_for_a_grace_period_then_retired(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leasing, "_UNLEASED_GRACE_S", 0.3)
    env.manager.ttl_s = 0.15  # renewals every 50 ms
    await env.manager.stop()
    pm = await env.manager.start()
    a = await env.worker("A")
    pool, link = await env.pool(want=1)
    await until(lambda: pool.connected_workers == 1)
    conn = pool._peers[(HOST, a.port)].conn
    # the manager forgets the lease while A is still leasable: leased again, same connection
    (lease_id,) = list(pm.registry.leases)
    pm.registry.release(lease_id)
    await until(lambda: "lease_unknown" in link.renewals)
    await until(lambda: len(pm.registry.leases) == 1 and lease_id not in pm.registry.leases)
    assert pool._peers[(HOST, a.port)].conn is conn
    # now A stops being leasable (not ready) and its lease goes: the connection stays
    # usable for the grace period, then retires
    a.ready = False
    await until(lambda: not next(iter(pm.registry.workers.values())).ready)
    link.renewals.clear()
    (lease_id,) = list(pm.registry.leases)
    pm.registry.release(lease_id)
    await until(lambda: "lease_unknown" in link.renewals)
    lost_at = time.monotonic()
    assert await ping(pool) == "A"
    assert pool.connected_workers == 1
    await until(lambda: pool.connected_workers == 0, timeout=1.5)
    assert time.monotonic() - lost_at >= 0.25
    assert not pool.ready
