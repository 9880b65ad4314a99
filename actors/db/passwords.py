"""argon2id password hashing, off the event loop, with a bounded queue.

Parameters are OWASP's minimum for argon2id: 19 MiB of memory, two passes, one lane,
stored in the PHC string format (``$argon2id$v=19$m=19456,t=2,p=1$...``) so they can
be raised later: a login with an older hash re-hashes it.

argon2-cffi's C call releases the GIL, so a plain thread pool (one thread per core
across the host's db_workers, see actors.runtime.config) hashes in parallel without the cost
and lifecycle of extra processes. An unknown user costs the same dummy verify as a
wrong password, so timing says nothing about which usernames exist.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from actors.runtime import metrics
from actors.wire.errors import Busy

T = TypeVar("T")

MEMORY_KIB = 19 * 1024
TIME_COST = 2
PARALLELISM = 1


def make_hasher() -> _Argon2:
    return _Argon2(
        time_cost=TIME_COST,
        memory_cost=MEMORY_KIB,
        parallelism=PARALLELISM,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )


class PasswordHasher:
    """Hash and verify on a thread pool; beyond ``queue_limit`` waiting jobs, say busy."""

    def __init__(self, threads: int, queue_limit: int) -> None:
        self._argon = make_hasher()
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="argon2")
        self._queue_limit = queue_limit
        self._queued = 0
        # A real hash of a random secret: what an unknown user's login is checked against.
        self._dummy = self._argon.hash(secrets.token_urlsafe(16))
        self._hash_seconds = metrics.PASSWORD_HASH_SECONDS.labels("hash")
        self._verify_seconds = metrics.PASSWORD_HASH_SECONDS.labels("verify")

    async def hash(self, password: str) -> str:
        return await self._run(self._hash_sync, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """True when ``password`` matches ``stored``; ``None`` runs the dummy verify."""
        return await self._run(self._verify_sync, stored, password)

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self._argon.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._queued >= self._queue_limit:
            raise Busy("password hashing queue is full")
        self._queued += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._queued -= 1

    def _hash_sync(self, password: str) -> str:
        started = time.perf_counter()
        digest = self._argon.hash(password)
        self._hash_seconds.observe(time.perf_counter() - started)
        return digest

    def _verify_sync(self, stored: str | None, password: str) -> bool:
        started = time.perf_counter()
        try:
            if stored is None:
                self._argon.verify(self._dummy, password)
                return False
            return self._argon.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        finally:
            self._verify_seconds.observe(time.perf_counter() - started)
