"""The pool manager's state: live workers, their leases and the MySQL budget.

Free of I/O so it can be tested on its own; :mod:`actors.pool_manager` serves it
over the frame protocol. A lease names a live worker, an id and a time to live, and
is spread by load (fewest leases per unit of capacity). Leases belong to the
client's connection (``holder``): when a client goes away its leases go with it.
The global MySQL connection budget is split among db_workers as they register, so
adding db_workers never exceeds MySQL's max_connections; a dead worker's share
comes back with it.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field

from actors.wire import messages
from actors.wire.errors import CallerError, LeaseUnknown, NoWorker
from actors.wire.roles import DB_WORKER, WORKER_KINDS

#: Leases one client connection may hold at once (clients want a handful, 4 by default).
MAX_LEASES_PER_HOLDER = 64


@dataclass(slots=True)
class Worker:
    worker_id: str
    kind: str
    host: str
    port: int
    pid: int
    capacity: int
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
        )


@dataclass(slots=True)
class Lease:
    lease_id: str
    worker_id: str
    holder: str  # the client's connection peer
    expires: float


class Registry:
    """The manager's state, free of I/O so it can be tested on its own."""

    def __init__(
        self,
        mysql_budget: int,
        lease_ttl_s: float,
        max_leases_per_holder: int = MAX_LEASES_PER_HOLDER,
    ) -> None:
        self.mysql_budget = mysql_budget
        self.lease_ttl_s = lease_ttl_s
        self.max_leases_per_holder = max_leases_per_holder
        self.workers: dict[str, Worker] = {}
        self.leases: dict[str, Lease] = {}
        self._by_holder: dict[str, set[str]] = {}  # holder -> its lease ids
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
        if msg.kind == DB_WORKER:
            granted = max(0, min(msg.mysql_wanted, self.mysql_budget - self.mysql_granted))
        worker = Worker(
            worker_id=worker_id,
            kind=msg.kind,
            host=msg.host,
            port=msg.port,
            pid=msg.pid,
            capacity=msg.capacity,
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
                lease = self.leases.pop(lease_id, None)
                if lease is not None:
                    self._forget(lease)
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
        held = self._by_holder.setdefault(holder, set())
        if len(held) >= self.max_leases_per_holder:
            # A client keeps a handful of leases; one asking for more than this is not
            # spreading load, it is hoarding workers (or leaking leases).
            raise CallerError(f"this client already holds {len(held)} leases")
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
        held.add(lease.lease_id)
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
        self._forget(lease)
        if lease.worker_id in self.workers:
            self.workers[lease.worker_id].leases.discard(lease_id)

    def _forget(self, lease: Lease) -> None:
        held = self._by_holder.get(lease.holder)
        if held is not None:
            held.discard(lease.lease_id)
            if not held:
                del self._by_holder[lease.holder]

    def release_holder(self, holder: str) -> int:
        mine = list(self._by_holder.get(holder, ()))
        for lease_id in mine:
            self.release(lease_id)
        self._by_holder.pop(holder, None)
        return len(mine)

    def leases_of(self, holder: str) -> int:
        return len(self._by_holder.get(holder, ()))

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
