"""Asking a running tree's pool manager, as an operator or a tool would.

Tools connect with the ``admin`` certificate (tools.pki), whose role may list
workers and ping, nothing else (actors.wire.roles).
"""

from __future__ import annotations

import time
from pathlib import Path

from actors.wire import messages
from actors.wire.client import Connection
from actors.wire.identity import Identity
from actors.wire.roles import ADMIN, POOL_MANAGER


async def open_manager(manager_addr: tuple[str, int], pki_dir: Path, timeout: float) -> Connection:
    """An admin connection to the pool manager."""
    host, port = manager_addr
    return await Connection.open(
        host, port, timeout=timeout, identity=Identity.load(pki_dir, ADMIN), expect=POOL_MANAGER
    )


async def list_workers(
    manager_addr: tuple[str, int], pki_dir: Path, kind: str = "", timeout: float = 2.0
) -> messages.WorkerList:
    """The pool manager's registry: every worker (of ``kind``), the budget, the leases."""
    conn = await open_manager(manager_addr, pki_dir, timeout)
    try:
        return await conn.call(
            messages.ListWorkers(kind), deadline=time.time() + timeout, trace_id=""
        )
    finally:
        conn.close()
