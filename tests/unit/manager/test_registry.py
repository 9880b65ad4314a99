"""actors.manager.registry: who is registered, who holds which lease, the MySQL budget."""

from __future__ import annotations

import random
import time

import pytest

from actors.manager.registry import Registry
from actors.wire import messages
from actors.wire.errors import CallerError, LeaseUnknown, NoWorker

HOST = "127.0.0.1"


def reg_msg(
    kind: str = "cache_worker",
    *,
    port: int = 9000,
    capacity: int = 10,
    mysql_wanted: int = 0,
    ready: bool = True,
    pid: int = 4242,
) -> messages.Register:
    return messages.Register(
        kind=kind,
        host=HOST,
        port=port,
        capacity=capacity,
        pid=pid,
        mysql_wanted=mysql_wanted,
        ready=ready,
    )


def lease_counts(registry: Registry) -> dict[str, int]:
    return {w.worker_id: len(w.leases) for w in registry.workers.values()}


# -- Registry: registration ------------------------------------------------------------------


def test_register_records_the_worker() -> None:
    reg = Registry(mysql_budget=100, lease_ttl_s=30)
    worker = reg.register(reg_msg("cache_worker", port=9100, capacity=7, pid=77), "1.2.3.4:5")
    assert worker.worker_id.startswith("cache_worker-")
    assert reg.workers == {worker.worker_id: worker}
    assert (worker.kind, worker.host, worker.port, worker.capacity, worker.pid) == (
        "cache_worker",
        HOST,
        9100,
        7,
        77,
    )
    assert worker.peer == "1.2.3.4:5"
    assert worker.ready
    assert worker.mysql_granted == 0
    info = worker.info()
    assert info.worker_id == worker.worker_id and info.leases == 0 and info.ready


def test_register_gives_distinct_ids() -> None:
    reg = Registry(mysql_budget=100, lease_ttl_s=30)
    ids = {reg.register(reg_msg(), f"p:{i}").worker_id for i in range(50)}
    assert len(ids) == 50


@pytest.mark.parametrize(
    "msg",
    [
        reg_msg("gateway"),
        reg_msg("pool_manager"),
        reg_msg(""),
        reg_msg(capacity=0),
        reg_msg(capacity=-3),
        reg_msg(port=0),
        reg_msg(port=-1),
        reg_msg(port=65536),
    ],
    ids=[
        "gateway",
        "pool_manager",
        "empty kind",
        "capacity 0",
        "capacity<0",
        "port 0",
        "port<0",
        "port 65536",
    ],
)
def test_register_validation(msg: messages.Register) -> None:
    reg = Registry(mysql_budget=100, lease_ttl_s=30)
    with pytest.raises(CallerError) as info:
        reg.register(msg, "p:1")
    assert info.value.code == "bad_request"
    assert reg.workers == {}
    assert reg.mysql_granted == 0


def test_register_accepts_edge_ports() -> None:
    reg = Registry(mysql_budget=100, lease_ttl_s=30)
    reg.register(reg_msg(port=1), "p:1")
    reg.register(reg_msg(port=65535), "p:2")
    assert len(reg.workers) == 2


# -- Registry: the MySQL budget --------------------------------------------------------------


def test_mysql_budget_is_shared_and_never_exceeded() -> None:
    reg = Registry(mysql_budget=100, lease_ttl_s=30)
    a = reg.register(reg_msg("db_worker", mysql_wanted=60), "p:a")
    b = reg.register(reg_msg("db_worker", mysql_wanted=60), "p:b")
    c = reg.register(reg_msg("db_worker", mysql_wanted=10), "p:c")
    assert (a.mysql_granted, b.mysql_granted, c.mysql_granted) == (60, 40, 0)
    assert reg.mysql_granted == 100
    listing = reg.listing("db_worker")
    assert (listing.mysql_budget, listing.mysql_granted) == (100, 100)
    # a dead worker's share comes back to the budget
    assert reg.drop_worker(a.worker_id) is a
    assert reg.mysql_granted == 40
    d = reg.register(reg_msg("db_worker", mysql_wanted=80), "p:d")
    assert d.mysql_granted == 60
    assert reg.mysql_granted == 100


def test_mysql_budget_only_for_db_workers() -> None:
    reg = Registry(mysql_budget=10, lease_ttl_s=30)
    cache = reg.register(reg_msg("cache_worker", mysql_wanted=10), "p:a")
    assert cache.mysql_granted == 0
    db = reg.register(reg_msg("db_worker", mysql_wanted=10), "p:b")
    assert db.mysql_granted == 10


def test_mysql_wanted_zero_or_negative_gets_zero() -> None:
    reg = Registry(mysql_budget=10, lease_ttl_s=30)
    assert reg.register(reg_msg("db_worker", mysql_wanted=0), "p:a").mysql_granted == 0
    assert reg.register(reg_msg("db_worker", mysql_wanted=-5), "p:b").mysql_granted == 0
    assert reg.mysql_granted == 0


def test_mysql_budget_under_churn_never_exceeds_total() -> None:
    rng = random.Random(7)
    budget = 500
    reg = Registry(mysql_budget=budget, lease_ttl_s=30)
    for step in range(2000):
        if reg.workers and rng.random() < 0.4:
            reg.drop_worker(rng.choice(list(reg.workers)))
        else:
            kind = rng.choice(("db_worker", "db_worker", "cache_worker"))
            reg.register(reg_msg(kind, mysql_wanted=rng.randrange(0, 200)), f"p:{step}")
        granted = [w.mysql_granted for w in reg.workers.values()]
        assert all(g >= 0 for g in granted)
        assert sum(granted) == reg.mysql_granted <= budget
    for worker_id in list(reg.workers):
        reg.drop_worker(worker_id)
    assert reg.mysql_granted == 0


# -- Registry: leases --------------------------------------------------------------------------


def test_leases_spread_evenly_over_equal_workers() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=30)
    workers = [reg.register(reg_msg(port=9000 + i), f"p:{i}") for i in range(3)]
    for _ in range(30):
        reg.acquire("cache_worker", (), "client")
    assert sorted(lease_counts(reg).values()) == [10, 10, 10]
    assert len(reg.leases) == 30
    assert all(len(w.leases) == 10 for w in workers)


def test_leases_spread_by_capacity() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=30)
    small = reg.register(reg_msg(capacity=10), "p:s")
    big = reg.register(reg_msg(capacity=30), "p:b")
    for _ in range(40):
        reg.acquire("cache_worker", (), "client")
    assert (len(small.leases), len(big.leases)) == (10, 30)


def test_lease_goes_to_the_fewest_leases_per_capacity() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=30)
    a = reg.register(reg_msg(port=9001), "p:a")
    b = reg.register(reg_msg(port=9002), "p:b")
    for _ in range(4):
        reg.acquire("cache_worker", (), "c1")
    assert (len(a.leases), len(b.leases)) == (2, 2)
    for lease_id in list(a.leases):
        reg.release(lease_id)
    # the emptied worker takes the next two, then they alternate again
    picked = [reg.acquire("cache_worker", (), "c2")[1] for _ in range(2)]
    assert picked == [a, a]
    lease, worker = reg.acquire("cache_worker", (), "c3")
    assert sorted((len(a.leases), len(b.leases))) == [2, 3]
    assert (lease.worker_id, lease.holder) == (worker.worker_id, "c3")
    assert lease.lease_id in worker.leases


def test_in_flight_breaks_ties() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=30)
    a = reg.register(reg_msg(port=9001), "p:a")
    b = reg.register(reg_msg(port=9002), "p:b")
    reg.heartbeat(a.worker_id, messages.Heartbeat(in_flight=50, ready=True))
    reg.heartbeat(b.worker_id, messages.Heartbeat(in_flight=3, ready=True))
    _, worker = reg.acquire("cache_worker", (), "c")
    assert worker is b
    _, worker = reg.acquire("cache_worker", (), "c")
    assert worker is a  # leases per capacity come first


def test_lease_fields() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=12.5)
    w = reg.register(reg_msg(port=9333), "p:w")
    before = time.monotonic()
    lease, worker = reg.acquire("cache_worker", (), "holder")
    assert worker is w
    assert lease.holder == "holder"
    assert before + 12.5 <= lease.expires <= time.monotonic() + 12.5
    assert reg.leases[lease.lease_id] is lease
    other, _ = reg.acquire("cache_worker", (), "holder")
    assert other.lease_id != lease.lease_id


def test_acquire_honours_exclude() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=30)
    a = reg.register(reg_msg(port=9001), "p:a")
    b = reg.register(reg_msg(port=9002), "p:b")
    for _ in range(10):
        _, worker = reg.acquire("cache_worker", (a.worker_id,), "c")
        assert worker is b
    with pytest.raises(NoWorker):
        reg.acquire("cache_worker", (a.worker_id, b.worker_id), "c")
    _, worker = reg.acquire("cache_worker", ("cache_worker-unknown-1",), "c")
    assert worker is a  # unknown ids in exclude are harmless


def test_acquire_only_ready_workers_of_the_kind() -> None:
    reg = Registry(mysql_budget=100, lease_ttl_s=30)
    not_ready = reg.register(reg_msg("db_worker", ready=False, mysql_wanted=5), "p:a")
    reg.register(reg_msg("cache_worker"), "p:b")
    with pytest.raises(NoWorker) as info:
        reg.acquire("db_worker", (), "c")
    assert info.value.code == "no_worker" and info.value.retriable
    reg.heartbeat(not_ready.worker_id, messages.Heartbeat(in_flight=0, ready=True))
    _, worker = reg.acquire("db_worker", (), "c")
    assert worker is not_ready
    # and a worker that reports itself not ready (draining) gets no new leases
    reg.heartbeat(not_ready.worker_id, messages.Heartbeat(in_flight=0, ready=False))
    with pytest.raises(NoWorker):
        reg.acquire("db_worker", (), "c")


def test_no_worker_when_none_registered() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=30)
    with pytest.raises(NoWorker):
        reg.acquire("cache_worker", (), "c")
    with pytest.raises(NoWorker):
        reg.acquire("nonsense", (), "c")
    assert reg.leases == {}


def test_renew_by_the_holder_only() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=30)
    reg.register(reg_msg(), "p:a")
    lease, _ = reg.acquire("cache_worker", (), "alice")
    lease.expires -= 20
    reg.renew(lease.lease_id, "alice")
    assert lease.expires > time.monotonic() + 29
    before = lease.expires
    with pytest.raises(LeaseUnknown) as info:
        reg.renew(lease.lease_id, "mallory")
    assert info.value.code == "lease_unknown"
    assert lease.expires == before
    with pytest.raises(LeaseUnknown):
        reg.renew("L-no-such-lease", "alice")


def test_renew_after_the_worker_is_dropped() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=30)
    w = reg.register(reg_msg(), "p:a")
    survivor = reg.register(reg_msg(port=9010), "p:b")
    lease, worker = reg.acquire("cache_worker", (survivor.worker_id,), "alice")
    assert worker is w
    other, _ = reg.acquire("cache_worker", (w.worker_id,), "alice")
    reg.drop_worker(w.worker_id)
    assert lease.lease_id not in reg.leases
    with pytest.raises(LeaseUnknown):
        reg.renew(lease.lease_id, "alice")
    reg.renew(other.lease_id, "alice")  # leases on other workers are untouched
    assert reg.drop_worker(w.worker_id) is None  # twice is harmless


def test_release() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=30)
    w = reg.register(reg_msg(), "p:a")
    lease, _ = reg.acquire("cache_worker", (), "alice")
    keep, _ = reg.acquire("cache_worker", (), "alice")
    reg.release(lease.lease_id)
    assert lease.lease_id not in reg.leases
    assert w.leases == {keep.lease_id}
    reg.release(lease.lease_id)  # twice, and unknown ids, are harmless
    reg.release("L-unknown")
    with pytest.raises(LeaseUnknown):
        reg.renew(lease.lease_id, "alice")
    assert reg.listing("").leases == 1


def test_release_after_worker_dropped_is_harmless() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=30)
    w = reg.register(reg_msg(), "p:a")
    lease, _ = reg.acquire("cache_worker", (), "alice")
    reg.drop_worker(w.worker_id)
    reg.release(lease.lease_id)
    assert reg.leases == {}


def test_release_holder() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=30)
    workers = [reg.register(reg_msg(port=9000 + i), f"p:{i}") for i in range(2)]
    alices = [reg.acquire("cache_worker", (), "alice")[0] for _ in range(5)]
    bobs = [reg.acquire("cache_worker", (), "bob")[0] for _ in range(3)]
    assert reg.release_holder("alice") == 5
    assert set(reg.leases) == {b.lease_id for b in bobs}
    assert set().union(*(w.leases for w in workers)) == {b.lease_id for b in bobs}
    for lease in alices:
        with pytest.raises(LeaseUnknown):
            reg.renew(lease.lease_id, "alice")
    assert reg.release_holder("alice") == 0
    assert reg.release_holder("nobody") == 0


def test_expire_leases_with_a_tiny_ttl() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=0.05)
    w = reg.register(reg_msg(), "p:a")
    old, _ = reg.acquire("cache_worker", (), "alice")
    assert reg.expire_leases() == 0
    time.sleep(0.07)
    fresh, _ = reg.acquire("cache_worker", (), "alice")
    assert reg.expire_leases() == 1
    assert set(reg.leases) == {fresh.lease_id}
    assert w.leases == {fresh.lease_id}
    with pytest.raises(LeaseUnknown):
        reg.renew(old.lease_id, "alice")
    time.sleep(0.07)
    assert reg.expire_leases() == 1
    assert reg.leases == {} and w.leases == set()
    assert reg.expire_leases() == 0


def test_renewal_pushes_expiry_back() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=0.05)
    reg.register(reg_msg(), "p:a")
    lease, _ = reg.acquire("cache_worker", (), "alice")
    lease.expires -= 1  # long overdue, but housekeeping has not run yet
    reg.renew(lease.lease_id, "alice")
    assert reg.expire_leases() == 0
    assert lease.lease_id in reg.leases


def test_hung_workers() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=30)
    quiet = reg.register(reg_msg(port=9001), "p:a")
    chatty = reg.register(reg_msg(port=9002), "p:b")
    assert reg.hung_workers(0.5) == []
    quiet.last_heartbeat -= 10
    chatty.last_heartbeat -= 10
    reg.heartbeat(chatty.worker_id, messages.Heartbeat(in_flight=4, ready=False))
    assert reg.hung_workers(0.5) == [quiet]
    assert (chatty.in_flight, chatty.ready) == (4, False)
    time.sleep(0.02)
    assert set(w.worker_id for w in reg.hung_workers(0.01)) == {
        quiet.worker_id,
        chatty.worker_id,
    }


def test_heartbeat_from_a_dropped_worker_is_an_error() -> None:
    reg = Registry(mysql_budget=0, lease_ttl_s=30)
    w = reg.register(reg_msg(), "p:a")
    reg.drop_worker(w.worker_id)
    with pytest.raises(KeyError):
        reg.heartbeat(w.worker_id, messages.Heartbeat())


def test_listing_filters_by_kind() -> None:
    reg = Registry(mysql_budget=50, lease_ttl_s=30)
    db = reg.register(reg_msg("db_worker", mysql_wanted=20), "p:a")
    cache = reg.register(reg_msg("cache_worker"), "p:b")
    reg.acquire("cache_worker", (), "x")
    every = reg.listing("")
    assert {w.worker_id for w in every.workers} == {db.worker_id, cache.worker_id}
    (only,) = reg.listing("db_worker").workers
    assert only.worker_id == db.worker_id and only.mysql_granted == 20
    (c,) = reg.listing("cache_worker").workers
    assert c.leases == 1
    assert (every.mysql_budget, every.mysql_granted, every.leases) == (50, 20, 1)


def test_one_client_may_hold_only_so_many_leases() -> None:
    reg = Registry(mysql_budget=100, lease_ttl_s=30, max_leases_per_holder=3)
    reg.register(reg_msg(), "w:1")
    leases = [reg.acquire("cache_worker", (), "greedy")[0] for _ in range(3)]
    with pytest.raises(CallerError, match="already holds 3 leases"):
        reg.acquire("cache_worker", (), "greedy")
    reg.acquire("cache_worker", (), "modest")  # others are not affected
    reg.release(leases[0].lease_id, "greedy")
    reg.acquire("cache_worker", (), "greedy")  # a slot came back
    assert reg.leases_of("greedy") == 3
    assert reg.release_holder("greedy") == 3
    assert reg.leases_of("greedy") == 0 and len(reg.leases) == 1


def test_leases_of_a_dead_worker_free_their_holders_slots() -> None:
    reg = Registry(mysql_budget=100, lease_ttl_s=30, max_leases_per_holder=2)
    worker = reg.register(reg_msg(), "w:1")
    reg.acquire("cache_worker", (), "client")
    reg.acquire("cache_worker", (), "client")
    reg.drop_worker(worker.worker_id)
    assert reg.leases_of("client") == 0
    reg.register(reg_msg(port=9001), "w:2")
    reg.acquire("cache_worker", (), "client")
