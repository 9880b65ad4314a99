"""The account flows the JSON API and the HTML pages share.

Sign up and log in go to a db_worker; profile reads and every change go to a
cache_worker, which commits through a db_worker before it answers. Picture bytes
never cross the actor protocol: the gateway validates and stores them, and only
the content-addressed key travels. Routes translate between HTTP and these
functions; nothing about accounts, sessions, throttling or pictures is decided in
a route.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from actors.rules import validation
from actors.runtime import metrics
from actors.web import images
from actors.web.middleware import REQUEST_ID
from actors.web.services import SERVICES
from actors.wire import messages
from actors.wire.errors import (
    DependencyError,
    InternalError,
    InvalidCredentials,
    InvalidInput,
    Throttled,
)


def idempotency_key(request: web.Request) -> str:
    """The client's Idempotency-Key if it sent a sane one, else a fresh one."""
    key = request.headers.get("Idempotency-Key", "")
    if key and len(key) <= 64 and key.isascii() and key.isprintable():
        return key
    if key:
        raise InvalidInput("Idempotency-Key must be 1-64 printable ASCII characters")
    return uuid.uuid4().hex


async def sign_up(
    request: web.Request, username: object, password: object, nickname: object
) -> messages.User:
    fields = {"username": username, "password": password, "nickname": nickname}
    for name, value in fields.items():
        if not isinstance(value, str):
            raise InvalidInput(f"{name} must be a string", field=name)
    # Validated here too, so bad input never costs a worker a password hash.
    create = messages.CreateUser(
        username=validation.normalize_username(username),
        password=validation.check_password(password),
        nickname=validation.normalize_nickname(nickname),
        idempotency_key=idempotency_key(request),
    )
    services = request.app[SERVICES]
    trace_id = request[REQUEST_ID]
    # Counted before the hash; only valid requests cost one, so only they count.
    counted = await services.throttle.sign_up_attempt(request, trace_id)
    try:
        return await services.call_db(request, create)
    except (DependencyError, InternalError):
        await services.throttle.not_judged(counted, trace_id)
        raise


async def log_in(request: web.Request, username: object, password: object) -> messages.LoginResult:
    if not isinstance(username, str) or not isinstance(password, str):
        raise InvalidInput("username and password must be strings")
    if len(username) > 256 or len(password) > 1024:
        raise InvalidCredentials("wrong username or password")
    services = request.app[SERVICES]
    trace_id = request[REQUEST_ID]
    # Counted before the password is verified: parallel guesses cannot overrun a limit.
    counted = await services.throttle.login_attempt(request, username, trace_id)
    try:
        result = await services.call_db(
            request, messages.Login(username=username, password=password)
        )
    except (DependencyError, InternalError):
        # No answer about the password reached the client: the attempt is taken back.
        await services.throttle.not_judged(counted, trace_id)
        raise
    await services.throttle.succeeded(counted, trace_id)
    return result


def remember_device(
    request: web.Request, response: web.StreamResponse, result: messages.LoginResult
) -> None:
    """Mark the client that just logged in as a known device of the account."""
    request.app[SERVICES].throttle.remember_device(response, result.user.username)


async def profile(request: web.Request, token_hash: str) -> messages.User:
    found = await request.app[SERVICES].call_cache(request, messages.GetProfile(token_hash))
    return found.user


async def change(
    request: web.Request,
    token_hash: str,
    *,
    nickname: str | None = None,
    avatar_key: str | None = None,
) -> messages.User:
    update = messages.UpdateProfile(
        token_hash=token_hash,
        idempotency_key=idempotency_key(request),
        nickname=nickname,
        avatar_key=avatar_key,
    )
    changed = await request.app[SERVICES].call_cache(request, update)
    return changed.user


async def upload_allowed(request: web.Request, user: messages.User) -> None:
    """Count one picture upload against ``user``'s limit; Throttled (429) past it.

    The one place an upload is counted, in the throttle every gateway shares
    (actors.web.throttle), before a byte of the picture is read.
    """
    try:
        await request.app[SERVICES].throttle.upload_allowed(user.user_id, request[REQUEST_ID])
    except Throttled:
        metrics.UPLOADS_REFUSED.labels(Throttled.code).inc()
        raise


@asynccontextmanager
async def upload_slot(request: web.Request, token_hash: str) -> AsyncIterator[messages.User]:
    """Everything an upload needs before its first byte is read, held for the block.

    The session is resolved (Unauthenticated for a dead one), the upload counted
    (upload_allowed) and one of the gateway's upload slots taken (Busy when none is
    free), in that order; the block reads, checks and stores the picture.
    """
    user = await profile(request, token_hash)
    await upload_allowed(request, user)
    with request.app[SERVICES].upload_slots.take():
        yield user


async def store_avatar(request: web.Request, data: bytes) -> str:
    """Validate and re-encode an upload off the event loop, store it, return its key."""
    image = await asyncio.to_thread(images.validate_avatar, data)
    await request.app[SERVICES].images.put(image)
    return image.key


async def log_out(request: web.Request, token_hash: str) -> None:
    """End the session for good; return only once no actor can serve it again.

    A retriable DependencyError (``cache_unavailable`` when Redis did not take the
    revocation) means the log out is not final yet, though its MySQL row may be gone
    already: the caller must say so, keep whatever it needs to try again (the
    cookie) and never answer as if it had worked. Logging out again is safe.
    """
    await request.app[SERVICES].call_cache(request, messages.Logout(token_hash))
