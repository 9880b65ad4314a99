"""actors.web.throttle: limits per pair, address and account, windows, Retry-After, bounds."""

from __future__ import annotations

from typing import cast

import pytest

from actors.runtime.leasing import WorkerPool
from actors.web import throttle
from actors.web.throttle import Limits, LoginThrottle, SharedLoginThrottle
from actors.wire import messages
from actors.wire.errors import NoWorker, Throttled


class Clock:
    """Stands in for the time module inside actors.web.throttle."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:  # deadlines of the shared throttle's calls
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(throttle, "time", fake)
    return fake


LIMITS = Limits(per_pair=3, per_address=10, per_account=6, window_s=60.0)


def fail(t: LoginThrottle, user: str, addr: str, times: int) -> None:
    for _ in range(times):
        t.failed(user, addr)


def is_throttled(t: LoginThrottle, user: str, addr: str) -> bool:
    try:
        t.check(user, addr)
    except Throttled:
        return True
    return False


def test_pair_limit(clock: Clock) -> None:
    t = LoginThrottle(LIMITS)
    fail(t, "alice", "10.0.0.1", 2)
    t.check("alice", "10.0.0.1")  # below the limit
    t.failed("alice", "10.0.0.1")
    with pytest.raises(Throttled) as info:
        t.check("alice", "10.0.0.1")
    assert info.value.code == "throttled"
    assert info.value.http_status == 429
    # the same account from elsewhere, and another account from here, are not slowed yet
    t.check("alice", "10.0.0.2")
    t.check("bob", "10.0.0.1")


def test_address_limit_spans_accounts(clock: Clock) -> None:
    t = LoginThrottle(LIMITS)
    for i in range(10):
        t.failed(f"user{i}", "10.0.0.9")
    assert is_throttled(t, "someone-new", "10.0.0.9")
    assert not is_throttled(t, "someone-new", "10.0.0.10")


def test_account_limit_spans_addresses_without_locking_out_for_long(clock: Clock) -> None:
    t = LoginThrottle(LIMITS)
    for i in range(6):  # spraying one account from many addresses
        t.failed("alice", f"10.1.0.{i}")
    assert is_throttled(t, "alice", "192.168.1.1")  # even from a fresh address
    assert not is_throttled(t, "bob", "192.168.1.1")
    clock.now += LIMITS.window_s  # one window later the real user gets in again
    t.check("alice", "192.168.1.1")


def test_window_expiry_resets_counts(clock: Clock) -> None:
    t = LoginThrottle(LIMITS)
    fail(t, "alice", "a", 3)
    assert is_throttled(t, "alice", "a")
    clock.now += LIMITS.window_s - 0.01
    assert is_throttled(t, "alice", "a")
    clock.now += 0.01
    t.check("alice", "a")
    # a failure after the window starts a new window at 1, not at 4
    t.failed("alice", "a")
    fail(t, "alice", "a", 1)
    t.check("alice", "a")
    t.failed("alice", "a")
    assert is_throttled(t, "alice", "a")


def test_windows_are_fixed_from_the_first_failure(clock: Clock) -> None:
    t = LoginThrottle(LIMITS)
    t.failed("alice", "a")
    clock.now += 50
    fail(t, "alice", "a", 2)  # later failures do not move the window
    assert is_throttled(t, "alice", "a")
    clock.now += 10
    t.check("alice", "a")


@pytest.mark.parametrize(
    ("elapsed", "retry_after"),
    [(0.0, 60), (0.5, 60), (1.0, 59), (30.2, 30), (58.9, 2), (59.5, 1), (59.99, 1)],
)
def test_retry_after_is_the_rest_of_the_window_rounded_up(
    clock: Clock, elapsed: float, retry_after: int
) -> None:
    t = LoginThrottle(LIMITS)
    fail(t, "alice", "a", 3)
    clock.now += elapsed
    with pytest.raises(Throttled) as info:
        t.check("alice", "a")
    assert info.value.retry_after_s == retry_after
    assert info.value.retry_after_s >= 1


def test_retry_after_follows_the_key_that_is_over(clock: Clock) -> None:
    limits = Limits(per_pair=100, per_address=100, per_account=2, window_s=10.0)
    t = LoginThrottle(limits)
    t.failed("alice", "a")
    clock.now += 4
    t.failed("alice", "b")
    with pytest.raises(Throttled) as info:
        t.check("alice", "c")
    assert info.value.retry_after_s == 6


def test_success_clears_the_pair_only(clock: Clock) -> None:
    t = LoginThrottle(LIMITS)
    fail(t, "alice", "a", 3)
    assert is_throttled(t, "alice", "a")
    t.succeeded("alice", "a")
    t.check("alice", "a")
    fail(t, "alice", "a", 2)
    t.check("alice", "a")  # the pair counts from zero again
    # the account and address keys still remember: 5 failures on alice so far
    t.failed("alice", "b")
    assert is_throttled(t, "alice", "c")


def test_success_does_not_clear_the_address_limit(clock: Clock) -> None:
    t = LoginThrottle(LIMITS)
    for i in range(10):
        t.failed(f"user{i}", "x")
    t.succeeded("user0", "x")
    assert is_throttled(t, "user0", "x")


def test_success_without_failures_is_harmless(clock: Clock) -> None:
    t = LoginThrottle(LIMITS)
    t.succeeded("nobody", "nowhere")
    t.check("nobody", "nowhere")


def test_table_is_bounded_and_forgets_the_oldest(clock: Clock) -> None:
    t = LoginThrottle(LIMITS, max_keys=9)  # three keys per failure
    fail(t, "old", "1.1.1.1", 3)
    assert is_throttled(t, "old", "1.1.1.1")
    for i in range(3):
        t.failed(f"new{i}", f"2.2.2.{i}")
        assert len(t._counts) <= 9
    # the oldest keys went first; the newest are still counted
    assert not is_throttled(t, "old", "1.1.1.1")
    fail(t, "new2", "2.2.2.2", 2)
    assert is_throttled(t, "new2", "2.2.2.2")


def test_table_stays_bounded_under_a_flood(clock: Clock) -> None:
    t = LoginThrottle(LIMITS, max_keys=100)
    for i in range(5000):
        t.failed(f"user{i}", f"10.{i // 256 % 256}.{i % 256}.1")
    assert len(t._counts) <= 100


def test_usernames_and_addresses_do_not_collide_across_keys(clock: Clock) -> None:
    limits = Limits(per_pair=1, per_address=100, per_account=100, window_s=60.0)
    t = LoginThrottle(limits)
    t.failed("a", "b:c")
    t.check("a:b", "c")
    t.check("ab", "c")


# -- the shared throttle, over a stand-in for the cache_worker pool ----------------------


class FakePool:
    """Answers like a cache_worker would, or fails like an unreachable one."""

    def __init__(self, verdict: messages.ThrottleVerdict | None = None) -> None:
        self.verdict = verdict
        self.sent: list[messages.Message] = []

    async def call(
        self, message: messages.Message, *, deadline: float, trace_id: str
    ) -> messages.Message:
        self.sent.append(message)
        if self.verdict is None:
            raise NoWorker("no cache_worker answered")
        if isinstance(message, messages.ThrottleCheck):
            return self.verdict
        return messages.Ack()


def shared(pool: FakePool) -> SharedLoginThrottle:
    # The throttle only ever calls its pool; the stand-in has that one method.
    return SharedLoginThrottle(LoginThrottle(LIMITS), cast(WorkerPool, pool))


async def test_the_shared_verdict_decides_while_the_cache_answers() -> None:
    pool = FakePool(messages.ThrottleVerdict(retry_after_s=42, counted=True))
    with pytest.raises(Throttled) as caught:
        await shared(pool).check("ada", "10.0.0.1", "t")
    assert caught.value.retry_after_s == 42
    check = pool.sent[0]
    assert isinstance(check, messages.ThrottleCheck)
    assert check.limits == (3, 10, 6) and len(check.keys) == 3


async def test_failures_are_recorded_in_both_places_and_a_success_clears_only_if_counted() -> None:
    pool = FakePool(messages.ThrottleVerdict(retry_after_s=0, counted=False))
    t = shared(pool)
    assert await t.check("ada", "10.0.0.1", "t") is False
    await t.failed("ada", "10.0.0.1", "t")
    update = pool.sent[-1]
    assert isinstance(update, messages.ThrottleUpdate)
    assert len(update.failed) == 3 and update.cleared == () and update.window_s == 60
    await t.succeeded("ada", "10.0.0.1", "t", counted=False)
    assert pool.sent[-1] is update, "nothing on record: no clearing round trip"
    await t.succeeded("ada", "10.0.0.1", "t", counted=True)
    clear = pool.sent[-1]
    assert isinstance(clear, messages.ThrottleUpdate) and clear.cleared == (update.failed[0],)


async def test_without_a_cache_worker_the_local_table_decides(clock: Clock) -> None:
    t = shared(FakePool(verdict=None))
    for _ in range(3):
        assert await t.check("ada", "10.0.0.1", "t") is True
        await t.failed("ada", "10.0.0.1", "t")  # not recorded remotely: no error either
    with pytest.raises(Throttled):
        await t.check("ada", "10.0.0.1", "t")
