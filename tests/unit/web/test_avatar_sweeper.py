"""actors.web.avatar_sweeper: bounded passes over a real local store, a fake db_worker."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from actors.runtime.config import UploadPolicy
from actors.web.avatar_sweeper import AvatarSweeper, HostLock
from actors.web.image_store import LocalImageStore
from actors.web.images import StoredImage
from actors.wire.errors import DatabaseUnavailable
from actors.wire.messages import MAX_AVATAR_KEYS
from tests.unit.web.test_image_store import pictures

GRACE = 3600.0


def policy(examine: int = 100, delete: int = 100) -> UploadPolicy:
    return UploadPolicy(
        concurrent=8,
        timeout_s=60.0,
        orphan_grace_s=GRACE,
        sweep_every_s=0.01,
        sweep_examine=examine,
        sweep_delete=delete,
    )


class Db:
    """Which keys accounts reference, and what the sweeper asked."""

    def __init__(self, referenced: set[str]) -> None:
        self.referenced = referenced
        self.asked: list[tuple[str, ...]] = []
        self.down = False

    async def in_use(self, keys: tuple[str, ...], trace_id: str) -> tuple[str, ...]:
        assert len(keys) <= MAX_AVATAR_KEYS and len(trace_id) == 32
        if self.down:
            raise DatabaseUnavailable("cannot reach MySQL")
        self.asked.append(keys)
        return tuple(k for k in keys if k in self.referenced)


async def stored(store: LocalImageStore, images: list[StoredImage], age_s: float) -> None:
    for image in images:
        await store.put(image)
        path = store.path_for(image.key)
        assert path is not None
        then = time.time() - age_s
        os.utime(path, (then, then))


def kept(store: LocalImageStore, images: list[StoredImage]) -> list[bool]:
    return [bool((p := store.path_for(i.key)) and p.exists()) for i in images]


async def test_old_unreferenced_pictures_go_referenced_and_fresh_ones_stay(
    tmp_path: Path,
) -> None:
    store = LocalImageStore(tmp_path / "avatars")
    old = pictures(6)
    referenced, orphan = old[:3], old[3:]
    fresh = [image for image in pictures(8) if image not in old]
    await stored(store, old, GRACE + 60)
    await stored(store, fresh, 10)
    db = Db({image.key for image in referenced})
    sweeper = AvatarSweeper(store, db.in_use, policy(), HostLock(tmp_path / "run" / "l"))
    done = await sweeper.sweep_once()
    assert (done.examined, done.old, done.referenced, done.deleted) == (8, 6, 3, 3)
    assert done.wrapped and sweeper.cursor == ""
    assert kept(store, referenced) == [True] * 3
    assert kept(store, orphan) == [False] * 3
    assert kept(store, fresh) == [True] * len(fresh)
    assert {k for batch in db.asked for k in batch} == {i.key for i in old}, "only old ones"


async def test_a_pass_examines_and_deletes_no_more_than_its_bounds(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    images = pictures(7)
    await stored(store, images, GRACE + 60)
    sweeper = AvatarSweeper(
        store, Db(set()).in_use, policy(examine=3, delete=2), HostLock(tmp_path / "l")
    )
    first = await sweeper.sweep_once()
    assert (first.examined, first.deleted, first.wrapped) == (3, 2, False)
    # The third one examined is left for the next pass, which resumes at it.
    assert kept(store, images) == [False, False] + [True] * 5
    assert sweeper.cursor == images[1].key
    passes = 1
    while any(kept(store, images)):
        result = await sweeper.sweep_once()
        assert result.examined <= 3 and result.deleted <= 2
        passes += 1
        assert passes < 10
    assert passes == 4  # 2 + 2 + 2 + 1


async def test_a_db_failure_deletes_nothing_and_the_next_pass_starts_over(
    tmp_path: Path,
) -> None:
    store = LocalImageStore(tmp_path)
    images = pictures(3)
    await stored(store, images, GRACE + 60)
    db = Db(set())
    db.down = True
    sweeper = AvatarSweeper(store, db.in_use, policy(), HostLock(tmp_path / "l"))
    with pytest.raises(DatabaseUnavailable):
        await sweeper.sweep_once()
    assert kept(store, images) == [True] * 3 and sweeper.cursor == ""
    db.down = False
    assert (await sweeper.sweep_once()).deleted == 3


def test_one_holder_of_the_host_lock_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "run" / "avatar-sweeper.lock"
    first, second = HostLock(path), HostLock(path)
    assert first.try_acquire() and first.held
    assert first.try_acquire(), "held already"
    assert not second.try_acquire() and not second.held
    first.release()
    assert second.try_acquire()
    second.release()
