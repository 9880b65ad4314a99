"""actors.web.upload_guard: how many uploads one gateway reads at once."""

from __future__ import annotations

import pytest

from actors.web.upload_guard import UploadSlots
from actors.wire.errors import Busy


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
