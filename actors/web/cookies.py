"""The session cookie and the bearer token: how a request names its session.

The API takes ``Authorization: Bearer <token>`` or the session cookie; the pages
only ever look at the cookie. The cookie is HttpOnly and SameSite=Lax, lives as
long as the session's absolute expiry, and with TLS (``USERHUB_TLS=1``) is Secure
and named with the ``__Host-`` prefix so no sibling sub-domain can plant one. Only
the SHA-256 of a token ever leaves the gateway.
"""

from __future__ import annotations

import time

from aiohttp import web

from actors.rules import tokens
from actors.wire import messages
from actors.wire.errors import Unauthenticated

SESSION_COOKIE = "userhub_session"
SECURE_SESSION_COOKIE = "__Host-userhub_session"


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


def cookie_token_hash(request: web.Request, secure: bool) -> str | None:
    """The stored hash of the browser's session cookie, if it holds a well-formed token."""
    token = request.cookies.get(session_cookie_name(secure), "")
    return tokens.hash_token(token) if token else None


def set_session_cookie(
    response: web.StreamResponse, result: messages.LoginResult, secure: bool
) -> None:
    response.set_cookie(
        session_cookie_name(secure),
        result.token,
        max_age=max(0, int(result.expires_at - time.time())),
        path="/",
        httponly=True,
        secure=secure,
        samesite="Lax",
    )


def clear_session_cookie(response: web.StreamResponse, secure: bool) -> None:
    response.del_cookie(
        session_cookie_name(secure), path="/", secure=secure, httponly=True, samesite="Lax"
    )
