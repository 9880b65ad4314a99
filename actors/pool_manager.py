"""The pool manager: registry of live workers and the authority on leases.

It is off the data path. Workers register over a connection they keep open; when
that connection closes the worker is dropped at once, and a worker whose heartbeats
stop is dropped after three missed intervals (a hung process). Gateways and cache
workers ask for leases: a lease names a live worker, an id and a time to live, and
is spread by load (fewest leases per unit of capacity). Leases live on the client's
connection: when a client goes away its leases go with it.

It also leases the global MySQL connection budget among db_workers, so adding
db_workers never exceeds MySQL's max_connections; a dead worker's share comes back.

If the pool manager dies, traffic on existing leases goes on; supervisord restarts
it, workers register again and clients lease again, each on its own.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from dataclasses import dataclass, field

import structlog

from actors.runtime import gc_tuning, logs, metrics
from actors.runtime.config import ManagerConfig
from actors.wire import messages, rpc
from actors.wire.errors import CallerError, LeaseUnknown, NoWorker
from actors.wire.messages import Message

log = structlog.get_logger("pool_manager")

WORKER_KINDS = ("db_worker", "cache_worker")


@dataclass(slots=True)
class Worker:
    worker_id: str
    kind: str
    host: str
    port: int
    pid: int
    capacity: int
    metrics_addr: str
    peer: str  # the registration connection's peer; its loss means death
    mysql_granted: int = 0
    ready: bool = False
    in_flight: int = 0
    last_heartbeat: float = field(default_factory=time.monotonic)
    leases: set[str] = field(default_factory=set)

    def info(self) -> messages.WorkerInfo:
        return messages.WorkerInfo(
            worker_id=self.worker_id,
            kind=self.kind,
            host=self.host,
            port=self.port,
            pid=self.pid,
            capacity=self.capacity,
            ready=self.ready,
            leases=len(self.leases),
            in_flight=self.in_flight,
            mysql_granted=self.mysql_granted,
            metrics_addr=self.metrics_addr,
        )


@dataclass(slots=True)
class Lease:
    lease_id: str
    worker_id: str
    holder: str  # the client's connection peer
    expires: float


class Registry:
    """The manager's state, free of I/O so it can be tested on its own."""

    def __init__(self, mysql_budget: int, lease_ttl_s: float) -> None:
        self.mysql_budget = mysql_budget
        self.lease_ttl_s = lease_ttl_s
        self.workers: dict[str, Worker] = {}
        self.leases: dict[str, Lease] = {}
        self._ids = itertools.count(1)
        self._epoch = f"{os.getpid():x}{int(time.time()) & 0xFFFF:04x}"

    @property
    def mysql_granted(self) -> int:
        return sum(w.mysql_granted for w in self.workers.values())

    def register(self, msg: messages.Register, peer: str) -> Worker:
        if msg.kind not in WORKER_KINDS:
            raise CallerError(f"unknown worker kind {msg.kind!r}")
        if msg.capacity <= 0 or not 0 < msg.port < 65536:
            raise CallerError("capacity and port must be positive")
        worker_id = f"{msg.kind}-{self._epoch}-{next(self._ids)}"
        granted = 0
        if msg.kind == "db_worker":
            granted = max(0, min(msg.mysql_wanted, self.mysql_budget - self.mysql_granted))
        worker = Worker(
            worker_id=worker_id,
            kind=msg.kind,
            host=msg.host,
            port=msg.port,
            pid=msg.pid,
            capacity=msg.capacity,
            metrics_addr=msg.metrics_addr,
            peer=peer,
            mysql_granted=granted,
            ready=msg.ready,
        )
        self.workers[worker_id] = worker
        return worker

    def drop_worker(self, worker_id: str) -> Worker | None:
        worker = self.workers.pop(worker_id, None)
        if worker is not None:
            for lease_id in worker.leases:
                self.leases.pop(lease_id, None)
        return worker

    def heartbeat(self, worker_id: str, msg: messages.Heartbeat) -> None:
        worker = self.workers[worker_id]
        worker.last_heartbeat = time.monotonic()
        worker.in_flight = msg.in_flight
        worker.ready = msg.ready

    def hung_workers(self, max_silence_s: float) -> list[Worker]:
        now = time.monotonic()
        return [w for w in self.workers.values() if now - w.last_heartbeat > max_silence_s]

    def acquire(self, kind: str, exclude: tuple[str, ...], holder: str) -> tuple[Lease, Worker]:
        candidates = [
            w
            for w in self.workers.values()
            if w.kind == kind and w.ready and w.worker_id not in exclude
        ]
        if not candidates:
            raise NoWorker(f"no ready {kind} to lease")
        worker = min(
            candidates, key=lambda w: ((len(w.leases) + 1) / w.capacity, w.in_flight, w.worker_id)
        )
        lease = Lease(
            lease_id=f"L{self._epoch}-{next(self._ids)}",
            worker_id=worker.worker_id,
            holder=holder,
            expires=time.monotonic() + self.lease_ttl_s,
        )
        self.leases[lease.lease_id] = lease
        worker.leases.add(lease.lease_id)
        return lease, worker

    def renew(self, lease_id: str, holder: str) -> None:
        lease = self.leases.get(lease_id)
        if lease is None or lease.holder != holder or lease.worker_id not in self.workers:
            raise LeaseUnknown(f"lease {lease_id} is not known")
        lease.expires = time.monotonic() + self.lease_ttl_s

    def release(self, lease_id: str, holder: str | None = None) -> None:
        """Give a lease back; a client may only give back its own (``holder``)."""
        lease = self.leases.get(lease_id)
        if lease is None or (holder is not None and lease.holder != holder):
            return
        del self.leases[lease_id]
        if lease.worker_id in self.workers:
            self.workers[lease.worker_id].leases.discard(lease_id)

    def release_holder(self, holder: str) -> int:
        mine = [lease_id for lease_id, lease in self.leases.items() if lease.holder == holder]
        for lease_id in mine:
            self.release(lease_id)
        return len(mine)

    def expire_leases(self) -> int:
        now = time.monotonic()
        expired = [lease_id for lease_id, lease in self.leases.items() if lease.expires < now]
        for lease_id in expired:
            self.release(lease_id)
        return len(expired)

    def listing(self, kind: str) -> messages.WorkerList:
        return messages.WorkerList(
            workers=tuple(w.info() for w in self.workers.values() if not kind or w.kind == kind),
            mysql_budget=self.mysql_budget,
            mysql_granted=self.mysql_granted,
            leases=len(self.leases),
        )


class PoolManager:
    """Serves the registry over the frame protocol."""

    def __init__(self, config: ManagerConfig) -> None:
        self.config = config
        self.registry = Registry(config.mysql_budget, config.lease_ttl_s)
        self.server = rpc.Server(
            self.handle,
            max_connections=4096,
            max_in_flight=8192,
            max_frame=config.common.max_frame,
            on_close=self._peer_closed,
        )
        # registration connection peer -> worker id
        self._worker_by_peer: dict[str, str] = {}
        self._closers: dict[str, rpc.CloseHook] = {}

    async def handle(self, request: rpc.Request) -> Message:
        msg = request.message
        reg = self.registry
        if isinstance(msg, messages.Register):
            if request.peer in self._worker_by_peer:
                raise CallerError("this connection already registered a worker")
            worker = reg.register(msg, request.peer)
            self._worker_by_peer[request.peer] = worker.worker_id
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
        if isinstance(msg, messages.Heartbeat):
            worker_id = self._worker_by_peer.get(request.peer)
            if worker_id is None or worker_id not in reg.workers:
                raise CallerError("heartbeat from an unregistered connection")
            was_ready = reg.workers[worker_id].ready
            reg.heartbeat(worker_id, msg)
            if was_ready != msg.ready:
                log.info("worker_readiness", worker_id=worker_id, ready=msg.ready)
            return messages.HeartbeatAck()
        if isinstance(msg, messages.AcquireLease):
            lease, worker = reg.acquire(msg.kind, msg.exclude, request.peer)
            return messages.LeaseGranted(
                lease_id=lease.lease_id,
                worker_id=worker.worker_id,
                host=worker.host,
                port=worker.port,
                ttl_s=reg.lease_ttl_s,
            )
        if isinstance(msg, messages.RenewLease):
            reg.renew(msg.lease_id, request.peer)
            return messages.LeaseRenewed(ttl_s=reg.lease_ttl_s)
        if isinstance(msg, messages.ReleaseLease):
            reg.release(msg.lease_id, request.peer)
            return messages.Ack()
        if isinstance(msg, messages.ListWorkers):
            return reg.listing(msg.kind)
        if isinstance(msg, messages.Ping):
            return messages.Pong(kind="pool_manager", pid=os.getpid())
        raise CallerError(f"pool manager does not handle {type(msg).__name__}")

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


async def main() -> None:
    config = ManagerConfig.from_env()
    logs.configure("pool_manager", config.common.log_level)
    metrics.started("pool_manager")
    manager = PoolManager(config)
    host, port = config.common.manager_addr
    await manager.server.start(host, port)
    gc_tuning.tune_after_start()
    log.info("started", addr=f"{host}:{port}", mysql_budget=config.mysql_budget)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    housekeeping = asyncio.create_task(manager.housekeeping())
    await stop.wait()
    housekeeping.cancel()
    await manager.server.drain(1.0)
    log.info("stopped")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
