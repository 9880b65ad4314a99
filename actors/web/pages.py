"""The HTML pages: sign up, log in, profile, nickname, picture, log out.

Every page is rendered on the server and every action is a plain HTML form, so the
site works with JavaScript off. The handlers only translate between forms and the
flows of :mod:`actors.web.flows`, which the JSON API uses too; nothing
about accounts, sessions, throttling or pictures is decided here.

The rules each handler follows:

* a POST is checked for its CSRF token before anything else is read or done; the
  picture upload, whose token travels in the same multipart body as the picture,
  first checks the browser's Origin headers and the session (the log-in redirect
  for a dead one), counts the upload and takes an upload slot, and only then reads
  the token, then the picture;
* every body is read within a size and a time limit (actors.web.bodies): 413, 408;
* a caller error is shown next to the field it names (``UserhubError.field``) by
  re-rendering the form with the error's 4xx status; a 429 keeps its Retry-After;
* a success answers 303 to a GET page (post/redirect/get), so a reload never
  re-sends a form;
* a missing, ended or expired session sends the browser to the log-in page, with a
  notice that says why, and clears the dead cookie;
* a log out that is not final yet (the service could not complete it) is an error
  page with Retry-After and a button to try again; the cookie stays until it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Final

import structlog
from aiohttp import BodyPartReader, web

from actors.rules import validation
from actors.runtime.config import GatewayConfig
from actors.web import bodies, csrf, flows
from actors.web.bodies import read_avatar_part
from actors.web.cookies import (
    clear_session_cookie,
    cookie_token_hash,
    session_cookie_name,
    set_session_cookie,
)
from actors.web.middleware import HANDLED_ERROR
from actors.web.render import Renderer, redirect
from actors.web.services import SERVICES
from actors.web.views import avatar_url, public_message, retry_after
from actors.wire import messages
from actors.wire.errors import (
    CallerError,
    CsrfFailed,
    DependencyError,
    InvalidCredentials,
    InvalidInput,
    Throttled,
    Unauthenticated,
    UnsupportedMediaType,
    UserhubError,
)

log = structlog.get_logger("pages")

RENDERER = web.AppKey("page_renderer", Renderer)
MAX_FORM_BYTES: Final = 16 * 1024
_FORM_TYPES: Final = ("application/x-www-form-urlencoded", "multipart/form-data")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def page(handler: _Handler) -> _Handler:
    """Errors nobody handled on the way become an HTML page, never a JSON body."""

    @wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except UserhubError as exc:
            request[HANDLED_ERROR] = exc  # the request's log line says what it was
            return request.app[RENDERER].error_page(request, exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error = CallerError(exc.reason)
            error.http_status = exc.status  # type: ignore[misc]
            return request.app[RENDERER].error_page(request, error)

    return wrapper


# -- helpers ------------------------------------------------------------------------------


def _secure(request: web.Request) -> bool:
    return request.app[SERVICES].config.secure_cookies


async def read_form(request: web.Request) -> dict[str, str]:
    """A small url-encoded form, CSRF-checked; file fields are not expected here."""
    if request.content_type not in _FORM_TYPES:
        raise UnsupportedMediaType("send this form from the page")
    form = await bodies.read_form(request, MAX_FORM_BYTES)
    request.app[RENDERER].csrf.verify(request, form.get(csrf.FIELD))
    return form


def session_hash(request: web.Request) -> str | None:
    """The stored hash of the browser's session cookie; pages never look at headers."""
    return cookie_token_hash(request, _secure(request))


def hint_cookie_name(secure: bool) -> str:
    return "__Host-userhub_signed_in" if secure else "userhub_signed_in"


def set_signed_in_hint(request: web.Request, response: web.StreamResponse, on: bool) -> None:
    """A secret-free marker that this browser had a session, so "expired" can be told apart.

    The session cookie's Max-Age is the absolute expiry, so at that moment the browser
    drops it by itself; this browser-session cookie outlives it and lets the log-in
    page say "your session has expired" instead of a bare "please log in".
    """
    secure = _secure(request)
    name = hint_cookie_name(secure)
    if on:
        response.set_cookie(name, "1", path="/", httponly=True, secure=secure, samesite="Lax")
    elif name in request.cookies:
        response.del_cookie(name, path="/", secure=secure, httponly=True, samesite="Lax")


def to_login(request: web.Request, reason: str) -> web.Response:
    """Back to the log-in page with a notice, dropping session cookies that no longer work."""
    response = redirect(f"/login?m={reason}")
    secure = _secure(request)
    if session_cookie_name(secure) in request.cookies:
        clear_session_cookie(response, secure)
    set_signed_in_hint(request, response, on=False)
    return response


def no_session(request: web.Request) -> web.Response:
    """No usable session: "expired" if the browser had one, else "please log in"."""
    secure = _secure(request)
    had_one = any(
        name in request.cookies for name in (session_cookie_name(secure), hint_cookie_name(secure))
    )
    return to_login(request, "expired" if had_one else "login_required")


def field_errors(exc: UserhubError, default_field: str = "form") -> dict[str, str]:
    """The error as a sentence, keyed by the field it belongs next to."""
    message = public_message(exc)
    text = message[:1].upper() + message[1:]
    if not text.endswith((".", "!", "?")):
        text += "."
    return {exc.field or default_field: text}


def rotate_browser_id(request: web.Request, response: web.StreamResponse) -> None:
    """A new CSRF browser id whenever the session changes hands (log in, log out)."""
    forms = request.app[RENDERER].csrf
    forms.set_cookie(response, forms.new_browser_id())


# -- log in and sign up -------------------------------------------------------------------


@page
async def login_page(request: web.Request) -> web.StreamResponse:
    username = request.query.get("username", "")[: validation.USERNAME_MAX]
    return request.app[RENDERER].render(request, "login.html", values={"username": username})


@page
async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    username, password = form.get("username", ""), form.get("password", "")
    errors: dict[str, str] = {}
    if not username.strip():
        errors["username"] = "Enter your username."
    if not password:
        errors["password"] = "Enter your password."
    headers: dict[str, str] = {}
    status = 422
    if not errors:
        try:
            result = await flows.log_in(request, username, password)
        except (InvalidCredentials, InvalidInput):
            # One answer for an unknown user and a wrong password, whatever the cause.
            errors["form"] = "Wrong username or password."
            status = 401
        except Throttled as exc:
            errors["form"] = f"Too many failed attempts. Try again in {exc.retry_after_s} seconds."
            status, headers = 429, {"Retry-After": str(exc.retry_after_s)}
        else:
            old = session_hash(request)
            if old is not None:  # the browser's previous session ends here
                try:
                    await flows.log_out(request, old)
                except UserhubError as exc:
                    # The new session stands: the user asked to log in, not out, and
                    # was told nothing about the old one. Its row is gone already
                    # unless MySQL failed too; a cached copy lives until its idle
                    # timeout, with only this browser (which drops it now) holding it.
                    log.warning("previous_session_not_ended", error=exc.code)
            response = redirect("/profile")
            set_session_cookie(response, result, _secure(request))
            flows.remember_device(request, response, result)
            set_signed_in_hint(request, response, on=True)
            rotate_browser_id(request, response)
            return response
    return request.app[RENDERER].render(
        request,
        "login.html",
        status=status,
        errors=errors,
        headers=headers,
        values={"username": username},
    )


@page
async def signup_page(request: web.Request) -> web.StreamResponse:
    return request.app[RENDERER].render(request, "signup.html", values={})


@page
async def signup_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    values = {"username": form.get("username", ""), "nickname": form.get("nickname", "")}
    try:
        user = await flows.sign_up(
            request, values["username"], form.get("password", ""), values["nickname"]
        )
    except CallerError as exc:
        return request.app[RENDERER].render(
            request,
            "signup.html",
            status=exc.http_status,
            errors=field_errors(exc),
            headers=retry_after(exc),
            values=values,
        )
    return redirect(f"/login?m=signed_up&username={user.username}")


# -- the profile and its changes -----------------------------------------------------------


def profile_response(
    request: web.Request,
    user: messages.User,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    nickname_value: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return request.app[RENDERER].render(
        request,
        "profile.html",
        status=status,
        errors=errors,
        headers=headers,
        user=user,
        avatar_url=avatar_url(user),
        nickname_value=user.nickname if nickname_value is None else nickname_value,
    )


@page
async def profile_page(request: web.Request) -> web.StreamResponse:
    token_hash = session_hash(request)
    if token_hash is None:
        return no_session(request)
    try:
        user = await flows.profile(request, token_hash)
    except Unauthenticated:
        return to_login(request, "expired")
    return profile_response(request, user)


@page
async def nickname_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    token_hash = session_hash(request)
    if token_hash is None:
        return no_session(request)
    raw = form.get("nickname", "")
    try:
        nickname = validation.normalize_nickname(raw)
        await flows.change(request, token_hash, nickname=nickname)
    except Unauthenticated:
        return to_login(request, "expired")
    except CallerError as exc:
        try:
            user = await flows.profile(request, token_hash)
        except Unauthenticated:
            return to_login(request, "expired")
        return profile_response(
            request,
            user,
            status=exc.http_status,
            errors=field_errors(exc, "nickname"),
            nickname_value=raw,
        )
    return redirect("/profile?m=nickname_saved")


async def read_avatar_form(request: web.Request) -> bytes:
    """The picture of the upload form, read only after its CSRF token (sent first) checks
    out, all within the upload time limit."""
    timeout_s = request.app[SERVICES].config.uploads.timeout_s
    async with bodies.upload_time_limit(request, timeout_s):
        return await _read_avatar_form(request)
    raise AssertionError("unreachable: the block returns or raises")  # for mypy


async def _read_avatar_form(request: web.Request) -> bytes:
    forms = request.app[RENDERER].csrf
    reader = await request.multipart()
    token: str | None = None
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == csrf.FIELD:
            raw = bytearray()  # a token is 43 characters; anything much longer is not one
            while len(raw) <= 256 and (chunk := await part.read_chunk(256)):
                raw += chunk
            token = raw.decode("ascii", "replace")
        elif part.name == "avatar":
            forms.verify(request, token)  # the browser sends fields in page order
            data = await read_avatar_part(part)
            if not data:
                raise InvalidInput("Choose a picture to upload.", field="avatar")
            return data
    forms.verify(request, token)
    raise InvalidInput("Choose a picture to upload.", field="avatar")


@page
async def avatar_submit(request: web.Request) -> web.StreamResponse:
    if not request.content_type.startswith("multipart/"):
        raise UnsupportedMediaType("send the picture with the upload form")
    if csrf.cross_site(request):  # the headers' part of the CSRF check, before the body
        raise CsrfFailed("this form was sent from another site")
    token_hash = session_hash(request)
    if token_hash is None:
        return no_session(request)
    try:
        # The session is resolved, the upload counted and a slot taken before a byte
        # of the body is read: a dead session or a busy gateway costs no upload.
        async with flows.upload_slot(request, token_hash):
            data = await read_avatar_form(request)
            key = await flows.store_avatar(request, data)
        await flows.change(request, token_hash, avatar_key=key)
    except Unauthenticated:
        return to_login(request, "expired")
    except CsrfFailed:
        raise
    except CallerError as exc:
        try:
            user = await flows.profile(request, token_hash)
        except Unauthenticated:
            return to_login(request, "expired")
        return profile_response(
            request,
            user,
            status=exc.http_status,
            errors=field_errors(exc, "avatar"),
            headers=retry_after(exc),
        )
    return redirect("/profile?m=avatar_saved")


@page
async def logout_submit(request: web.Request) -> web.StreamResponse:
    await read_form(request)
    token_hash = session_hash(request)
    if token_hash is not None:
        try:
            await flows.log_out(request, token_hash)
        except Unauthenticated:
            pass  # already over; the cookie goes all the same
        except DependencyError as exc:
            # Not final yet (flows.log_out): say so, keep the cookie, offer the retry.
            return request.app[RENDERER].render(
                request,
                "error.html",
                status=exc.http_status,
                headers=retry_after(exc),
                code=exc.code,
                message="the service could not finish logging you out. Try again in a moment",
                retry_logout=True,
            )
    response = redirect("/login?m=logged_out")
    clear_session_cookie(response, _secure(request))
    set_signed_in_hint(request, response, on=False)
    rotate_browser_id(request, response)
    return response


def setup(app: web.Application, config: GatewayConfig) -> None:
    """Register the pages and static files; the CSRF secret is loaded (or made) here."""
    secret = csrf.load_secret(config.common.var_dir, config.csrf_secret)
    renderer = Renderer(csrf.Csrf(secret, secure=config.secure_cookies))
    app[RENDERER] = renderer
    app.router.add_get("/", login_page)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_submit)
    app.router.add_get("/signup", signup_page)
    app.router.add_post("/signup", signup_submit)
    app.router.add_get("/profile", profile_page)
    app.router.add_post("/profile/nickname", nickname_submit)
    app.router.add_post("/profile/avatar", avatar_submit)
    app.router.add_post("/logout", logout_submit)
    app.router.add_get("/static/{name}", renderer.serve_static)
