"""All SQL userhub runs, over the db_worker's MySQL pool (actors.db.mysql_pool).

Only db_workers import this. Users and sessions live in MySQL, the record; every
write that a client may retry carries an idempotency key, recorded in the same
transaction as the change, so a write retried after a crash is applied once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import pymysql
import structlog

from actors.db.mysql_pool import MysqlPool
from actors.db.session_touches import SessionTouches
from actors.runtime.config import SessionPolicy
from actors.runtime.stores import MysqlDsn
from actors.wire import messages
from actors.wire.errors import (
    Unauthenticated,
    UsernameTaken,
)

log = structlog.get_logger("user_store")

_USER_COLUMNS = "u.id, u.username, u.nickname, u.avatar_key, u.created_at, u.version"
# The hot reads ask for one JSON array instead of eight columns: the client parses a
# column descriptor per column of every result in pure Python, so one column costs
# it about 75 us of CPU per query where eight cost about 120 us (msgspec decodes
# the array).
_ROW_DECODER = msgspec.json.Decoder(list[Any])


def _json_row(*columns: str) -> str:
    return "JSON_ARRAY(" + ", ".join(columns) + ")"


_USER_JSON_COLUMNS = tuple(c.strip() for c in _USER_COLUMNS.split(","))
_DUPLICATE_KEY = 1062


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
        self.pool = MysqlPool(dsn, size, acquire_timeout_s, op_timeout_s)
        self._connection = self.pool.connection
        self.touches = SessionTouches(self.pool)

    async def open(self) -> None:
        await self.pool.open()

    @property
    def is_open(self) -> bool:
        return self.pool.is_open

    async def close(self) -> None:
        await self.touches.close()
        await self.pool.close()

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

    async def avatars_in_use(self, keys: Sequence[str]) -> tuple[str, ...]:
        """Which of ``keys`` (at most messages.MAX_AVATAR_KEYS) some user references.

        One query, answered from the index on ``users.avatar_key``: one index probe
        per key, however many users there are.
        """
        if not keys:
            return ()
        placeholders = ", ".join(["%s"] * len(keys))
        async with self._connection("avatars_in_use") as conn:
            cur = await conn.cursor()
            await cur.execute(
                "SELECT DISTINCT avatar_key FROM users WHERE avatar_key IN (" + placeholders + ")",
                tuple(keys),
            )
            rows = await cur.fetchall()
        return tuple(sorted(str(row[0]) for row in rows))

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
        """Slide a session's idle expiry in MySQL soon, in a batch (SessionTouches)."""
        self.touches.add(token_hash)

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
