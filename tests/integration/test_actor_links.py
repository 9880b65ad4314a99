"""Nobody but the tree speaks to an actor: the attacks of a script on the same host.

Each test tries what a plain local script did against an unauthenticated tree (list
the topology, log in at a db_worker past the gateway's throttle, change a user's
nickname without a session, register a fake worker that would receive passwords)
and sees it refused, against the real pool manager and workers of a private tree.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from pathlib import Path

import aiohttp
import pytest

from actors.wire import errors, messages, protocol
from actors.wire.client import Connection
from actors.wire.identity import Identity
from actors.wire.roles import ADMIN, CACHE_WORKER, DB_WORKER, GATEWAY, POOL_MANAGER
from tests.integration.conftest import sign_up_and_log_in
from tests.integration.tree import Tree
from tools import pki

pytestmark = pytest.mark.integration


def _soon() -> float:
    return time.time() + 5


def _talks_frames_without_tls(host: str, port: int) -> bool:
    """Send a Ping frame over plain TCP: True if a frame comes back."""
    with socket.create_connection((host, port), timeout=3) as sock:
        sock.sendall(
            protocol.encode(
                messages.ListWorkers(), call_id=1, deadline=time.time() + 5, trace_id=""
            )
        )
        sock.settimeout(3)
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return False
        return data.startswith(protocol.MAGIC)


async def _open(tree: Tree, host: str, port: int, kind: str, expect: str) -> Connection:
    return await Connection.open(
        host, port, timeout=3, identity=Identity.load(tree.pki_dir, kind), expect=expect
    )


def _worker(tree: Tree, kind: str) -> tuple[str, int]:
    worker = next(w for w in tree.workers(kind).workers if w.ready)
    return worker.host, worker.port


async def test_a_plain_script_gets_no_frame_from_any_actor(tree: Tree) -> None:
    targets = [tree.manager_addr, _worker(tree, DB_WORKER), _worker(tree, CACHE_WORKER)]
    for host, port in targets:
        assert not await asyncio.to_thread(_talks_frames_without_tls, host, port), (host, port)


async def test_certificates_of_another_ca_are_refused_everywhere(
    tree: Tree, tmp_path: Path
) -> None:
    pki.ensure(tmp_path)
    for (host, port), expect in (
        (tree.manager_addr, POOL_MANAGER),
        (_worker(tree, DB_WORKER), DB_WORKER),
        (_worker(tree, CACHE_WORKER), CACHE_WORKER),
    ):
        forged = Identity.load(tmp_path, DB_WORKER)
        with pytest.raises(errors.ConnectionLost):
            await Connection.open(host, port, timeout=3, identity=forged, expect=expect)


async def test_a_gateway_certificate_cannot_change_a_user_at_a_db_worker(
    tree: Tree, http: aiohttp.ClientSession
) -> None:
    account = await sign_up_and_log_in(http, nickname="Victim")
    host, port = _worker(tree, DB_WORKER)
    conn = await _open(tree, host, port, GATEWAY, DB_WORKER)
    try:
        for user_id in range(1, 6):
            with pytest.raises(errors.Forbidden):
                await conn.call(
                    messages.UpdateUser(user_id=user_id, idempotency_key="x", nickname="pwned"),
                    deadline=time.time() + 3,
                    trace_id="",
                )
        with pytest.raises(errors.Forbidden):
            await conn.call(
                messages.ResolveSession("ab" * 32), deadline=time.time() + 3, trace_id=""
            )
    finally:
        conn.close()
    async with http.get("/api/v1/profile", headers=account.auth) as r:
        assert (await r.json())["nickname"] == "Victim"


async def test_the_admin_certificate_lists_workers_but_cannot_log_in(
    tree: Tree, http: aiohttp.ClientSession
) -> None:
    account = await sign_up_and_log_in(http)
    manager = await _open(tree, *tree.manager_addr, ADMIN, POOL_MANAGER)
    try:
        listing = await manager.call(messages.ListWorkers(), deadline=time.time() + 3, trace_id="")
        assert listing.workers
        with pytest.raises(errors.Forbidden):
            await manager.call(
                messages.AcquireLease(DB_WORKER), deadline=time.time() + 3, trace_id=""
            )
    finally:
        manager.close()
    host, port = _worker(tree, DB_WORKER)
    db = await _open(tree, host, port, ADMIN, DB_WORKER)
    try:
        with pytest.raises(errors.Forbidden):
            await db.call(
                messages.Login(account.username, account.password),
                deadline=time.time() + 3,
                trace_id="",
            )
    finally:
        db.close()


async def test_only_a_worker_certificate_registers_and_only_as_its_own_kind(tree: Tree) -> None:
    before = tree.workers()
    for kind in (GATEWAY, ADMIN, CACHE_WORKER):
        conn = await _open(tree, *tree.manager_addr, kind, POOL_MANAGER)
        try:
            with pytest.raises(errors.Forbidden):
                await conn.call(
                    messages.Register(
                        kind=DB_WORKER,
                        host="127.0.0.1",
                        port=9,
                        capacity=2**40,
                        pid=1,
                        mysql_wanted=2048,
                        ready=True,
                    ),
                    deadline=time.time() + 3,
                    trace_id="",
                )
        finally:
            conn.close()
    after = tree.workers()
    assert {w.worker_id for w in after.workers} == {w.worker_id for w in before.workers}
    assert after.mysql_granted == before.mysql_granted


async def test_a_client_refuses_a_worker_that_is_not_the_kind_it_leased(tree: Tree) -> None:
    host, port = _worker(tree, CACHE_WORKER)
    with pytest.raises(errors.ConnectionLost, match="is not a db_worker"):
        await _open(tree, host, port, GATEWAY, DB_WORKER)


def test_the_tree_keeps_its_keys_private(tree: Tree) -> None:
    assert oct(tree.pki_dir.stat().st_mode & 0o777) == oct(0o700)
    keys = list(tree.pki_dir.glob("*.key"))
    assert {k.stem for k in keys} >= {"ca", GATEWAY, POOL_MANAGER, DB_WORKER, CACHE_WORKER, ADMIN}
    for key in keys:
        assert key.stat().st_mode & 0o077 == 0, key


async def test_a_tls_client_without_a_certificate_is_refused(tree: Tree) -> None:
    host, port = tree.manager_addr
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        writer.write(
            protocol.encode(
                messages.ListWorkers(), call_id=1, deadline=time.time() + 5, trace_id=""
            )
        )
        async with asyncio.timeout(3):
            try:
                data = await reader.read(65536)
            except (ssl.SSLError, ConnectionError):
                data = b""
        assert not data.startswith(protocol.MAGIC)
    finally:
        writer.close()
