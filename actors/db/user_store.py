"""All SQL userhub runs, over an aiomysql pool bounded by the leased MySQL budget.

Only db_workers import this. The pool is as large as the pool manager granted from
the global budget; a gate in front of it bounds waiting with a timeout (pool
exhaustion is its own error, distinct from MySQL being down), and a connection that
saw an unexpected error is closed, never returned to the pool.

Each operation (getting a connection, the queries, the commit) is bounded by
``op_timeout_s``: when MariaDB is gone a refused connect fails at once, but a server
that stopped answering (a cut network, a hung server) would otherwise hold the caller
until its deadline, since neither aiomysql's handshake nor its reads time out. And
while MySQL is failing, a call that finds every connection taken (or that saw the
calls ahead of it fail while it waited) fails at once rather than queue behind calls
that are themselves waiting to time out.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiomysql
import msgspec
import pymysql
import structlog

from actors.runtime import metrics
from actors.runtime.config import MysqlDsn, SessionPolicy
from actors.wire import messages
from actors.wire.errors import (
    DatabaseUnavailable,
    PoolExhausted,
    Unauthenticated,
    UserhubError,
    UsernameTaken,
)

log = structlog.get_logger("user_store")

_USER_COLUMNS = "u.id, u.username, u.nickname, u.avatar_key, u.created_at, u.version"
# The hot reads ask for one JSON array instead of eight columns: the client parses a
# column descriptor per column of every result in pure Python, and one column cut
# its CPU per query from about 120 us to 75 us here (msgspec decodes the array).
_ROW_DECODER = msgspec.json.Decoder(list[Any])


def _json_row(*columns: str) -> str:
    return "JSON_ARRAY(" + ", ".join(columns) + ")"


_USER_JSON_COLUMNS = tuple(c.strip() for c in _USER_COLUMNS.split(","))
_DUPLICATE_KEY = 1062
# Session touches (see UserStore.touch_later): how often they are written, how many
# per statement, how many may wait.
TOUCH_EVERY_S = 0.2
TOUCH_BATCH = 500
MAX_PENDING_TOUCHES = 50_000


def _user(row: Sequence[Any]) -> messages.User:
    return messages.User(
        user_id=int(row[0]),
        username=row[1],
        nickname=row[2],
        avatar_key=row[3],
        created_at=float(row[4]),
        version=int(row[5]),
    )


def scoped_key(user_scope: str, idempotency_key: str) -> str:
    """Idempotency keys are the client's; scope them so two clients never collide."""
    return hashlib.sha256(f"{user_scope}\0{idempotency_key}".encode()).hexdigest()


# Token hashes travel as hex and are stored as BINARY(32) through UNHEX(): binary
# parameters trip an escaping bug in the pinned aiomysql/PyMySQL pair.


class UserStore:
    def __init__(
        self,
        dsn: MysqlDsn,
        size: int,
        acquire_timeout_s: float = 2.0,
        op_timeout_s: float = 1.5,
    ) -> None:
        self._dsn = dsn
        self._op_timeout_s = op_timeout_s
        self._failed_at = -math.inf  # monotonic time of the last connection-level failure
        self.size = max(1, size)
        self._gate = asyncio.Semaphore(self.size)
        self._acquire_timeout_s = acquire_timeout_s
        self._pool: aiomysql.Pool | None = None
        self._touches: dict[str, None] = {}  # token hashes waiting to be touched, oldest first
        self._touch_task: asyncio.Task[None] | None = None
        self._in_use = metrics.POOL_IN_USE.labels("db_worker", "mysql")
        self._acquire_seconds = metrics.MYSQL_ACQUIRE_SECONDS
        self._waiting = metrics.WAITING_REQUESTS.labels("db_worker", "mysql")
        metrics.POOL_SIZE.labels("db_worker", "mysql").set(self.size)

    async def open(self) -> None:
        # Bounded too: a server that accepts but never greets would hang the handshake.
        async with asyncio.timeout(5.0):
            self._pool = await self._create_pool()

    async def _create_pool(self) -> aiomysql.Pool:
        return await aiomysql.create_pool(
            host=self._dsn.host,
            port=self._dsn.port,
            user=self._dsn.user,
            password=self._dsn.password,
            db=self._dsn.database,
            minsize=1,
            maxsize=self.size,
            autocommit=True,
            charset="utf8mb4",
            connect_timeout=2,
            pool_recycle=3600,
        )

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def close(self) -> None:
        if self._touch_task is not None:
            self._touch_task.cancel()
        if self._touches and self._pool is not None:
            try:
                await self._write_touches(list(self._touches))
            except UserhubError as exc:
                log.warning("touch_failed", sessions=len(self._touches), error=exc.code)
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None

    @asynccontextmanager
    async def _connection(self, stage: str) -> AsyncIterator[aiomysql.Connection]:
        if self._pool is None:
            raise DatabaseUnavailable("database pool is not open")
        started = time.perf_counter()
        if self._gate.locked() and time.monotonic() - self._failed_at < self._op_timeout_s:
            # MySQL is failing and every connection is taken by a call that will likely
            # time out too: queueing behind them would only double the wait.
            raise DatabaseUnavailable("MySQL is failing and every connection is busy")
        self._waiting.inc()
        queued_at = time.monotonic()
        try:
            async with asyncio.timeout(self._acquire_timeout_s):
                await self._gate.acquire()
        except TimeoutError:
            raise PoolExhausted("all MySQL connections are busy") from None
        finally:
            self._waiting.dec()
        if self._failed_at > queued_at:
            # The calls ahead of this one failed while it waited: MySQL is failing.
            self._gate.release()
            raise DatabaseUnavailable("MySQL failed while this call waited for a connection")
        self._in_use.inc()
        conn: aiomysql.Connection | None = None
        try:
            async with asyncio.timeout(self._op_timeout_s):
                try:
                    conn = await self._pool.acquire()
                except (pymysql.err.OperationalError, OSError, RuntimeError) as exc:
                    # RuntimeError: aiomysql on uvloop, when the peer resets the connection
                    # before the handshake ("Transport does not expose socket instance").
                    raise DatabaseUnavailable(f"cannot reach MySQL: {exc}") from None
                # The seed's "get connection": the pool's queue plus any new handshake.
                self._acquire_seconds.observe(time.perf_counter() - started)
                try:
                    yield conn
                except pymysql.err.IntegrityError:
                    raise
                except (
                    pymysql.err.OperationalError,
                    pymysql.err.InterfaceError,
                    OSError,
                    RuntimeError,  # uvloop: a write on a transport the server closed
                ) as exc:
                    conn.close()  # in doubt: never hand it back
                    raise DatabaseUnavailable(f"MySQL failed: {exc}") from None
                except BaseException:
                    conn.close()
                    raise
        except TimeoutError:
            self._failed_at = time.monotonic()
            raise DatabaseUnavailable(
                f"MySQL did not answer within {self._op_timeout_s} s"
            ) from None
        except DatabaseUnavailable:
            self._failed_at = time.monotonic()
            raise
        finally:
            if conn is not None:
                self._pool.release(conn)
            self._gate.release()
            self._in_use.dec()
            metrics.DB_QUERY_SECONDS.labels(stage).observe(time.perf_counter() - started)

    # -- users ------------------------------------------------------------------------

    async def create_user(
        self, username: str, nickname: str, password_hash: str, idempotency_key: str
    ) -> messages.User:
        now = time.time()
        key = scoped_key(f"signup:{username}", idempotency_key) if idempotency_key else ""
        async with self._connection("create_user") as conn:
            cur = await conn.cursor()
            try:
                await conn.begin()
                await cur.execute(
                    "INSERT INTO users (username, nickname, password_hash, created_at, updated_at)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (username, nickname, password_hash, now, now),
                )
                user_id = cur.lastrowid
                if key:
                    await cur.execute(
                        "INSERT INTO applied_writes (idempotency_key, user_id, applied_at)"
                        " VALUES (%s, %s, %s)",
                        (key, user_id, now),
                    )
                await conn.commit()
            except pymysql.err.IntegrityError as exc:
                await conn.rollback()
                if exc.args[0] != _DUPLICATE_KEY:
                    raise
                if key:
                    await cur.execute(
                        "SELECT " + _USER_COLUMNS + " FROM applied_writes a"
                        " JOIN users u ON u.id = a.user_id WHERE a.idempotency_key = %s",
                        (key,),
                    )
                    row = await cur.fetchone()
                    if row is not None:
                        return _user(row)  # the same sign-up, retried
                raise UsernameTaken("this username is taken", field="username") from None
            return messages.User(
                user_id=int(user_id),
                username=username,
                nickname=nickname,
                avatar_key=None,
                created_at=now,
                version=1,
            )

    async def user_for_login(self, username: str) -> tuple[messages.User, str] | None:
        async with self._connection("get_user") as conn:
            cur = await conn.cursor()
            await cur.execute(
                "SELECT "
                + _json_row(*_USER_JSON_COLUMNS, "u.password_hash")
                + " FROM users u WHERE u.username = %s",
                (username,),
            )
            found = await cur.fetchone()
        if found is None:
            return None
        row = _ROW_DECODER.decode(found[0])
        return _user(row), row[6]

    async def replace_password_hash(self, user_id: int, password_hash: str) -> None:
        async with self._connection("rehash") as conn:
            cur = await conn.cursor()
            await cur.execute(
                "UPDATE users SET password_hash = %s WHERE id = %s", (password_hash, user_id)
            )

    async def update_user(
        self,
        user_id: int,
        idempotency_key: str,
        nickname: str | None,
        avatar_key: str | None,
    ) -> messages.User:
        now = time.time()
        key = scoped_key(f"user:{user_id}", idempotency_key)
        async with self._connection("update_user") as conn:
            cur = await conn.cursor()
            await conn.begin()
            try:
                await cur.execute(
                    "INSERT INTO applied_writes (idempotency_key, user_id, applied_at)"
                    " VALUES (%s, %s, %s)",
                    (key, user_id, now),
                )
            except pymysql.err.IntegrityError as exc:
                await conn.rollback()
                if exc.args[0] != _DUPLICATE_KEY:
                    raise
            else:
                await cur.execute(
                    "UPDATE users SET nickname = COALESCE(%s, nickname),"
                    " avatar_key = COALESCE(%s, avatar_key),"
                    " version = version + 1, updated_at = %s WHERE id = %s",
                    (nickname, avatar_key, now, user_id),
                )
                if cur.rowcount == 0:
                    await conn.rollback()
                    raise Unauthenticated("the session's user no longer exists")
                await conn.commit()
            await cur.execute(
                "SELECT " + _USER_COLUMNS + " FROM users u WHERE u.id = %s", (user_id,)
            )
            row = await cur.fetchone()
        if row is None:
            raise Unauthenticated("the session's user no longer exists")
        return _user(row)

    # -- sessions -----------------------------------------------------------------------

    async def create_session(self, token_hash: str, user_id: int, policy: SessionPolicy) -> float:
        now = time.time()
        expires_at = now + policy.absolute_timeout_s
        async with self._connection("session_write") as conn:
            cur = await conn.cursor()
            await cur.execute(
                "INSERT INTO sessions (token_hash, user_id, created_at, last_seen, expires_at)"
                " VALUES (UNHEX(%s), %s, %s, %s, %s)",
                (token_hash, user_id, now, now, expires_at),
            )
        return expires_at

    async def resolve_session(self, token_hash: str, policy: SessionPolicy) -> messages.SessionInfo:
        now = time.time()
        async with self._connection("get_user") as conn:
            cur = await conn.cursor()
            await cur.execute(
                "SELECT "
                + _json_row(*_USER_JSON_COLUMNS, "s.expires_at", "s.last_seen")
                + " FROM sessions s JOIN users u ON u.id = s.user_id"
                " WHERE s.token_hash = UNHEX(%s)",
                (token_hash,),
            )
            found = await cur.fetchone()
        if found is None:
            raise Unauthenticated("not logged in or the session has ended")
        row = _ROW_DECODER.decode(found[0])
        expires_at, last_seen = float(row[6]), float(row[7])
        if now >= expires_at or now >= last_seen + policy.idle_timeout_s:
            await self.end_session(token_hash)
            raise Unauthenticated("the session has expired")
        if now - last_seen >= policy.touch_interval_s:
            self.touch_later(token_hash)
            last_seen = now
        return messages.SessionInfo(
            user=_user(row),
            expires_at=expires_at,
            last_seen=last_seen,
            idle_timeout_s=policy.idle_timeout_s,
        )

    def touch_later(self, token_hash: str) -> None:
        """Slide a session's idle expiry in MySQL soon, in a batch, without waiting.

        A touch is an UPDATE and a commit (a log flush) that nobody waits for: doing
        it inline put a disk flush on every uncached profile read of a session last
        seen more than a touch interval ago. Batched, one statement and one commit
        cover every session touched in TOUCH_EVERY_S. A touch lost to a crash or a
        failing MySQL only means the next read touches again; past MAX_PENDING_TOUCHES
        new touches are dropped rather than held without bound.
        """
        if token_hash in self._touches:
            return
        if len(self._touches) >= MAX_PENDING_TOUCHES:
            log.warning("touches_dropped", pending=len(self._touches))
            return
        self._touches[token_hash] = None
        if self._touch_task is None or self._touch_task.done():
            self._touch_task = asyncio.get_running_loop().create_task(self._touch_soon())

    async def _touch_soon(self) -> None:
        await asyncio.sleep(TOUCH_EVERY_S)
        while self._touches:
            batch = list(itertools.islice(self._touches, TOUCH_BATCH))
            try:
                await self._write_touches(batch)
            except UserhubError as exc:
                log.warning("touch_failed", sessions=len(batch), error=exc.code)
            for token_hash in batch:
                self._touches.pop(token_hash, None)

    async def _write_touches(self, token_hashes: list[str]) -> None:
        now = time.time()
        marks = ",".join(["UNHEX(%s)"] * len(token_hashes))
        async with self._connection("session_write") as conn:
            cur = await conn.cursor()
            await cur.execute(
                "UPDATE sessions SET last_seen = %s"
                f" WHERE token_hash IN ({marks}) AND expires_at > %s",
                (now, *token_hashes, now),
            )

    async def end_session(self, token_hash: str) -> None:
        async with self._connection("session_delete") as conn:
            cur = await conn.cursor()
            await cur.execute("DELETE FROM sessions WHERE token_hash = UNHEX(%s)", (token_hash,))

    async def purge(self, policy: SessionPolicy, keep_writes_s: float = 86400) -> int:
        """Delete expired sessions and old idempotency records, a bounded batch at a time."""
        now = time.time()
        async with self._connection("purge") as conn:
            cur = await conn.cursor()
            await cur.execute(
                "DELETE FROM sessions WHERE expires_at < %s OR last_seen < %s LIMIT 1000",
                (now, now - policy.idle_timeout_s),
            )
            removed = int(cur.rowcount)
            await cur.execute(
                "DELETE FROM applied_writes WHERE applied_at < %s LIMIT 1000",
                (now - keep_writes_s,),
            )
            return removed + int(cur.rowcount)
