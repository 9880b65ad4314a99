"""Deleting stored pictures that no account references, a bounded batch at a time.

An upload is stored before the profile change that references it commits, and a
picture stops being referenced when its owner uploads another one; without a sweep
those files would stay forever. Each pass of :class:`AvatarSweeper`:

1. lists at most ``sweep_examine`` stored pictures, continuing from where the last
   pass stopped (a cursor over the keys), so successive passes walk the whole store;
2. keeps those last stored more than ``orphan_grace_s`` ago (a put of the same
   content refreshes the time, see actors.web.image_store);
3. asks a db_worker which of them some account references (``AvatarsInUse``, one
   bounded query per batch);
4. deletes at most ``sweep_delete`` of the rest, each only if it is still older
   than the grace period at the moment of deletion.

The grace period is what makes this safe against an upload in flight: its picture
was stored (or touched) within the last few seconds, so it is not a candidate, and
the conditional delete catches a touch that lands during the pass. A failure (no
db_worker, MariaDB down) ends the pass and deletes nothing more; the next pass
starts from the same place.

Every gateway runs a sweeper, but only the one holding an flock on
``<USERHUB_VAR>/run/avatar-sweeper.lock`` works: one gateway per host. The kernel
drops the lock when its holder dies, and another gateway takes over at its next
pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from actors.runtime import metrics
from actors.runtime.config import UploadPolicy
from actors.web.image_store import ImageStore
from actors.wire.messages import MAX_AVATAR_KEYS

log = structlog.get_logger("avatar_sweeper")

LOCK_FILE = "avatar-sweeper.lock"

#: Asks a db_worker which of these keys some account references.
AskInUse = Callable[[tuple[str, ...], str], Awaitable[tuple[str, ...]]]


class HostLock:
    """A non-blocking, process-lifetime flock: whoever holds it is the host's sweeper."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


@dataclass(frozen=True, slots=True)
class SweepPass:
    """What one pass did; logged, and returned for the tests."""

    examined: int
    old: int
    referenced: int
    deleted: int
    wrapped: bool  # the pass reached the end of the store; the next starts over


class AvatarSweeper:
    def __init__(
        self,
        store: ImageStore,
        ask_in_use: AskInUse,
        policy: UploadPolicy,
        lock: HostLock,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy
        self.lock = lock
        self._ask_in_use = ask_in_use
        self._clock = clock
        self.cursor = ""  # the last key a pass is done with; "" is the start

    async def sweep_once(self) -> SweepPass:
        """One bounded pass (the module's docstring says what it does)."""
        policy = self.policy
        trace_id = os.urandom(16).hex()
        page = await self.store.list_after(self.cursor, policy.sweep_examine)
        cutoff = self._clock() - policy.orphan_grace_s
        old = [item.key for item in page if item.modified < cutoff]
        in_use: set[str] = set()
        for start in range(0, len(old), MAX_AVATAR_KEYS):
            in_use.update(
                await self._ask_in_use(tuple(old[start : start + MAX_AVATAR_KEYS]), trace_id)
            )
        wrapped = len(page) < policy.sweep_examine
        cursor = "" if wrapped else page[-1].key
        previous, deleted = self.cursor, 0
        candidates = set(old) - in_use
        for item in page:
            if item.key in candidates:
                if deleted >= policy.sweep_delete:
                    cursor, wrapped = previous, False  # the next pass resumes here
                    break
                if await self.store.delete_if_older(item.key, cutoff):
                    deleted += 1
            previous = item.key
        self.cursor = cursor
        result = SweepPass(len(page), len(old), len(in_use), deleted, wrapped)
        metrics.AVATAR_SWEEP.labels("examined").inc(result.examined)
        metrics.AVATAR_SWEEP.labels("referenced").inc(result.referenced)
        metrics.AVATAR_SWEEP.labels("deleted").inc(result.deleted)
        log.info(
            "avatar_sweep",
            trace_id=trace_id,
            examined=result.examined,
            old=result.old,
            referenced=result.referenced,
            deleted=result.deleted,
            wrapped=result.wrapped,
        )
        return result

    async def run_forever(self) -> None:
        """A pass every ``sweep_every_s`` while this process holds the host's lock."""
        try:
            while True:
                await asyncio.sleep(self.policy.sweep_every_s)
                if not self.lock.held:
                    if not self.lock.try_acquire():
                        continue
                    log.info("avatar_sweeper_leader", lock=str(self.lock.path))
                try:
                    await self.sweep_once()
                except Exception as exc:  # a dependency down: try again next pass
                    log.warning("avatar_sweep_failed", error=repr(exc))
        finally:
            with contextlib.suppress(OSError):
                self.lock.release()
