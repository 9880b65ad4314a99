"""Session touches: sliding idle expiries in MySQL, batched off the read path.

A touch is an UPDATE and a commit (a log flush) that nobody waits for: done inline
it would put a disk flush on every uncached profile read of a session last seen more
than a touch interval ago. Batched, one statement and one commit cover every session
touched in TOUCH_EVERY_S. A touch lost to a crash or a failing MySQL only means the
next read touches again; past MAX_PENDING_TOUCHES new touches are dropped rather
than held without bound.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import structlog

from actors.db.mysql_pool import MysqlPool
from actors.wire.errors import UserhubError

log = structlog.get_logger("session_touches")

TOUCH_EVERY_S = 0.2
TOUCH_BATCH = 500
MAX_PENDING_TOUCHES = 50_000


class SessionTouches:
    def __init__(self, pool: MysqlPool) -> None:
        self._pool = pool
        self._pending: dict[str, None] = {}  # token hashes waiting to be touched, oldest first
        self._task: asyncio.Task[None] | None = None

    def add(self, token_hash: str) -> None:
        """Touch this session within TOUCH_EVERY_S, without waiting for it."""
        if token_hash in self._pending:
            return
        if len(self._pending) >= MAX_PENDING_TOUCHES:
            log.warning("touches_dropped", pending=len(self._pending))
            return
        self._pending[token_hash] = None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._write_soon())

    async def close(self) -> None:
        """Write what is pending (once, bounded by the pool's timeouts), then stop."""
        if self._task is not None:
            self._task.cancel()
        if self._pending and self._pool.is_open:
            try:
                await self._write(list(self._pending))
            except UserhubError as exc:
                log.warning("touch_failed", sessions=len(self._pending), error=exc.code)
        self._pending.clear()

    async def _write_soon(self) -> None:
        await asyncio.sleep(TOUCH_EVERY_S)
        while self._pending:
            batch = list(itertools.islice(self._pending, TOUCH_BATCH))
            try:
                await self._write(batch)
            except UserhubError as exc:
                log.warning("touch_failed", sessions=len(batch), error=exc.code)
            for token_hash in batch:
                self._pending.pop(token_hash, None)

    async def _write(self, token_hashes: list[str]) -> None:
        now = time.time()
        marks = ",".join(["UNHEX(%s)"] * len(token_hashes))
        async with self._pool.connection("session_write") as conn:
            cur = await conn.cursor()
            await cur.execute(
                "UPDATE sessions SET last_seen = %s"
                f" WHERE token_hash IN ({marks}) AND expires_at > %s",
                (now, *token_hashes, now),
            )
