"""Crashes and bad peers against a real tree: kill -9 workers and the pool manager
under load, read-your-writes across gateway processes, malformed frames on a
worker's port."""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from actors.wire import messages, protocol
from actors.wire.client import Connection
from actors.wire.identity import Identity
from actors.wire.roles import CACHE_WORKER, GATEWAY
from tests.integration.conftest import Account, sign_up_and_log_in
from tests.integration.tree import Tree, wait_until

pytestmark = pytest.mark.integration


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)


async def run_load(
    http: aiohttp.ClientSession,
    accounts: list[Account],
    stop: asyncio.Event,
    concurrency: int = 12,
) -> LoadResult:
    """Mixed traffic (profile reads, nickname writes, logins) until ``stop`` is set."""
    result = LoadResult()
    counter = itertools.count()

    async def one(n: int) -> None:
        account = accounts[n % len(accounts)]
        kind = n % 5
        if kind == 0:
            request = http.put(
                "/api/v1/profile/nickname", json={"nickname": f"n{n}"}, headers=account.auth
            )
        elif kind == 1:
            request = http.post(
                "/api/v1/login",
                json={"username": account.username, "password": account.password},
            )
        else:
            request = http.get("/api/v1/profile", headers=account.auth)
        try:
            async with request as r:
                if r.status == 200:
                    result.ok += 1
                else:
                    result.failures.append(f"{kind}: {r.status} {await r.text()}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.failures.append(f"{kind}: {exc!r}")

    async def loop() -> None:
        while not stop.is_set():
            await one(next(counter))

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return result


async def load_while(
    http: aiohttp.ClientSession, action: Callable[[], None], seconds: float = 4.0
) -> LoadResult:
    accounts = [await sign_up_and_log_in(http) for _ in range(4)]
    stop = asyncio.Event()
    task = asyncio.create_task(run_load(http, accounts, stop))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(action)
    await asyncio.sleep(seconds)
    stop.set()
    return await task


def worker_back(tree: Tree, kind: str, pid: int) -> bool:
    return any(w.pid == pid and w.ready for w in tree.workers(kind).workers)


@pytest.mark.parametrize("program", ["db_worker:db_worker_00", "cache_worker:cache_worker_01"])
async def test_kill_9_of_a_worker_under_load_fails_no_request(
    http: aiohttp.ClientSession, tree: Tree, program: str
) -> None:
    kind = program.split(":")[0]
    killed: dict[str, float] = {}

    def kill() -> None:
        killed["pid"] = tree.kill9(program)
        killed["at"] = time.monotonic()

    result = await load_while(http, kill)
    assert result.failures == [], result.failures[:5]
    assert result.ok > 50
    new_pid = tree.wait_restarted(program, int(killed["pid"]))
    await asyncio.to_thread(wait_until, lambda: worker_back(tree, kind, new_pid), 10, "register")
    recovery = time.monotonic() - killed["at"]
    assert recovery < 10
    assert all(w.pid != killed["pid"] for w in tree.workers(kind).workers)


async def test_kill_9_of_the_pool_manager_keeps_traffic_flowing(
    http: aiohttp.ClientSession, tree: Tree
) -> None:
    before = {w.pid for w in tree.workers().workers}
    old: dict[str, int] = {}

    def kill() -> None:
        old["pid"] = tree.kill9("pool_manager")

    result = await load_while(http, kill)
    assert result.failures == [], result.failures[:5]
    tree.wait_restarted("pool_manager", old["pid"])

    # Every worker registers again with the new manager, without a restart of its own.
    def all_back() -> bool:
        return {w.pid for w in tree.workers().workers if w.ready} == before

    await asyncio.to_thread(wait_until, all_back, 15, "workers to re-register")
    # New leases work: a fresh gateway process leases workers and serves.
    url = await asyncio.to_thread(tree.start_gateway)
    account = await sign_up_and_log_in(http)
    async with aiohttp.ClientSession() as other:
        async with other.get(f"{url}/api/v1/profile", headers=account.auth) as r:
            assert r.status == 200


async def test_read_your_writes_across_two_gateway_processes(
    http: aiohttp.ClientSession, tree: Tree
) -> None:
    url_a = await asyncio.to_thread(tree.start_gateway)
    url_b = await asyncio.to_thread(tree.start_gateway)
    account = await sign_up_and_log_in(http)
    async with aiohttp.ClientSession() as client:
        for i in range(30):
            nickname = f"write {i}"
            async with client.put(
                f"{url_a}/api/v1/profile/nickname",
                json={"nickname": nickname},
                headers=account.auth,
            ) as r:
                assert r.status == 200
            async with client.get(f"{url_b}/api/v1/profile", headers=account.auth) as r:
                assert (await r.json())["nickname"] == nickname


def _closed_by_peer(sock: socket.socket, timeout: float = 3.0) -> bool:
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, ssl.SSLError):
        return True  # reset, or the TLS session cut short
    except TimeoutError:
        return False


async def test_malformed_and_oversized_frames_close_only_that_connection(
    http: aiohttp.ClientSession, tree: Tree
) -> None:
    worker = next(w for w in tree.workers("cache_worker").workers if w.ready)
    gateway = Identity.load(tree.pki_dir, GATEWAY)
    good = await Connection.open(
        worker.host, worker.port, timeout=2, identity=gateway, expect=CACHE_WORKER
    )
    try:
        # Not even TLS: refused at the handshake.
        garbage = socket.create_connection((worker.host, worker.port), timeout=2)
        garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x00" * 64)
        # Authenticated, then a frame that announces 512 MiB: refused at the header.
        oversized = gateway.client.wrap_socket(
            socket.create_connection((worker.host, worker.port), timeout=2)
        )
        header = protocol.HEADER.pack(
            protocol.MAGIC, protocol.VERSION, 0, messages.TYPE_CODES[messages.Ping], 1,
            int((time.time() + 5) * 1000), b"\0" * 16, 512 * 1024 * 1024,
        )  # fmt: skip
        oversized.sendall(header)
        assert await asyncio.to_thread(_closed_by_peer, garbage)
        assert await asyncio.to_thread(_closed_by_peer, oversized)
        garbage.close()
        oversized.close()
        reply = await good.call(messages.Ping(), deadline=time.time() + 2, trace_id="")
        assert isinstance(reply, messages.Pong)
    finally:
        good.close()
    account = await sign_up_and_log_in(http)
    async with http.get("/api/v1/profile", headers=account.auth) as r:
        assert r.status == 200


@pytest.mark.parametrize("program", ["db_worker:db_worker_01", "cache_worker:cache_worker_00"])
async def test_a_graceful_restart_drains_without_failing_a_request(
    http: aiohttp.ClientSession, tree: Tree, program: str
) -> None:
    """SIGTERM (supervisorctl restart): the worker stops taking work, finishes what it
    has, and callers move to the other worker; nobody sees an error."""
    kind = program.split(":")[0]
    old: dict[str, int] = {}

    def restart() -> None:
        old["pid"] = tree.pid(program)
        tree.ctl("restart", program)

    result = await load_while(http, restart)
    assert result.failures == [], result.failures[:5]
    new_pid = tree.wait_restarted(program, old["pid"])
    await asyncio.to_thread(wait_until, lambda: worker_back(tree, kind, new_pid), 10, "register")
    log = (tree.var / "log" / f"{program.split(':')[1]}.log").read_text()
    assert '"event":"draining"' in log.replace(" ", "")
