"""What every gateway route shares: request ids, errors as JSON, headers, sessions.

The request id is made here (32 hex characters), returned in ``X-Request-ID``,
carried in every frame header as the trace id and logged by each actor that touches
the request. Errors become ``{"error": {"code", "message"}}`` with the stable code of
actors.wire.errors; nothing unexpected ever leaves as a bare 500 page.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from actors.rules import tokens
from actors.runtime import metrics
from actors.wire import messages
from actors.wire.errors import (
    CallerError,
    InvalidInput,
    PayloadTooLarge,
    RequestTimeout,
    Throttled,
    Unauthenticated,
    UserhubError,
)

log = structlog.get_logger("gateway")

REQUEST_ID = web.RequestKey("request_id", str)
SESSION_COOKIE = "userhub_session"
SECURE_SESSION_COOKIE = "__Host-userhub_session"
MAX_JSON_BYTES = 16 * 1024
#: A JSON body must arrive whole within this many seconds of the handler asking for it.
BODY_TIMEOUT_S = 10.0
#: A connection that has not sent a whole request head this long after it opened, or
#: after its last answer, is closed: a client trickling its headers (slowloris) or
#: idling on a kept-alive connection holds nothing for longer.
HTTP_IDLE_TIMEOUT_S = 20.0
API_CSP = "default-src 'none'; frame-ancestors 'none'"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_json = msgspec.json.Encoder()


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer encoded by msgspec: several times cheaper than aiohttp's json.dumps,
    and every answer of the gateway written the same way."""
    return web.Response(
        body=_json.encode(body), status=status, headers=headers, content_type="application/json"
    )


def error_response(exc: UserhubError) -> web.Response:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.field:
        body["field"] = exc.field
    headers = {}
    if isinstance(exc, Throttled):
        headers["Retry-After"] = str(exc.retry_after_s)
    elif exc.retriable:
        headers["Retry-After"] = "1"
    return json_response({"error": body}, status=exc.http_status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def observe(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Request id, timing, logging, and errors as JSON for every route."""
    request_id = os.urandom(16).hex()  # as unique as uuid4, a quarter of the cost
    request[REQUEST_ID] = request_id
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    error_code = ""
    try:
        response = await handler(request)
    except UserhubError as exc:
        response = error_response(exc)
        error_code = exc.code
        metrics.ERRORS.labels("gateway", exc.code).inc()
    except HttpProcessingError:
        # aiohttp's parsers (multipart part headers, forms) refusing what the client sent.
        response = error_response(CallerError("the request is malformed"))
        error_code = "bad_request"
        metrics.ERRORS.labels("gateway", error_code).inc()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "bad_request")
        response = json_response(
            {"error": {"code": code, "message": exc.reason}},
            status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
        error_code = code
        metrics.ERRORS.labels("gateway", code).inc()
    except Exception:
        log.exception("unhandled_error", path=request.path)
        response = json_response(
            {"error": {"code": "internal", "message": "internal error"}}, status=500
        )
        error_code = "internal"
        metrics.ERRORS.labels("gateway", "internal").inc()
    elapsed = time.perf_counter() - started
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    metrics.REQUEST_SECONDS.labels(name, str(response.status)).observe(elapsed)
    response.headers["X-Request-ID"] = request_id
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", API_CSP)
    response.headers.setdefault("Cache-Control", "no-store")
    fields: dict[str, Any] = {
        "method": request.method,
        "route": name,
        "status": response.status,
        "duration_ms": round(elapsed * 1000, 3),
    }
    if error_code:
        fields["error_code"] = error_code
    log.info("http", **fields)
    structlog.contextvars.unbind_contextvars("request_id")
    return response


async def read_json(request: web.Request) -> dict[str, Any]:
    """A JSON object body, bounded in size and time; anything else is the caller's error."""
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise PayloadTooLarge(f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
    raw = await read_body(request, MAX_JSON_BYTES, BODY_TIMEOUT_S)
    try:
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise CallerError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The whole body, however it was split in transit: 413 past ``limit`` bytes, 408 if it
    has not all arrived within ``timeout`` seconds."""
    data = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(limit + 1 - len(data)):
                data += chunk
                if len(data) > limit:
                    raise PayloadTooLarge(f"request bodies here are limited to {limit} bytes")
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout:g} s") from None
    return bytes(data)


def session_cookie_name(secure: bool) -> str:
    return SECURE_SESSION_COOKIE if secure else SESSION_COOKIE


def token_hash_of(request: web.Request, secure: bool) -> str:
    """The stored hash of the caller's token (Bearer header or cookie), or 401."""
    auth = request.headers.get("Authorization", "")
    token = ""
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("use Authorization: Bearer <token>")
        token = value.strip()
    else:
        token = request.cookies.get(session_cookie_name(secure), "")
    if not token:
        raise Unauthenticated("not logged in")
    token_hash = tokens.hash_token(token)
    if token_hash is None:
        raise Unauthenticated("not logged in or the session has ended")
    return token_hash


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


def idempotency_key(request: web.Request) -> str:
    """The client's Idempotency-Key if it sent a sane one, else a fresh one."""
    key = request.headers.get("Idempotency-Key", "")
    if key and len(key) <= 64 and key.isascii() and key.isprintable():
        return key
    if key:
        raise InvalidInput("Idempotency-Key must be 1-64 printable ASCII characters")
    return uuid.uuid4().hex
