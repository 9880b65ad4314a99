"""actors.pool_manager: the registry served over loopback sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from actors.pool_manager import PoolManager
from actors.runtime.config import ManagerConfig
from actors.wire import errors, messages
from actors.wire.client import Connection
from actors.wire.messages import R, Request
from actors.wire.roles import ADMIN, CACHE_WORKER, DB_WORKER, GATEWAY, POOL_MANAGER
from tests.loopback import common_config, identity
from tests.unit.manager.test_registry import HOST, reg_msg

# -- PoolManager over loopback sockets -------------------------------------------------------


def dl(seconds: float) -> float:
    return time.time() + seconds


async def until(pred: Callable[[], bool], timeout: float = 1.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():  # noqa: ASYNC110  (registry state has no event to wait on)
            await asyncio.sleep(0.005)


def manager_config(
    tmp_path: Path, *, heartbeat_s: float = 1.0, ttl_s: float = 30.0
) -> ManagerConfig:
    common = common_config(0, tmp_path)
    return ManagerConfig(
        common=common, mysql_budget=100, heartbeat_interval_s=heartbeat_s, lease_ttl_s=ttl_s
    )


class Running:
    """A PoolManager serving on a free loopback port, and connections to it."""

    def __init__(self, manager: PoolManager, port: int) -> None:
        self.manager = manager
        self.port = port
        self.conns: list[Connection] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def connect(self, kind: str = GATEWAY) -> Connection:
        """A connection with the certificate of ``kind`` (a gateway's: it leases)."""
        conn = await Connection.open(
            HOST, self.port, timeout=1.0, identity=identity(kind), expect=POOL_MANAGER
        )
        self.conns.append(conn)
        return conn

    async def call(self, conn: Connection, msg: Request[R]) -> R:
        return await conn.call(msg, deadline=dl(1), trace_id="")

    async def listing(self, kind: str = "") -> messages.WorkerList:
        conn = await self.connect(ADMIN)
        try:
            return await self.call(conn, messages.ListWorkers(kind))
        finally:
            conn.close()

    async def register(self, msg: messages.Register) -> tuple[Connection, messages.Registered]:
        conn = await self.connect(msg.kind)
        return conn, await self.call(conn, msg)

    def housekeeping(self) -> None:
        self.tasks.append(asyncio.create_task(self.manager.housekeeping()))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for conn in self.conns:
            conn.close()
        await self.manager.server.drain(0.2)
        for _ in range(3):
            await asyncio.sleep(0)


async def start_manager(config: ManagerConfig) -> Running:
    manager = PoolManager(config)
    _, port = await manager.server.start(HOST, 0)
    return Running(manager, port)


@pytest.fixture
async def pm(tmp_path: Path) -> AsyncIterator[Running]:
    running = await start_manager(manager_config(tmp_path))
    try:
        yield running
    finally:
        await running.close()


async def test_ping(pm: Running) -> None:
    conn = await pm.connect()
    reply = await pm.call(conn, messages.Ping())
    assert reply.kind == "pool_manager"


async def test_worker_registers_over_a_connection(pm: Running) -> None:
    conn, registered = await pm.register(reg_msg("db_worker", port=9500, mysql_wanted=30))
    assert registered.mysql_granted == 30
    assert registered.heartbeat_interval_s == pm.manager.config.heartbeat_interval_s
    listing = await pm.listing()
    (info,) = listing.workers
    assert info.worker_id == registered.worker_id
    assert (info.kind, info.host, info.port, info.mysql_granted) == ("db_worker", HOST, 9500, 30)
    assert listing.mysql_granted == 30
    assert conn.is_open


async def test_worker_death_on_connection_close(pm: Running) -> None:
    dying, reg_a = await pm.register(reg_msg("db_worker", port=9501, mysql_wanted=70))
    _, reg_b = await pm.register(reg_msg("db_worker", port=9502, mysql_wanted=70))
    assert (reg_a.mysql_granted, reg_b.mysql_granted) == (70, 30)
    client = await pm.connect()
    held: list[messages.LeaseGranted] = []
    for _ in range(4):
        lease = await pm.call(client, messages.AcquireLease("db_worker"))
        assert isinstance(lease, messages.LeaseGranted)
        held.append(lease)
    on_dying = [g for g in held if g.worker_id == reg_a.worker_id]
    on_other = [g for g in held if g.worker_id == reg_b.worker_id]
    assert len(on_dying) == len(on_other) == 2

    dying.close()  # the worker process dies: its registration connection closes
    await until(lambda: reg_a.worker_id not in pm.manager.registry.workers)
    listing = await pm.listing()
    assert [w.worker_id for w in listing.workers] == [reg_b.worker_id]
    assert listing.mysql_granted == 30  # its MySQL share came back
    assert listing.leases == 2
    for lease in on_dying:
        with pytest.raises(errors.LeaseUnknown):
            await pm.call(client, messages.RenewLease(lease.lease_id))
    for lease in on_other:
        renewed = await pm.call(client, messages.RenewLease(lease.lease_id))
        assert isinstance(renewed, messages.LeaseRenewed)
    # new leases only name the survivor, and the share is there for a newcomer
    for _ in range(3):
        lease = await pm.call(client, messages.AcquireLease("db_worker"))
        assert isinstance(lease, messages.LeaseGranted) and lease.worker_id == reg_b.worker_id
    _, reg_c = await pm.register(reg_msg("db_worker", port=9503, mysql_wanted=100))
    assert reg_c.mysql_granted == 70


async def test_lease_reply_names_the_worker_address(pm: Running) -> None:
    _, registered = await pm.register(reg_msg("cache_worker", port=9600))
    client = await pm.connect()
    lease = await pm.call(client, messages.AcquireLease("cache_worker"))
    assert isinstance(lease, messages.LeaseGranted)
    assert (lease.worker_id, lease.host, lease.port) == (registered.worker_id, HOST, 9600)
    assert lease.ttl_s == pm.manager.config.lease_ttl_s
    with pytest.raises(errors.NoWorker):
        await pm.call(client, messages.AcquireLease("cache_worker", exclude=(lease.worker_id,)))
    with pytest.raises(errors.NoWorker):
        await pm.call(client, messages.AcquireLease("db_worker"))
    assert await pm.call(client, messages.ReleaseLease(lease.lease_id)) == messages.Ack()
    assert (await pm.listing()).leases == 0


async def test_leases_are_renewed_only_on_the_holders_connection(pm: Running) -> None:
    await pm.register(reg_msg())
    alice = await pm.connect()
    mallory = await pm.connect()
    lease = await pm.call(alice, messages.AcquireLease("cache_worker"))
    assert isinstance(lease, messages.LeaseGranted)
    with pytest.raises(errors.LeaseUnknown):
        await pm.call(mallory, messages.RenewLease(lease.lease_id))
    assert isinstance(
        await pm.call(alice, messages.RenewLease(lease.lease_id)), messages.LeaseRenewed
    )


async def test_client_leases_go_with_its_connection(pm: Running) -> None:
    _, registered = await pm.register(reg_msg())
    client = await pm.connect()
    for _ in range(3):
        await pm.call(client, messages.AcquireLease("cache_worker"))
    other = await pm.connect()
    await pm.call(other, messages.AcquireLease("cache_worker"))
    assert (await pm.listing()).leases == 4
    client.close()
    await until(lambda: len(pm.manager.registry.leases) == 1)
    (info,) = (await pm.listing()).workers
    assert info.worker_id == registered.worker_id and info.leases == 1


async def test_heartbeat_updates_the_worker(pm: Running) -> None:
    conn, registered = await pm.register(reg_msg(ready=False))
    client = await pm.connect()
    with pytest.raises(errors.NoWorker):
        await pm.call(client, messages.AcquireLease("cache_worker"))
    ack = await pm.call(conn, messages.Heartbeat(in_flight=9, ready=True))
    assert ack == messages.HeartbeatAck()
    (info,) = (await pm.listing()).workers
    assert (info.in_flight, info.ready) == (9, True)
    lease = await pm.call(client, messages.AcquireLease("cache_worker"))
    assert isinstance(lease, messages.LeaseGranted)
    assert lease.worker_id == registered.worker_id


async def test_heartbeat_from_an_unregistered_connection_is_refused(pm: Running) -> None:
    stranger = await pm.connect(DB_WORKER)
    with pytest.raises(errors.CallerError) as info:
        await pm.call(stranger, messages.Heartbeat(in_flight=1, ready=True))
    assert info.value.code == "bad_request"
    assert stranger.is_open  # a refusal, not a hang-up
    assert (await pm.listing()).workers == ()


async def test_heartbeat_after_being_cut_is_refused(pm: Running) -> None:
    conn, registered = await pm.register(reg_msg())
    # the worker was dropped while its connection stayed up (as housekeeping does)
    pm.manager.registry.drop_worker(registered.worker_id)
    with pytest.raises(errors.CallerError):
        await pm.call(conn, messages.Heartbeat())


async def test_second_register_on_the_same_connection_is_refused(pm: Running) -> None:
    conn, first = await pm.register(reg_msg(port=9701))
    with pytest.raises(errors.CallerError) as info:
        await pm.call(conn, reg_msg(port=9702))
    assert info.value.code == "bad_request"
    (only,) = (await pm.listing()).workers
    assert (only.worker_id, only.port) == (first.worker_id, 9701)
    assert await pm.call(conn, messages.Heartbeat()) == messages.HeartbeatAck()


async def test_invalid_register_is_refused_and_the_connection_may_retry(pm: Running) -> None:
    conn = await pm.connect(CACHE_WORKER)
    with pytest.raises(errors.CallerError):
        await pm.call(conn, reg_msg("cache_worker", port=0))
    reply = await pm.call(conn, reg_msg("cache_worker"))
    assert isinstance(reply, messages.Registered)


async def test_a_worker_registers_only_as_the_kind_its_certificate_names(pm: Running) -> None:
    cache = await pm.connect(CACHE_WORKER)
    with pytest.raises(errors.Forbidden, match="may not register as db_worker"):
        await pm.call(cache, reg_msg("db_worker", mysql_wanted=2048))
    assert pm.manager.registry.mysql_granted == 0
    for kind in (GATEWAY, ADMIN):
        with pytest.raises(errors.Forbidden):
            await pm.call(await pm.connect(kind), reg_msg("cache_worker"))
    assert (await pm.listing()).workers == ()


async def test_each_kind_may_ask_the_manager_only_what_its_role_needs(pm: Running) -> None:
    gateway, worker = await pm.connect(GATEWAY), await pm.connect(DB_WORKER)
    with pytest.raises(errors.Forbidden, match="may not send ListWorkers"):
        await pm.call(gateway, messages.ListWorkers())
    with pytest.raises(errors.Forbidden, match="may not send AcquireLease"):
        await pm.call(worker, messages.AcquireLease("db_worker"))
    with pytest.raises(errors.Forbidden):
        await pm.call(gateway, messages.Login("u", "p"))


async def test_housekeeping_cuts_a_worker_whose_heartbeats_stop(tmp_path: Path) -> None:
    pm = await start_manager(manager_config(tmp_path, heartbeat_s=0.05))
    try:
        pm.housekeeping()
        silent, silent_reg = await pm.register(reg_msg(port=9801))
        beating, beating_reg = await pm.register(reg_msg(port=9802))
        client = await pm.connect()
        lease = await pm.call(client, messages.AcquireLease("cache_worker"))
        assert isinstance(lease, messages.LeaseGranted)

        async def heartbeats() -> None:
            while True:
                await pm.call(beating, messages.Heartbeat(in_flight=0, ready=True))
                await asyncio.sleep(0.02)

        beat = asyncio.create_task(heartbeats())
        try:
            start = time.monotonic()
            async with asyncio.timeout(1.5):
                await silent.wait_closed()  # the manager hangs up on the hung worker
            assert time.monotonic() - start < 1.0
            assert silent_reg.worker_id not in pm.manager.registry.workers
            await asyncio.sleep(0.2)  # several more intervals: the beating one stays
            assert not beat.done()
            (info,) = (await pm.listing()).workers
            assert info.worker_id == beating_reg.worker_id
            assert beating.is_open
        finally:
            beat.cancel()
        if lease.worker_id == silent_reg.worker_id:
            with pytest.raises(errors.LeaseUnknown):
                await pm.call(client, messages.RenewLease(lease.lease_id))
    finally:
        await pm.close()


async def test_housekeeping_expires_leases(tmp_path: Path) -> None:
    pm = await start_manager(manager_config(tmp_path, heartbeat_s=0.05, ttl_s=0.2))
    try:
        pm.housekeeping()
        conn, _ = await pm.register(reg_msg())
        client = await pm.connect()
        lease = await pm.call(client, messages.AcquireLease("cache_worker"))
        assert isinstance(lease, messages.LeaseGranted)
        kept = await pm.call(client, messages.AcquireLease("cache_worker"))
        assert isinstance(kept, messages.LeaseGranted)

        async def keep_alive() -> None:
            while True:
                await pm.call(conn, messages.Heartbeat())
                await pm.call(client, messages.RenewLease(kept.lease_id))
                await asyncio.sleep(0.01)

        task = asyncio.create_task(keep_alive())
        try:
            await until(lambda: lease.lease_id not in pm.manager.registry.leases)
            assert kept.lease_id in pm.manager.registry.leases
        finally:
            task.cancel()
        with pytest.raises(errors.LeaseUnknown):
            await pm.call(client, messages.RenewLease(lease.lease_id))
    finally:
        await pm.close()
