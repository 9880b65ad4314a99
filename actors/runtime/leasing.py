"""The client side of leases: a process's pool of connections to leased workers.

A gateway (or a cache worker, for its misses) holds up to ``want`` leases on workers
of one kind, each with one multiplexed TCP connection. A background task renews the
leases, connects to newly leased workers, gives back leases on workers that fail
(and keeps away from them for a moment, a simple circuit breaker) and leases more
when it holds fewer than it wants.

The pool manager is off the data path: calls use the open connections only. If the
manager is unreachable nothing is dropped; when a new manager answers, renewals come
back "lease unknown" and the pool leases again, keeping any connection whose worker
it is leased again (workers are matched by address, since their ids change when
they register with a new manager).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog

from actors.runtime import metrics
from actors.runtime.breaker import BreakerSet
from actors.wire import messages
from actors.wire.client import Connection
from actors.wire.errors import (
    Busy,
    ConnectionLost,
    LeaseUnknown,
    ManagerUnavailable,
    NoWorker,
    UserhubError,
)
from actors.wire.identity import Identity
from actors.wire.messages import R, Request
from actors.wire.roles import POOL_MANAGER

log = structlog.get_logger("leasing")

_MAINTAIN_EVERY_S = 0.5
_BREAKER_S = 2.0  # how long a failed worker is left alone
_CONNECT_TIMEOUT_S = 1.0
_MANAGER_TIMEOUT_S = 1.0
# How long a connection outlives its lease before it retires. A restarted pool manager
# knows no lease until the workers have registered again (they back off up to 1 s);
# a renewal answered "lease unknown" in that gap must not cost the connections.
_UNLEASED_GRACE_S = 3.0
# A worker closes a connection that stayed silent for its idle timeout (60 s by
# default, actors.wire.server.Limits); an idle one is pinged well before that.
KEEPALIVE_S = 15.0


class ManagerLink:
    """One connection to the pool manager, shared by a process's pools; reconnects lazily."""

    def __init__(self, addr: tuple[str, int], identity: Identity) -> None:
        self.addr = addr
        self.identity = identity
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()

    async def call(self, message: Request[R], timeout: float = _MANAGER_TIMEOUT_S) -> R:
        conn = await self._connection(timeout)
        try:
            return await conn.call(message, deadline=time.time() + timeout, trace_id="")
        except ConnectionLost as exc:
            raise ManagerUnavailable(str(exc)) from None

    async def _connection(self, timeout: float) -> Connection:
        async with self._lock:
            if self._conn is None or not self._conn.is_open:
                try:
                    self._conn = await Connection.open(
                        *self.addr, timeout=timeout, identity=self.identity, expect=POOL_MANAGER
                    )
                except ConnectionLost as exc:
                    raise ManagerUnavailable(str(exc)) from None
            return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close("shutting down")


@dataclass(slots=True)
class _Lease:
    lease_id: str
    worker_id: str
    addr: tuple[str, int]
    renew_at: float


@dataclass(slots=True)
class _Peer:
    """An open connection to one worker address, and the calls riding on it."""

    addr: tuple[str, int]
    conn: Connection
    in_flight: int = 0
    retiring: bool = False
    unleased_since: float | None = None
    pinging: bool = False


class WorkerPool:
    """Routes calls to leased workers of one kind, retrying elsewhere on failure."""

    def __init__(self, link: ManagerLink, kind: str, *, caller: str, want: int) -> None:
        self._link = link
        self.kind = kind
        self._caller = caller
        self._want = max(1, want)
        self._leases: dict[str, _Lease] = {}
        self._peers: dict[tuple[str, int], _Peer] = {}
        # Workers that failed are left alone for a moment, by id (for AcquireLease's
        # exclude list) and by address (ids change when the manager restarts).
        self._broken: BreakerSet[str] = BreakerSet(_BREAKER_S)
        self._broken_addrs: BreakerSet[tuple[str, int]] = BreakerSet(_BREAKER_S)
        self._wake = asyncio.Event()
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self._pings: set[asyncio.Task[None]] = set()
        self._gauge_leases = metrics.LEASES_HELD.labels(caller, kind)
        self._gauge_size = metrics.POOL_SIZE.labels(caller, kind)
        self._gauge_in_use = metrics.POOL_IN_USE.labels(caller, kind)
        self._gauge_waiting = metrics.WAITING_REQUESTS.labels(caller, kind)
        self._get_conn = metrics.GET_CONNECTION_SECONDS.labels(caller, kind)
        self._free_conn = metrics.FREE_CONNECTION_SECONDS.labels(caller, kind)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._maintain_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for lease in list(self._leases.values()):
            try:
                await self._link.call(messages.ReleaseLease(lease.lease_id), timeout=0.2)
            except UserhubError:
                break
        self._leases.clear()
        for peer in self._peers.values():
            peer.conn.close("pool closing")
        self._peers.clear()

    @property
    def ready(self) -> bool:
        return any(p.conn.is_open and not p.retiring for p in self._peers.values())

    @property
    def connected_workers(self) -> int:
        return sum(1 for p in self._peers.values() if p.conn.is_open)

    # -- calls ------------------------------------------------------------------------

    async def call(
        self, message: Request[R], *, deadline: float, trace_id: str, retry: bool = True
    ) -> R:
        """Send to the least-busy leased worker; on a dead or busy worker try another.

        ``retry`` is for idempotent requests (and writes that carry an idempotency
        key): they may be sent again, to another worker, while the deadline allows.
        """
        avoid: set[tuple[str, int]] = set()
        send_seconds = metrics.SEND_MESSAGE_SECONDS.labels(
            self._caller, self.kind, type(message).__name__
        )
        while True:
            started = time.perf_counter()
            peer = await self._pick(deadline, avoid)
            self._get_conn.observe(time.perf_counter() - started)
            peer.in_flight += 1
            self._gauge_in_use.inc()
            sent = time.perf_counter()
            try:
                reply = await peer.conn.call(message, deadline=deadline, trace_id=trace_id)
                send_seconds.observe(time.perf_counter() - sent)
                return reply
            except (ConnectionLost, Busy) as exc:
                if isinstance(exc, ConnectionLost):
                    self._peer_failed(peer, str(exc))
                avoid.add(peer.addr)
                if not retry or time.time() >= deadline:
                    raise
                log.info("retrying_elsewhere", kind=self.kind, error=exc.code, peer=peer.addr)
            finally:
                freed = time.perf_counter()
                peer.in_flight -= 1
                self._gauge_in_use.dec()
                if peer.retiring and peer.in_flight == 0:
                    self._drop_peer(peer, "retired")
                self._free_conn.observe(time.perf_counter() - freed)

    async def _pick(self, deadline: float, avoid: set[tuple[str, int]]) -> _Peer:
        while True:
            usable = [p for p in self._peers.values() if p.conn.is_open and not p.retiring]
            fresh = [p for p in usable if p.addr not in avoid]
            if fresh:
                return min(fresh, key=lambda p: p.in_flight)
            remaining = deadline - time.time()
            if remaining <= 0:
                raise NoWorker(f"no {self.kind} answered in time")
            if usable and avoid:
                # Every worker we hold failed once for this request: try them again
                # after a short pause rather than give up while time remains.
                avoid.clear()
                await asyncio.sleep(min(remaining, 0.02))
                continue
            self._wake.set()
            self._gauge_waiting.inc()
            try:
                await asyncio.wait_for(asyncio.shield(self._changed), timeout=min(remaining, 0.1))
            except TimeoutError:
                pass
            finally:
                self._gauge_waiting.dec()

    def _notify(self) -> None:
        if not self._changed.done():
            self._changed.set_result(None)
        self._changed = asyncio.get_running_loop().create_future()

    # -- failures ---------------------------------------------------------------------

    def _peer_failed(self, peer: _Peer, reason: str) -> None:
        self._drop_peer(peer, reason)
        self._broken_addrs.trip(peer.addr)
        for lease in self._leases.values():
            if lease.addr == peer.addr:
                self._broken.trip(lease.worker_id)
        self._wake.set()

    def _drop_peer(self, peer: _Peer, reason: str) -> None:
        if self._peers.get(peer.addr) is peer:
            del self._peers[peer.addr]
            peer.conn.close(reason)
            log.info("worker_connection_dropped", kind=self.kind, peer=peer.addr, reason=reason)
            self._update_gauges()

    # -- maintenance --------------------------------------------------------------------

    async def _maintain_forever(self) -> None:
        while True:
            try:
                await self._maintain_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease_maintenance_failed", kind=self.kind)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=_MAINTAIN_EVERY_S)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _maintain_once(self) -> None:
        now = time.monotonic()
        manager_ok = await self._renew_due()
        # Leases whose worker we cannot reach go back; the breaker keeps us away.
        for lease in list(self._leases.values()):
            if self._broken_addrs.is_open(lease.addr):
                await self._give_back(lease)
                continue
            if lease.addr not in self._peers:
                await self._connect(lease)
        if manager_ok:
            manager_ok = await self._lease_more()
        if manager_ok:
            # Connections to workers we no longer hold a lease on retire once idle,
            # after a grace period in which the worker may be leased to us again.
            leased_addrs = {lease.addr for lease in self._leases.values()}
            for peer in list(self._peers.values()):
                if peer.addr in leased_addrs:
                    peer.unleased_since = None
                    continue
                if peer.unleased_since is None:
                    peer.unleased_since = now
                if now - peer.unleased_since >= _UNLEASED_GRACE_S:
                    peer.retiring = True
                    if peer.in_flight == 0:
                        self._drop_peer(peer, "lease ended")
        for peer in list(self._peers.values()):
            if not peer.conn.is_open:
                self._peer_failed(peer, peer.conn.close_reason or "closed")
            elif now - peer.conn.last_active >= KEEPALIVE_S and not peer.pinging:
                self._keep_alive(peer)
        self._update_gauges()

    def _keep_alive(self, peer: _Peer) -> None:
        """Ping a connection that has carried nothing for a while, so the worker (which
        closes silent connections) keeps it; a worker that does not answer is dropped."""

        async def ping() -> None:
            try:
                await peer.conn.call(messages.Ping(), deadline=time.time() + 2.0, trace_id="")
            except UserhubError as exc:
                self._peer_failed(peer, f"keep-alive ping failed: {exc.code}")
            finally:
                peer.pinging = False

        peer.pinging = True
        task = asyncio.get_running_loop().create_task(ping())
        self._pings.add(task)
        task.add_done_callback(self._pings.discard)

    async def _renew_due(self) -> bool:
        now = time.monotonic()
        for lease in list(self._leases.values()):
            if lease.renew_at > now:
                continue
            try:
                reply = await self._link.call(messages.RenewLease(lease.lease_id))
            except LeaseUnknown:
                log.info("lease_lost", kind=self.kind, lease_id=lease.lease_id)
                self._leases.pop(lease.lease_id, None)
                continue
            except UserhubError as exc:
                log.info("manager_unreachable", kind=self.kind, error=exc.code)
                return False
            lease.renew_at = now + reply.ttl_s / 3
        return True

    async def _lease_more(self) -> bool:
        while len(self._leases) < self._want:
            held = {lease.worker_id for lease in self._leases.values()}
            exclude = tuple(held | self._broken.open_keys())
            try:
                reply = await self._link.call(messages.AcquireLease(self.kind, exclude=exclude))
            except NoWorker:
                return True
            except UserhubError as exc:
                log.info("manager_unreachable", kind=self.kind, error=exc.code)
                return False
            lease = _Lease(
                lease_id=reply.lease_id,
                worker_id=reply.worker_id,
                addr=(reply.host, reply.port),
                renew_at=time.monotonic() + reply.ttl_s / 3,
            )
            self._leases[lease.lease_id] = lease
            if self._broken_addrs.is_open(lease.addr):
                self._broken.trip(lease.worker_id)
                await self._give_back(lease)
                continue
            if lease.addr not in self._peers:
                await self._connect(lease)
            elif self._peers[lease.addr].retiring:
                self._peers[lease.addr].retiring = False
        return True

    async def _connect(self, lease: _Lease) -> None:
        try:
            conn = await Connection.open(
                *lease.addr,
                timeout=_CONNECT_TIMEOUT_S,
                identity=self._link.identity,
                expect=self.kind,
            )
        except ConnectionLost as exc:
            log.info("worker_unreachable", kind=self.kind, peer=lease.addr, error=str(exc))
            self._broken.trip(lease.worker_id)
            self._broken_addrs.trip(lease.addr)
            await self._give_back(lease)
            return
        peer = _Peer(addr=lease.addr, conn=conn)
        self._peers[lease.addr] = peer
        conn.closed_future().add_done_callback(lambda _: self._wake.set())
        log.info("worker_connected", kind=self.kind, peer=lease.addr, worker_id=lease.worker_id)
        self._update_gauges()
        self._notify()

    async def _give_back(self, lease: _Lease) -> None:
        self._leases.pop(lease.lease_id, None)
        try:
            await self._link.call(messages.ReleaseLease(lease.lease_id))
        except UserhubError:
            pass  # the manager drops it with the worker, or it expires

    def _update_gauges(self) -> None:
        self._gauge_leases.set(len(self._leases))
        self._gauge_size.set(len(self._peers))
