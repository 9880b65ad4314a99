"""The one middleware of every gateway route: request id, timing, log line, errors.

The request id is made here (32 hex characters), returned in ``X-Request-ID``,
carried in every frame header as the trace id and logged by each actor that touches
the request. Errors become JSON with their stable code; nothing unexpected ever
leaves as a bare 500 page. The client reads a fixed message for any error that is
not its own (actors.web.views.public_message); the request's log line carries the
error's own message as ``error_detail``, whether the JSON API answered it here or
a page rendered it (the pages hand it over under :data:`HANDLED_ERROR`). Default
security headers are added with ``setdefault``, so a page that sets its own (the
HTML pages' Content-Security-Policy) keeps them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from actors.runtime import metrics
from actors.web.views import error_response, json_response
from actors.wire.errors import CallerError, UserhubError

log = structlog.get_logger("gateway")

REQUEST_ID = web.RequestKey("request_id", str)
#: An error a handler answered itself (an HTML error page), for the request's log line.
HANDLED_ERROR = web.RequestKey("handled_error", UserhubError)
API_CSP = "default-src 'none'; frame-ancestors 'none'"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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
    error: UserhubError | None = None
    try:
        response = await handler(request)
        error = request.get(HANDLED_ERROR)
        if error is not None:
            error_code = error.code
    except UserhubError as exc:
        response = error_response(exc)
        error_code, error = exc.code, exc
    except HttpProcessingError:
        # aiohttp's parsers (multipart part headers, forms) refusing what the client sent.
        response = error_response(CallerError("the request is malformed"))
        error_code = "bad_request"
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error_code = _HTTP_CODES.get(exc.status, "bad_request")
        response = json_response(
            {"error": {"code": error_code, "message": exc.reason}},
            status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
    except Exception:
        log.exception("unhandled_error", path=request.path)
        response = json_response(
            {"error": {"code": "internal", "message": "internal error"}}, status=500
        )
        error_code = "internal"
    if error_code:
        metrics.ERRORS.labels("gateway", error_code).inc()
    elapsed = time.perf_counter() - started
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    metrics.REQUEST_SECONDS.labels(name, str(response.status)).observe(elapsed)
    headers = response.headers
    headers["X-Request-ID"] = request_id
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Content-Security-Policy", API_CSP)
    headers.setdefault("Cache-Control", "no-store")
    fields: dict[str, Any] = {
        "method": request.method,
        "route": name,
        "status": response.status,
        "duration_ms": round(elapsed * 1000, 3),
    }
    if error_code:
        fields["error_code"] = error_code
    if error is not None and not isinstance(error, CallerError):
        fields["error_detail"] = error.message  # what the client was not told
    log.info("http", **fields)
    structlog.contextvars.unbind_contextvars("request_id")
    return response
