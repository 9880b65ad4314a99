"""How the gateway writes JSON: one encoder for every answer, profiles, errors.

msgspec encodes every JSON answer of the gateway, errors and health included: it is
several times cheaper than aiohttp's json.dumps, and every answer is written the
same way. Errors become ``{"error": {"code", "message", "field"?}}`` with the stable
code of actors.wire.errors, and a Retry-After where waiting helps.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from aiohttp import web

from actors.wire import messages
from actors.wire.errors import Throttled, UserhubError

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


def error_response(exc: UserhubError) -> web.Response:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.field:
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
