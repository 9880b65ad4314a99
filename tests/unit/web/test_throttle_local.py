"""actors.web.throttle_local: limits, fixed windows, back-off, refunds, bounds."""

from __future__ import annotations

import pytest

from actors.web import throttle_local
from actors.web.throttle_local import LocalCounters, block_seconds
from actors.wire.messages import ThrottleRule


class Clock:
    """Stands in for the time module inside actors.web.throttle_local."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(throttle_local, "time", fake)
    return fake


def rule(key: str = "k", limit: int = 3, window_s: float = 60, cap_s: float = 0) -> ThrottleRule:
    return ThrottleRule(
        key=key, limit=limit, window_ms=int(window_s * 1000), backoff_cap_ms=int(cap_s * 1000)
    )


FIXED = rule()
BACKOFF = rule(cap_s=900)


def admitted(t: LocalCounters, *rules: ThrottleRule) -> bool:
    return t.attempt(rules) == 0


def test_the_limit_th_attempt_is_admitted_and_blocks_the_next(clock: Clock) -> None:
    t = LocalCounters()
    assert [admitted(t, FIXED) for _ in range(5)] == [True, True, True, False, False]


def test_a_fixed_window_starts_with_the_first_attempt_and_ends_the_block(clock: Clock) -> None:
    t = LocalCounters()
    admitted(t, FIXED)
    clock.now += 50
    admitted(t, FIXED)
    admitted(t, FIXED)
    assert t.attempt([FIXED]) == pytest.approx(10)  # the rest of the window
    clock.now += 10
    assert admitted(t, FIXED), "the window is over: counted from zero again"
    assert admitted(t, FIXED)


def test_refused_attempts_change_nothing(clock: Clock) -> None:
    t = LocalCounters()
    for _ in range(3):
        admitted(t, BACKOFF)
    for _ in range(100):  # hammering a blocked key does not lengthen its block
        assert t.attempt([BACKOFF]) == pytest.approx(60)
    clock.now += 60
    assert admitted(t, BACKOFF)
    assert t.attempt([BACKOFF]) == pytest.approx(120), "one doubling for one admitted attempt"


def test_back_off_doubles_per_admitted_attempt_up_to_the_cap(clock: Clock) -> None:
    t = LocalCounters()
    waits = []
    for _ in range(3):
        admitted(t, BACKOFF)
    for _ in range(6):
        wait = t.attempt([BACKOFF])
        waits.append(round(wait))
        clock.now += wait
        assert admitted(t, BACKOFF)
    assert waits == [60, 120, 240, 480, 900, 900]


def test_a_quiet_window_after_the_block_forgets_the_key(clock: Clock) -> None:
    t = LocalCounters()
    for _ in range(4):
        clock.now += t.wait(["k"])
        assert admitted(t, BACKOFF)
    clock.now += t.wait(["k"])  # 120 s: the block of the fourth attempt
    assert len(t) == 1
    clock.now += 59.9
    assert len(t) == 1 and t.wait(["k"]) == 0
    clock.now += 0.1  # quiet for one window after the block ended
    assert t.wait(["k"]) == 0 and len(t) == 0
    assert [admitted(t, BACKOFF) for _ in range(4)] == [True, True, True, False]


def test_block_seconds() -> None:
    assert [block_seconds(BACKOFF, n) for n in (3, 4, 5, 8, 100, 10**9)] == [
        60,
        120,
        240,
        900,
        900,
        900,
    ]


def test_the_longest_wait_of_any_key_decides_and_nothing_is_counted(clock: Clock) -> None:
    t = LocalCounters()
    tight, loose = rule("tight", limit=1, window_s=30), rule("loose", limit=10)
    assert admitted(t, tight, loose)
    clock.now += 5
    assert t.attempt([tight, loose]) == pytest.approx(25)
    for _ in range(8):
        assert t.attempt([tight, loose]) > 0
    # the loose key still has one attempt on record, not nine
    clock.now += 25
    for _ in range(9):
        assert admitted(t, loose)
    assert not admitted(t, loose)


def test_forget_and_refund(clock: Clock) -> None:
    t = LocalCounters()
    pair, address = rule("pair"), rule("address", limit=3, cap_s=900)
    for _ in range(3):
        admitted(t, pair, address)
    assert t.wait(["pair"]) > 0 and t.wait(["address"]) > 0
    t.settle(["pair"], [address])
    assert t.wait(["pair"]) == 0, "forgotten"
    assert t.wait(["address"]) == 0, "the refund took back the attempt that blocked it"
    assert admitted(t, address), "two on record, this is the third"
    assert not admitted(t, address)


def test_a_refund_above_the_limit_keeps_the_block(clock: Clock) -> None:
    t = LocalCounters()
    for _ in range(3):
        admitted(t, BACKOFF)
    clock.now += 60
    admitted(t, BACKOFF)  # four on record, blocked 120 s
    t.settle([], [BACKOFF])
    assert t.wait(["k"]) == pytest.approx(120)


def test_refunds_of_unknown_or_emptied_keys_leave_nothing_behind(clock: Clock) -> None:
    t = LocalCounters()
    t.settle(["nothing"], [rule("nowhere")])
    assert len(t) == 0
    admitted(t, FIXED)
    t.settle([], [FIXED])
    assert len(t) == 0


def test_the_table_is_bounded_and_drops_the_least_recently_used(clock: Clock) -> None:
    t = LocalCounters(max_keys=10)
    for _ in range(3):
        admitted(t, rule("old"))
    assert not admitted(t, rule("old"))
    for i in range(5000):
        t.attempt([rule(f"flood{i}")])
        assert len(t) <= 10
    assert admitted(t, rule("old")), "dropped first"
