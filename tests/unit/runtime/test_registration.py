"""actors.runtime.registration: register, heartbeat, and register again, against loopback managers.

A scripted manager (an Server whose handler records what it is sent) checks what
goes on the wire; the real PoolManager checks the MySQL grant and re-registration.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from actors.pool_manager import PoolManager
from actors.runtime import registration
from actors.runtime.config import ManagerConfig
from actors.runtime.registration import Registration
from actors.wire import messages
from actors.wire.messages import ManagerRequest, Message, members
from actors.wire.roles import POOL_MANAGER
from actors.wire.server import Envelope, Server
from tests.loopback import common_config, identity

HOST = "127.0.0.1"


async def until(pred: Callable[[], bool], timeout: float = 1.5) -> None:
    async with asyncio.timeout(timeout):
        while not pred():  # noqa: ASYNC110  (registration state has no event to wait on)
            await asyncio.sleep(0.005)


class ScriptedManager:
    """Answers Register and Heartbeat like a pool manager and remembers every message."""

    def __init__(self, *, interval: float = 0.02, mysql_granted: int = 0) -> None:
        self.interval = interval
        self.mysql_granted = mysql_granted
        self.received: list[tuple[str, Message]] = []
        self.hang_up_on: set[type[Message]] = set()  # cut the connection instead of answering
        self.server: Server[ManagerRequest] = Server(
            POOL_MANAGER, self.handle, members(ManagerRequest), identity(POOL_MANAGER)
        )
        self.port = 0
        self._ids = 0

    async def handle(self, request: Envelope[ManagerRequest]) -> Message:
        msg = request.message
        self.received.append((request.peer, msg))
        if type(msg) in self.hang_up_on:
            self.server.close_peer(request.peer)
            return messages.Ack()
        if isinstance(msg, messages.Register):
            self._ids += 1
            return messages.Registered(
                worker_id=f"w{self._ids}",
                mysql_granted=self.mysql_granted,
                heartbeat_interval_s=self.interval,
            )
        if isinstance(msg, messages.Heartbeat):
            return messages.HeartbeatAck()
        return messages.Ack()

    def of(self, kind: type[Message]) -> list[Message]:
        return [m for _, m in self.received if isinstance(m, kind)]

    async def start(self) -> ScriptedManager:
        _, self.port = await self.server.start(HOST, 0)
        return self


class Running:
    """Registrations started by one test, cancelled at its end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.tasks: list[asyncio.Task[None]] = []
        self.registrations: list[Registration] = []
        self.servers: list[Server[ManagerRequest]] = []

    def start(
        self,
        port: int,
        *,
        ready: Callable[[], bool] = lambda: True,
        in_flight: Callable[[], int] = lambda: 0,
        kind: str = "cache_worker",
        worker_port: int = 9000,
        mysql_wanted: int = 0,
        advertise: str = HOST,
    ) -> Registration:
        reg = Registration(
            common_config(port, self.tmp_path, advertise),
            identity(kind),
            kind=kind,
            port=worker_port,
            capacity=64,
            ready=ready,
            in_flight=in_flight,
            mysql_wanted=mysql_wanted,
        )
        self.registrations.append(reg)
        self.tasks.append(asyncio.create_task(reg.run()))
        return reg

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for reg in self.registrations:
            reg.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for server in self.servers:
            await server.drain(0)


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Running]:
    running = Running(tmp_path)
    try:
        yield running
    finally:
        await running.close()


async def scripted(run: Running, *, interval: float = 0.02) -> ScriptedManager:
    manager = await ScriptedManager(interval=interval).start()
    run.servers.append(manager.server)
    return manager


async def test_register_message_describes_the_worker(run: Running) -> None:
    manager = await scripted(run)
    reg = run.start(
        manager.port,
        kind="db_worker",
        worker_port=9123,
        mysql_wanted=17,
        ready=lambda: False,
        advertise="10.1.2.3",
    )
    await until(lambda: reg.registrations == 1)
    (msg,) = manager.of(messages.Register)
    assert msg == messages.Register(
        kind="db_worker",
        host="10.1.2.3",  # the advertised address, not the bind address
        port=9123,
        capacity=64,
        pid=os.getpid(),
        mysql_wanted=17,
        ready=False,  # what ready() says at the time
    )
    assert reg.worker_id == "w1"


async def test_heartbeats_carry_in_flight_and_ready(run: Running) -> None:
    manager = await scripted(run, interval=0.02)
    state = {"in_flight": 3, "ready": False}
    run.start(
        manager.port,
        ready=lambda: bool(state["ready"]),
        in_flight=lambda: int(state["in_flight"]),
    )
    await until(lambda: len(manager.of(messages.Heartbeat)) >= 2)
    assert manager.of(messages.Heartbeat)[-1] == messages.Heartbeat(in_flight=3, ready=False)
    state["in_flight"], state["ready"] = 41, True
    seen = len(manager.of(messages.Heartbeat))
    await until(lambda: len(manager.of(messages.Heartbeat)) >= seen + 2)
    assert manager.of(messages.Heartbeat)[-1] == messages.Heartbeat(in_flight=41, ready=True)
    # every message rode the one registration connection
    assert len({peer for peer, _ in manager.received}) == 1


async def test_heartbeats_follow_the_managers_interval(run: Running) -> None:
    manager = await scripted(run, interval=0.05)
    run.start(manager.port)
    await until(lambda: len(manager.of(messages.Heartbeat)) >= 1)
    start = time.monotonic()
    await until(lambda: len(manager.of(messages.Heartbeat)) >= 5)
    elapsed = time.monotonic() - start
    assert 0.15 <= elapsed < 0.6  # four intervals of 50 ms, give or take


async def test_mysql_granted_resolves_on_first_registration(
    run: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registration, "_BACKOFF_MAX_S", 0.1)
    config = ManagerConfig(
        common=common_config(0, tmp_path),
        mysql_budget=50,
        heartbeat_interval_s=0.05,
        lease_ttl_s=30,
    )
    pm = PoolManager(config)
    _, port = await pm.server.start(HOST, 0)
    run.servers.append(pm.server)
    first = run.start(port, kind="db_worker", mysql_wanted=30)
    second = run.start(port, kind="db_worker", mysql_wanted=30)
    async with asyncio.timeout(1):
        granted = await asyncio.gather(first.mysql_granted, second.mysql_granted)
    assert sorted(granted) == [20, 30]  # never more than the budget in all
    assert pm.registry.mysql_granted == 50
    old_ids = {first.worker_id, second.worker_id}
    assert "" not in old_ids

    # a new manager on the same port: both register again on their own; the future
    # keeps the first grant
    await pm.server.drain(0)
    pm2 = PoolManager(config)
    await pm2.server.start(HOST, port)
    run.servers.append(pm2.server)
    await until(lambda: first.registrations == 2 and second.registrations == 2)
    assert len(pm2.registry.workers) == 2
    assert {first.worker_id, second.worker_id} == set(pm2.registry.workers)
    assert sorted([first.mysql_granted.result(), second.mysql_granted.result()]) == [20, 30]


async def test_mysql_granted_waits_for_a_manager(run: Running) -> None:
    server = await asyncio.start_server(lambda r, w: None, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    reg = run.start(port, kind="db_worker", mysql_wanted=5)
    await asyncio.sleep(0.15)
    assert not reg.mysql_granted.done()
    assert reg.worker_id == "" and reg.registrations == 0
    manager = ScriptedManager(mysql_granted=5)
    manager.port = (await manager.server.start(HOST, port))[1]
    run.servers.append(manager.server)
    async with asyncio.timeout(1.5):
        assert await reg.mysql_granted == 5
    assert reg.registrations == 1


async def test_close_ends_the_registration_connection(run: Running) -> None:
    manager = await scripted(run)
    reg = run.start(manager.port)
    await until(lambda: manager.server.stats.connections == 1 and reg.registrations == 1)
    run.tasks[0].cancel()
    reg.close()
    await until(lambda: manager.server.stats.connections == 0)


async def test_registers_again_when_the_manager_hangs_up(run: Running) -> None:
    manager = await scripted(run)
    reg = run.start(manager.port)
    await until(lambda: reg.registrations == 1)
    (peer,) = {p for p, _ in manager.received}
    manager.server.close_peer(peer)
    await until(lambda: reg.registrations == 2)
    assert reg.worker_id == "w2"
    assert len({p for p, _ in manager.received}) == 2


async def test_backoff_grows_while_the_manager_keeps_failing(run: Running) -> None:
    # Registered once; then the manager cuts the connection on every heartbeat and
    # every Register. Retries must back off (50 ms, 100 ms, 200 ms, ...), not hammer it.
    manager = await scripted(run, interval=0.02)
    reg = run.start(manager.port)
    await until(lambda: reg.registrations == 1)
    manager.hang_up_on = {messages.Heartbeat, messages.Register}
    await until(lambda: len(manager.of(messages.Heartbeat)) >= 1)
    lost_at = time.monotonic()
    await until(lambda: reg.worker_id == "")  # not registered any more
    await asyncio.sleep(0.6)
    attempts = manager.of(messages.Register)[1:]
    # 0.05 + 0.1 + 0.2 + 0.4 s: at most four attempts in 0.6 s (a fixed 50 ms would be 12)
    assert 2 <= len(attempts) <= 4, len(attempts)
    assert reg.registrations == 1
    assert reg.worker_id == ""
    assert time.monotonic() - lost_at < 1.0
    # and once the manager answers again, it registers again
    manager.hang_up_on = set()
    await until(lambda: reg.registrations == 2, timeout=2.0)
    assert reg.worker_id != ""
