"""How the gateway writes JSON: one encoder for every answer, profiles, errors.

msgspec encodes every JSON answer of the gateway, errors and health included: it is
several times cheaper than aiohttp's json.dumps, and every answer is written the
same way. Errors become ``{"error": {"code", "message", "field"?}}`` with the stable
code of actors.wire.errors, and a Retry-After where waiting helps.

A caller's error keeps its message: it says what to change. Any other error (a
dependency down, our own fault) is told with a fixed sentence per code
(:data:`PUBLIC_MESSAGES`): its own message names servers, addresses and exceptions,
which are for the operator, who finds them in the gateway's log line for the
request, under the id the answer carries in X-Request-ID.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from aiohttp import web

from actors.wire import messages
from actors.wire.errors import CallerError, DependencyError, Throttled, UserhubError

_json = msgspec.json.Encoder()


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_json.encode(body), status=status, headers=headers, content_type="application/json"
    )


def retry_after(exc: UserhubError) -> dict[str, str]:
    """The Retry-After header an error deserves: the throttle's wait, 1 s if retriable."""
    if isinstance(exc, Throttled):
        return {"Retry-After": str(exc.retry_after_s)}
    if exc.retriable:
        return {"Retry-After": "1"}
    return {}


#: What a client is told of trouble that is not its own, by stable code.
PUBLIC_MESSAGES: dict[str, str] = {
    "database_unavailable": "the database is unavailable, try again shortly",
    "cache_unavailable": "the cache is unavailable, try again shortly",
    "no_worker": "the service is starting or recovering, try again shortly",
    "manager_unavailable": "the service is starting or recovering, try again shortly",
    "busy": "the service is busy, try again shortly",
    "pool_exhausted": "the service is busy, try again shortly",
    "connection_lost": "the service lost a connection, try again",
    "deadline_exceeded": "the service took too long to answer, try again",
    "unavailable": "the service is unavailable, try again shortly",
    "internal": "internal error",
    "protocol_error": "internal error",
}


def public_message(exc: UserhubError) -> str:
    """What the client may read of ``exc``: a caller error's own words, else a fixed one."""
    if isinstance(exc, CallerError):
        return exc.message
    if exc.code in PUBLIC_MESSAGES:
        return PUBLIC_MESSAGES[exc.code]
    return PUBLIC_MESSAGES["unavailable" if isinstance(exc, DependencyError) else "internal"]


def error_response(exc: UserhubError) -> web.Response:
    body: dict[str, Any] = {"code": exc.code, "message": public_message(exc)}
    if exc.field and isinstance(exc, CallerError):
        body["field"] = exc.field
    return json_response({"error": body}, status=exc.http_status, headers=retry_after(exc))


def avatar_url(user: messages.User) -> str | None:
    """Where a user's picture is served, if they have one."""
    return f"/avatars/{user.avatar_key}" if user.avatar_key else None


def profile_json(user: messages.User) -> dict[str, Any]:
    return {
        "username": user.username,
        "nickname": user.nickname,
        "avatar_url": avatar_url(user),
        "member_since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(user.created_at)),
    }
