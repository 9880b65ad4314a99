"""The db_worker's MySQL connections: bounded, timed, and failing fast when MySQL fails.

The pool is as large as the pool manager granted from the global budget. A gate in
front of it bounds waiting with a timeout, so pool exhaustion is its own error
(``pool_exhausted``), distinct from MySQL being down (``database_unavailable``). A
connection that saw an unexpected error is closed, never returned to the pool.

Each operation (getting a connection, the queries, the commit) is bounded by
``op_timeout_s``: when MariaDB is gone a refused connect fails at once, but a server
that stopped answering (a cut network, a hung server) would otherwise hold the
caller until its deadline, since neither aiomysql's handshake nor its reads time
out. And while MySQL is failing (the breaker, open for one operation timeout after
a failure), a call that finds every connection taken, or that saw the calls ahead
of it fail while it waited, fails at once rather than queue behind calls that are
themselves waiting to time out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiomysql
import pymysql

from actors.runtime import metrics
from actors.runtime.breaker import Breaker
from actors.runtime.stores import MysqlDsn
from actors.wire.errors import DatabaseUnavailable, PoolExhausted

# What a broken or unreachable server looks like from aiomysql. RuntimeError is
# uvloop's: a write on a transport the server closed, or a reset before the
# handshake ("Transport does not expose socket instance").
_CONNECTION_ERRORS = (
    pymysql.err.OperationalError,
    pymysql.err.InterfaceError,
    OSError,
    RuntimeError,
)


class MysqlPool:
    def __init__(
        self, dsn: MysqlDsn, size: int, acquire_timeout_s: float = 2.0, op_timeout_s: float = 1.5
    ) -> None:
        self._dsn = dsn
        self.size = max(1, size)
        self._acquire_timeout_s = acquire_timeout_s
        self._op_timeout_s = op_timeout_s
        self._gate = asyncio.Semaphore(self.size)
        self._breaker = Breaker(cooldown_s=op_timeout_s)
        self._pool: aiomysql.Pool | None = None
        self._in_use = metrics.POOL_IN_USE.labels("db_worker", "mysql")
        self._waiting = metrics.WAITING_REQUESTS.labels("db_worker", "mysql")
        metrics.POOL_SIZE.labels("db_worker", "mysql").set(self.size)

    async def open(self) -> None:
        # Bounded too: a server that accepts but never greets would hang the handshake.
        async with asyncio.timeout(5.0):
            self._pool = await aiomysql.create_pool(
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
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None

    @asynccontextmanager
    async def connection(self, stage: str) -> AsyncIterator[aiomysql.Connection]:
        """A pooled connection for one operation, timed as ``stage`` in the metrics."""
        pool = self._pool
        if pool is None:
            raise DatabaseUnavailable("database pool is not open")
        started = time.perf_counter()
        await self._pass_gate()
        self._in_use.inc()
        try:
            async with asyncio.timeout(self._op_timeout_s):
                async with self._acquired(pool, started) as conn:
                    yield conn
        except TimeoutError:
            self._breaker.trip()
            raise DatabaseUnavailable(
                f"MySQL did not answer within {self._op_timeout_s} s"
            ) from None
        except DatabaseUnavailable:
            self._breaker.trip()
            raise
        finally:
            self._gate.release()
            self._in_use.dec()
            metrics.DB_QUERY_SECONDS.labels(stage).observe(time.perf_counter() - started)

    async def _pass_gate(self) -> None:
        """Wait for a free connection slot, failing fast while MySQL fails."""
        if self._gate.locked() and self._breaker.is_open:
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
        if self._breaker.tripped_since(queued_at):
            self._gate.release()
            raise DatabaseUnavailable("MySQL failed while this call waited for a connection")

    @asynccontextmanager
    async def _acquired(
        self, pool: aiomysql.Pool, started: float
    ) -> AsyncIterator[aiomysql.Connection]:
        """A connection out of aiomysql's pool; closed, never returned, if in doubt."""
        try:
            conn = await pool.acquire()
        except _CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot reach MySQL: {exc}") from None
        # The "get connection" stage: the pool's queue plus any new handshake.
        metrics.MYSQL_ACQUIRE_SECONDS.observe(time.perf_counter() - started)
        try:
            yield conn
        except pymysql.err.IntegrityError:
            raise  # the statement's own outcome (a duplicate key): the connection is fine
        except _CONNECTION_ERRORS as exc:
            conn.close()
            raise DatabaseUnavailable(f"MySQL failed: {exc}") from None
        except BaseException:
            conn.close()
            raise
        finally:
            pool.release(conn)
