"""The pool manager: registry of live workers and the authority on leases.

It is off the data path. Workers register over a connection they keep open; when
that connection closes the worker is dropped at once, and a worker whose heartbeats
stop is dropped after three missed intervals (a hung process). Gateways and cache
workers ask for leases (:mod:`actors.manager.registry` decides who gets which).

If the pool manager dies, traffic on existing leases goes on; supervisord restarts
it, workers register again and clients lease again, each on its own.
"""

from __future__ import annotations

import asyncio
import os
from typing import assert_never

import structlog

from actors.manager.registry import Registry
from actors.runtime import credentials, lifecycle, metrics
from actors.runtime.config import ManagerConfig
from actors.wire import messages
from actors.wire.errors import CallerError, Forbidden
from actors.wire.messages import ManagerRequest, Message, members
from actors.wire.roles import POOL_MANAGER, WORKER_KINDS
from actors.wire.server import Envelope, Limits, Server

log = structlog.get_logger("pool_manager")


class PoolManager:
    """Serves the registry over the frame protocol."""

    def __init__(self, config: ManagerConfig) -> None:
        self.config = config
        self.registry = Registry(config.mysql_budget, config.lease_ttl_s)
        self.server: Server[ManagerRequest] = Server(
            POOL_MANAGER,
            self.handle,
            members(ManagerRequest),
            credentials.identity(config.common, POOL_MANAGER),
            limits=Limits(
                max_connections=4096, max_in_flight=8192, max_frame=config.common.max_frame
            ),
            on_close=self._peer_closed,
        )
        # registration connection peer -> worker id
        self._worker_by_peer: dict[str, str] = {}
        self._housekeeping: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        host, port = self.config.common.manager_addr
        await self.server.start(host, port)
        self._housekeeping = asyncio.create_task(self.housekeeping())
        log.info("listening", addr=f"{host}:{port}", mysql_budget=self.config.mysql_budget)

    async def stop(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        await self.server.drain(1.0)

    # -- requests ---------------------------------------------------------------------

    async def handle(self, envelope: Envelope[ManagerRequest]) -> Message:
        reg = self.registry
        peer = envelope.peer
        match envelope.message:
            case messages.Register() as msg:
                if msg.kind != envelope.peer_kind:
                    # Only a worker's own certificate registers a worker of its kind.
                    raise Forbidden(f"a {envelope.peer_kind} may not register as {msg.kind}")
                return self._register(msg, peer)
            case messages.Heartbeat() as msg:
                worker_id = self._worker_by_peer.get(peer)
                if worker_id is None or worker_id not in reg.workers:
                    raise CallerError("heartbeat from an unregistered connection")
                was_ready = reg.workers[worker_id].ready
                reg.heartbeat(worker_id, msg)
                if was_ready != msg.ready:
                    log.info("worker_readiness", worker_id=worker_id, ready=msg.ready)
                return messages.HeartbeatAck()
            case messages.AcquireLease(kind=kind, exclude=exclude):
                lease, worker = reg.acquire(kind, exclude, peer)
                return messages.LeaseGranted(
                    lease_id=lease.lease_id,
                    worker_id=worker.worker_id,
                    host=worker.host,
                    port=worker.port,
                    ttl_s=reg.lease_ttl_s,
                )
            case messages.RenewLease(lease_id=lease_id):
                reg.renew(lease_id, peer)
                return messages.LeaseRenewed(ttl_s=reg.lease_ttl_s)
            case messages.ReleaseLease(lease_id=lease_id):
                reg.release(lease_id, peer)
                return messages.Ack()
            case messages.ListWorkers(kind=kind):
                return reg.listing(kind)
            case messages.Ping():
                return messages.Pong(kind="pool_manager", pid=os.getpid())
            case _ as unreachable:
                assert_never(unreachable)

    def _register(self, msg: messages.Register, peer: str) -> messages.Registered:
        if peer in self._worker_by_peer:
            raise CallerError("this connection already registered a worker")
        worker = self.registry.register(msg, peer)
        self._worker_by_peer[peer] = worker.worker_id
        log.info(
            "worker_registered",
            worker_id=worker.worker_id,
            kind=worker.kind,
            addr=f"{worker.host}:{worker.port}",
            worker_pid=worker.pid,
            mysql_granted=worker.mysql_granted,
        )
        self._update_gauges()
        return messages.Registered(
            worker_id=worker.worker_id,
            mysql_granted=worker.mysql_granted,
            heartbeat_interval_s=self.config.heartbeat_interval_s,
        )

    def _peer_closed(self, peer: str) -> None:
        released = self.registry.release_holder(peer)
        worker_id = self._worker_by_peer.pop(peer, None)
        if worker_id is not None:
            worker = self.registry.drop_worker(worker_id)
            if worker is not None:
                log.info(
                    "worker_gone",
                    worker_id=worker_id,
                    kind=worker.kind,
                    worker_pid=worker.pid,
                    mysql_returned=worker.mysql_granted,
                )
                self._update_gauges()
        elif released:
            log.info("client_gone", peer=peer, leases_released=released)

    def _update_gauges(self) -> None:
        for kind in WORKER_KINDS:
            count = sum(1 for w in self.registry.workers.values() if w.kind == kind)
            metrics.REGISTERED_WORKERS.labels(kind).set(count)

    async def housekeeping(self) -> None:
        """Expire leases and cut workers whose heartbeats stopped (hung processes)."""
        interval = self.config.heartbeat_interval_s
        while True:
            await asyncio.sleep(interval)
            self.registry.expire_leases()
            for worker in self.registry.hung_workers(3 * interval):
                log.warning("worker_hung", worker_id=worker.worker_id, worker_pid=worker.pid)
                self.server.close_peer(worker.peer)
                self._peer_closed(worker.peer)


def main() -> None:
    config = ManagerConfig.from_env()
    lifecycle.run("pool_manager", config.common.log_level, lambda _: PoolManager(config))


if __name__ == "__main__":
    main()
