"""The JSON API's routes: HTTP in, a flow of actors.web.flows, JSON out.

The table of routes is the contract of README.md and of the OpenAPI document
(actors.web.openapi, checked against these routes by the integration tests).

Every write that a browser could be made to send by a page of another site is
refused when the browser says it comes from one (403 ``csrf_failed``, the pages'
Origin / Sec-Fetch-Site rule, actors.web.csrf.cross_site): sign up and log in
(login CSRF), and every write authenticated by the session cookie. A request with
an Authorization header is not checked: a page of another site cannot make a
browser attach one without a CORS preflight, which this API never grants. JSON
bodies must say they are JSON (415 otherwise, actors.web.bodies).
"""

from __future__ import annotations

from aiohttp import web

from actors.rules import image_keys, validation
from actors.web import csrf, flows
from actors.web.bodies import read_avatar_field, read_json
from actors.web.cookies import clear_session_cookie, set_session_cookie, token_hash_of
from actors.web.services import SERVICES
from actors.web.views import json_response, profile_json
from actors.wire.errors import CsrfFailed, NotFound


def _secure(request: web.Request) -> bool:
    return request.app[SERVICES].config.secure_cookies


def refuse_cross_site(request: web.Request) -> None:
    """403 for a write a page of another site made the browser send (see the docstring)."""
    if "Authorization" not in request.headers and csrf.cross_site(request, null_origin=True):
        raise CsrfFailed("requests from pages of other sites are refused")


async def sign_up(request: web.Request) -> web.Response:
    refuse_cross_site(request)
    body = await read_json(request)
    user = await flows.sign_up(
        request, body.get("username"), body.get("password"), body.get("nickname")
    )
    return json_response(profile_json(user), status=201)


async def log_in(request: web.Request) -> web.Response:
    refuse_cross_site(request)
    body = await read_json(request)
    result = await flows.log_in(request, body.get("username"), body.get("password"))
    response = json_response(
        {
            "token": result.token,
            "user": profile_json(result.user),
            "expires_at": result.expires_at,
            "idle_timeout_s": result.idle_timeout_s,
        }
    )
    set_session_cookie(response, result, _secure(request))
    flows.remember_device(request, response, result)
    return response


async def get_profile(request: web.Request) -> web.Response:
    token_hash = token_hash_of(request, _secure(request))
    return json_response(profile_json(await flows.profile(request, token_hash)))


async def put_nickname(request: web.Request) -> web.Response:
    refuse_cross_site(request)
    token_hash = token_hash_of(request, _secure(request))
    body = await read_json(request)
    nickname = validation.normalize_nickname(body.get("nickname"))
    user = await flows.change(request, token_hash, nickname=nickname)
    return json_response(profile_json(user))


async def put_avatar(request: web.Request) -> web.Response:
    refuse_cross_site(request)
    token_hash = token_hash_of(request, _secure(request))
    # Session, rate and slot before a byte of the body is read (flows.upload_slot).
    async with flows.upload_slot(request, token_hash):
        data = await read_avatar_field(request, request.app[SERVICES].config.uploads.timeout_s)
        key = await flows.store_avatar(request, data)
    user = await flows.change(request, token_hash, avatar_key=key)
    return json_response(profile_json(user))


async def log_out(request: web.Request) -> web.Response:
    refuse_cross_site(request)
    token_hash = token_hash_of(request, _secure(request))
    await flows.log_out(request, token_hash)
    response = web.Response(status=204)
    clear_session_cookie(response, _secure(request))
    return response


async def get_avatar(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    data = await request.app[SERVICES].images.get(key)
    if data is None:
        raise NotFound("no such picture")
    return web.Response(
        body=data,
        content_type=image_keys.content_type_for_key(key),
        headers={
            "Cache-Control": "public, max-age=31536000, immutable",
            "ETag": f'"{key}"',
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/users", sign_up)
    app.router.add_post("/api/v1/login", log_in)
    app.router.add_get("/api/v1/profile", get_profile)
    app.router.add_put("/api/v1/profile/nickname", put_nickname)
    app.router.add_put("/api/v1/profile/avatar", put_avatar)
    app.router.add_post("/api/v1/logout", log_out)
    app.router.add_get("/avatars/{key}", get_avatar)
