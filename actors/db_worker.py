"""db_worker: the only actor that touches MySQL; password hashing runs here too.

It registers with the pool manager, receives its share of the global MySQL
connection budget, opens a pool of exactly that size and only then reports ready,
so no lease ever points at a worker that cannot reach the database.
"""

from __future__ import annotations

import asyncio

import structlog

from actors.db.passwords import PasswordHasher
from actors.db.user_store import UserStore
from actors.rules import tokens, validation
from actors.runtime import logs, metrics
from actors.runtime.config import DbWorkerConfig
from actors.runtime.worker import WorkerRuntime
from actors.web import images
from actors.wire import messages, rpc
from actors.wire.errors import CallerError, DatabaseUnavailable, InvalidCredentials, InvalidInput
from actors.wire.messages import Message

log = structlog.get_logger("db_worker")

_PURGE_EVERY_S = 60.0


class DbWorker:
    def __init__(self, config: DbWorkerConfig) -> None:
        self.config = config
        self.hasher = PasswordHasher(config.hash_threads, config.hash_queue)
        self.store: UserStore | None = None

    @property
    def ready(self) -> bool:
        return self.store is not None and self.store.is_open

    def _store(self) -> UserStore:
        if self.store is None or not self.store.is_open:
            raise DatabaseUnavailable("this worker has no MySQL pool yet")
        return self.store

    async def handle(self, request: rpc.Request) -> Message:
        # WorkerRuntime logs the "handled" line (duration, error code) for every request.
        return await self._dispatch(request.message)

    async def _dispatch(self, msg: Message) -> Message:
        policy = self.config.sessions
        if isinstance(msg, messages.ResolveSession):
            _check_hash(msg.token_hash)
            return await self._store().resolve_session(msg.token_hash, policy)
        if isinstance(msg, messages.Login):
            return await self._login(msg)
        if isinstance(msg, messages.CreateUser):
            username = validation.normalize_username(msg.username)
            nickname = validation.normalize_nickname(msg.nickname)
            password = validation.check_password(msg.password)
            store = self._store()
            digest = await self.hasher.hash(password)
            return await store.create_user(username, nickname, digest, msg.idempotency_key)
        if isinstance(msg, messages.UpdateUser):
            if not msg.idempotency_key:
                raise InvalidInput("a write needs an idempotency key")
            if msg.avatar_key is not None and not images.KEY_RE.fullmatch(msg.avatar_key):
                raise InvalidInput("malformed picture key", field="avatar")
            new_nickname = (
                None if msg.nickname is None else validation.normalize_nickname(msg.nickname)
            )
            return await self._store().update_user(
                msg.user_id, msg.idempotency_key, new_nickname, msg.avatar_key
            )
        if isinstance(msg, messages.TouchSession):
            _check_hash(msg.token_hash)
            self._store().touch_later(msg.token_hash)  # batched: see UserStore.touch_later
            return messages.Ack()
        if isinstance(msg, messages.EndSession):
            _check_hash(msg.token_hash)
            await self._store().end_session(msg.token_hash)
            return messages.Ack()
        if isinstance(msg, messages.Ping):
            return messages.Pong(kind="db_worker")
        raise CallerError(f"db_worker does not handle {type(msg).__name__}")

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

    async def open_store(self, granted: int) -> None:
        """Open the MySQL pool with the granted size, retrying until MySQL answers."""
        size = granted
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

    async def housekeeping(self) -> None:
        while True:
            await asyncio.sleep(_PURGE_EVERY_S)
            if self.store is not None:
                try:
                    await self.store.purge(self.config.sessions)
                except Exception as exc:
                    log.warning("purge_failed", error=str(exc))


def _check_hash(token_hash: str) -> None:
    if not tokens.is_token_hash(token_hash):
        raise InvalidInput("malformed token hash")


async def main() -> None:
    config = DbWorkerConfig.from_env()
    logs.configure("db_worker", config.common.log_level)
    metrics.started("db_worker")
    worker = DbWorker(config)
    runtime = WorkerRuntime(
        "db_worker",
        config.common,
        config.limits,
        worker.handle,
        ready=lambda: worker.ready,
        mysql_wanted=config.pool_wanted,
    )
    registration = await runtime.start()
    granted = await registration.mysql_granted
    if granted <= 0:
        # Serving would exceed MySQL's connection budget: stay registered, never ready.
        log.error("no_mysql_budget_left", wanted=config.pool_wanted)
        opener = asyncio.create_task(asyncio.sleep(0))
    else:
        opener = asyncio.create_task(worker.open_store(granted))
    purger = asyncio.create_task(worker.housekeeping())
    await runtime.wait_and_drain()
    opener.cancel()
    purger.cancel()
    if worker.store is not None:
        await worker.store.close()
    worker.hasher.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
