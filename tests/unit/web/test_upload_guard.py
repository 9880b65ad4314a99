"""actors.web.upload_guard: uploads per account per window, and upload slots."""

from __future__ import annotations

import pytest

from actors.web.upload_guard import UploadRate, UploadSlots
from actors.wire.errors import Busy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_upload_past_the_limit_waits_for_the_window() -> None:
    clock = Clock()
    rate = UploadRate(per_account=3, window_s=60, clock=clock)
    assert [rate.count(7) for _ in range(3)] == [0, 0, 0]
    clock.now += 20
    assert rate.count(7) == 40, "the rest of the window"
    assert rate.count(8) == 0, "another account is counted apart"
    clock.now += 40
    assert rate.count(7) == 0, "a new window"


def test_refused_uploads_count_too_and_the_table_is_bounded() -> None:
    clock = Clock()
    rate = UploadRate(per_account=1, window_s=10, max_keys=2, clock=clock)
    assert rate.count(1) == 0
    assert rate.count(1) == 10
    clock.now += 9.5
    assert rate.count(1) == 1  # at least a second
    rate.count(2)
    rate.count(3)  # account 1, the oldest, is forgotten
    assert rate.count(1) == 0


def test_slots_refuse_at_once_when_all_are_taken() -> None:
    slots = UploadSlots(2)
    with slots.take(), slots.take():
        assert slots.in_use == 2
        with pytest.raises(Busy), slots.take():
            pass
        assert slots.in_use == 2
    assert slots.in_use == 0
    with pytest.raises(ValueError), slots.take():
        raise ValueError("a failed upload gives its slot back")
    assert slots.in_use == 0
