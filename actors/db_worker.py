"""db_worker: the only actor that touches MySQL; password hashing runs here too.

It registers with the pool manager, receives its share of the global MySQL
connection budget, opens a pool of exactly that size and only then reports ready,
so no lease ever points at a worker that cannot reach the database.

Input is checked again here with the same rules the gateway applied
(actors.rules.validation): the gateway checks first so that bad input gets its
field-level answer without costing a password hash, and this worker checks because
it writes the record and must not depend on every caller having done so.
"""

from __future__ import annotations

import asyncio
from typing import assert_never

import structlog

from actors.db.passwords import PasswordHasher
from actors.db.user_store import UserStore
from actors.rules import image_keys, tokens, validation
from actors.runtime import credentials, lifecycle
from actors.runtime.config import DbWorkerConfig
from actors.runtime.lifecycle import Lifecycle
from actors.runtime.worker import WorkerServer
from actors.wire import messages
from actors.wire.errors import DatabaseUnavailable, InvalidCredentials, InvalidInput
from actors.wire.messages import DbWorkerRequest, Message
from actors.wire.roles import DB_WORKER
from actors.wire.server import Envelope

log = structlog.get_logger("db_worker")

_PURGE_EVERY_S = 60.0


class DbWorker:
    def __init__(self, config: DbWorkerConfig, life: Lifecycle) -> None:
        self.config = config
        self.hasher = PasswordHasher(config.hash_threads, config.hash_queue)
        self.store: UserStore | None = None
        self.worker: WorkerServer[DbWorkerRequest] = WorkerServer(
            DB_WORKER,
            DbWorkerRequest,
            self.handle,
            common=config.common,
            limits=config.limits,
            identity=credentials.identity(config.common, DB_WORKER),
            lifecycle=life,
            ready=lambda: self.store is not None and self.store.is_open,
            mysql_wanted=config.pool_wanted,
        )
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        registration = await self.worker.start()
        self._tasks.append(asyncio.create_task(self._open_when_granted(registration.mysql_granted)))
        self._tasks.append(asyncio.create_task(self._purge_forever()))

    async def stop(self) -> None:
        await self.worker.drain()
        for task in self._tasks:
            task.cancel()
        if self.store is not None:
            await self.store.close()
        self.hasher.close()

    # -- requests ---------------------------------------------------------------------

    async def handle(self, envelope: Envelope[DbWorkerRequest]) -> Message:
        # WorkerServer logs the "handled" line (duration, error code) for every request.
        policy = self.config.sessions
        match envelope.message:
            case messages.ResolveSession(token_hash=token_hash):
                return await self._store().resolve_session(token_hash, policy)
            case messages.Login() as msg:
                return await self._login(msg)
            case messages.CreateUser() as msg:
                return await self._create_user(msg)
            case messages.UpdateUser() as msg:
                return await self._update_user(msg)
            case messages.TouchSession(token_hash=token_hash):
                self._store().touch_later(token_hash)  # batched: see UserStore.touch_later
                return messages.Ack()
            case messages.EndSession(token_hash=token_hash):
                await self._store().end_session(token_hash)
                return messages.Ack()
            case messages.AvatarsInUse(keys=keys):
                return await self._avatars_in_use(keys)
            case messages.Ping():
                return messages.Pong(kind="db_worker")
            case _ as unreachable:
                assert_never(unreachable)

    def _store(self) -> UserStore:
        if self.store is None or not self.store.is_open:
            raise DatabaseUnavailable("this worker has no MySQL pool yet")
        return self.store

    async def _create_user(self, msg: messages.CreateUser) -> messages.User:
        username = validation.normalize_username(msg.username)
        nickname = validation.normalize_nickname(msg.nickname)
        password = validation.check_password(msg.password)
        store = self._store()
        digest = await self.hasher.hash(password)
        return await store.create_user(username, nickname, digest, msg.idempotency_key)

    async def _update_user(self, msg: messages.UpdateUser) -> messages.User:
        if not msg.idempotency_key:
            raise InvalidInput("a write needs an idempotency key")
        if msg.avatar_key is not None and not image_keys.is_key(msg.avatar_key):
            raise InvalidInput("malformed picture key", field="avatar")
        nickname = None if msg.nickname is None else validation.normalize_nickname(msg.nickname)
        return await self._store().update_user(
            msg.user_id, msg.idempotency_key, nickname, msg.avatar_key
        )

    async def _avatars_in_use(self, keys: tuple[str, ...]) -> messages.AvatarKeys:
        """The keys of ``keys`` some account references; a malformed key is nobody's."""
        if len(keys) > messages.MAX_AVATAR_KEYS:  # the decoder refuses these already
            raise InvalidInput(f"at most {messages.MAX_AVATAR_KEYS} keys at a time")
        wanted = sorted({key for key in keys if image_keys.is_key(key)})
        if not wanted:
            return messages.AvatarKeys(keys=())
        return messages.AvatarKeys(keys=await self._store().avatars_in_use(wanted))

    async def _login(self, msg: messages.Login) -> messages.LoginResult:
        store = self._store()
        try:
            username = validation.normalize_username(msg.username)
            password = validation.check_password(msg.password)
        except InvalidInput:
            # Same work and same answer as a wrong password: no oracle on the rules.
            await self.hasher.verify(None, msg.password[:128])
            raise InvalidCredentials("wrong username or password") from None
        found = await store.user_for_login(username)
        stored_hash = found[1] if found else None
        if not await self.hasher.verify(stored_hash, password) or found is None:
            raise InvalidCredentials("wrong username or password")
        user = found[0]
        if self.hasher.needs_rehash(found[1]):
            await store.replace_password_hash(user.user_id, await self.hasher.hash(password))
        token, token_hash = tokens.new_token()
        policy = self.config.sessions
        expires_at = await store.create_session(token_hash, user.user_id, policy)
        return messages.LoginResult(
            token=token, user=user, expires_at=expires_at, idle_timeout_s=policy.idle_timeout_s
        )

    # -- background ---------------------------------------------------------------------

    async def _open_when_granted(self, registration_granted: asyncio.Future[int]) -> None:
        granted = await registration_granted
        if granted <= 0:
            # Serving would exceed MySQL's connection budget: stay registered, never ready.
            log.error("no_mysql_budget_left", wanted=self.config.pool_wanted)
            return
        await self._open_store(granted)

    async def _open_store(self, size: int) -> None:
        """Open the MySQL pool with the granted size, retrying until MySQL answers."""
        delay = 0.1
        while True:
            store = UserStore(self.config.mysql, size, op_timeout_s=self.config.mysql_op_timeout_s)
            try:
                await store.open()
            except Exception as exc:
                log.warning("mysql_unreachable", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)  # come back within a second of MySQL
                continue
            self.store = store
            log.info("mysql_pool_open", size=size)
            return

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(_PURGE_EVERY_S)
            if self.store is not None:
                try:
                    await self.store.purge(self.config.sessions)
                except Exception as exc:
                    log.warning("purge_failed", error=str(exc))


def main() -> None:
    config = DbWorkerConfig.from_env()
    lifecycle.run("db_worker", config.common.log_level, lambda life: DbWorker(config, life))


if __name__ == "__main__":
    main()
