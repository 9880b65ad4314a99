"""The JSON API of DESIGN.md, on top of the leased worker pools.

Sign up and log in go to a db_worker; profile reads and every change go to a
cache_worker, which commits through a db_worker before it answers. Picture bytes
never cross the actor protocol: the gateway validates and stores them, and only the
content-addressed key travels.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from actors.rules import validation
from actors.runtime.config import GatewayConfig
from actors.runtime.leasing import WorkerPool
from actors.web import images
from actors.web.common import (
    REQUEST_ID,
    idempotency_key,
    json_response,
    profile_json,
    read_json,
    session_cookie_name,
    token_hash_of,
)
from actors.web.throttle import SharedLoginThrottle
from actors.wire import messages
from actors.wire.errors import (
    CallerError,
    InvalidCredentials,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
)

#: A picture upload must arrive whole within this many seconds.
UPLOAD_TIMEOUT_S = 60.0
#: Room for the multipart framing around the largest picture accepted.
_MULTIPART_SLACK = 64 * 1024


@dataclass
class Services:
    """Everything a route needs, built once per gateway process."""

    config: GatewayConfig
    db: WorkerPool
    cache: WorkerPool
    images: images.LocalImageStore
    throttle: SharedLoginThrottle

    def deadline(self) -> float:
        return time.time() + self.config.common.request_timeout_s

    async def call_db(self, request: web.Request, message: messages.Message) -> messages.Message:
        return await self.db.call(message, deadline=self.deadline(), trace_id=request[REQUEST_ID])

    async def call_cache(self, request: web.Request, message: messages.Message) -> messages.Message:
        return await self.cache.call(
            message, deadline=self.deadline(), trace_id=request[REQUEST_ID]
        )

    # -- flows shared by the API and the pages ---------------------------------------

    async def sign_up(
        self, request: web.Request, username: object, password: object, nickname: object
    ) -> messages.User:
        for name, value in (("username", username), ("password", password), ("nickname", nickname)):
            if not isinstance(value, str):
                raise InvalidInput(f"{name} must be a string", field=name)
        assert isinstance(username, str) and isinstance(password, str)
        assert isinstance(nickname, str)
        # Validate here too, so bad input never costs a worker a password hash.
        reply = await self.call_db(
            request,
            messages.CreateUser(
                username=validation.normalize_username(username),
                password=validation.check_password(password),
                nickname=validation.normalize_nickname(nickname),
                idempotency_key=idempotency_key(request),
            ),
        )
        assert isinstance(reply, messages.User)
        return reply

    async def log_in(
        self, request: web.Request, username: object, password: object
    ) -> messages.LoginResult:
        if not isinstance(username, str) or not isinstance(password, str):
            raise InvalidInput("username and password must be strings")
        if len(username) > 256 or len(password) > 1024:
            raise InvalidCredentials("wrong username or password")
        address = request.remote or "?"
        account = username.strip().lower()
        trace_id = request[REQUEST_ID]
        counted = await self.throttle.check(account, address, trace_id)
        try:
            reply = await self.call_db(
                request, messages.Login(username=username, password=password)
            )
        except InvalidCredentials:
            await self.throttle.failed(account, address, trace_id)
            raise
        assert isinstance(reply, messages.LoginResult)
        await self.throttle.succeeded(account, address, trace_id, counted)
        return reply

    async def profile(self, request: web.Request, token_hash: str) -> messages.User:
        reply = await self.call_cache(request, messages.GetProfile(token_hash))
        assert isinstance(reply, messages.Profile)
        return reply.user

    async def change(
        self,
        request: web.Request,
        token_hash: str,
        *,
        nickname: str | None = None,
        avatar_key: str | None = None,
    ) -> messages.User:
        reply = await self.call_cache(
            request,
            messages.UpdateProfile(
                token_hash=token_hash,
                idempotency_key=idempotency_key(request),
                nickname=nickname,
                avatar_key=avatar_key,
            ),
        )
        assert isinstance(reply, messages.Profile)
        return reply.user

    async def store_avatar(self, data: bytes) -> str:
        image = await asyncio.to_thread(images.validate_avatar, data)
        await self.images.put(image)
        key: str = image.key
        return key

    async def log_out(self, request: web.Request, token_hash: str) -> None:
        await self.call_cache(request, messages.Logout(token_hash))

    def set_session_cookie(
        self, response: web.StreamResponse, result: messages.LoginResult
    ) -> None:
        secure = self.config.secure_cookies
        response.set_cookie(
            session_cookie_name(secure),
            result.token,
            max_age=max(0, int(result.expires_at - time.time())),
            path="/",
            httponly=True,
            secure=secure,
            samesite="Lax",
        )

    def clear_session_cookie(self, response: web.StreamResponse) -> None:
        secure = self.config.secure_cookies
        response.del_cookie(
            session_cookie_name(secure), path="/", secure=secure, httponly=True, samesite="Lax"
        )


SERVICES = web.AppKey("services", Services)


async def read_avatar_field(request: web.Request) -> bytes:
    """The bytes of the multipart field ``avatar``, refused past the upload limit (or if it
    does not arrive within UPLOAD_TIMEOUT_S)."""
    if not request.content_type.startswith("multipart/"):
        raise InvalidInput("send the picture as multipart/form-data field 'avatar'")
    length = request.content_length
    if length is not None and length > images.MAX_UPLOAD_BYTES + _MULTIPART_SLACK:
        raise PayloadTooLarge(
            f"pictures are limited to {images.MAX_UPLOAD_BYTES} bytes", field="avatar"
        )
    try:
        async with asyncio.timeout(UPLOAD_TIMEOUT_S):
            return await _read_avatar_field(request)
    except TimeoutError:
        raise RequestTimeout(f"the upload did not arrive within {UPLOAD_TIMEOUT_S:g} s") from None
    except (ValueError, HttpProcessingError):
        # aiohttp's multipart parser refuses a bad boundary, part header or length so.
        raise CallerError("the multipart body is malformed") from None


async def _read_avatar_field(request: web.Request) -> bytes:
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            raise InvalidInput("the multipart field 'avatar' is missing", field="avatar")
        if isinstance(part, BodyPartReader) and part.name == "avatar":
            return await read_avatar_part(part)


async def read_avatar_part(part: BodyPartReader) -> bytes:
    """The bytes of one multipart part, refused as soon as they pass the upload limit."""
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > images.MAX_UPLOAD_BYTES:
            raise PayloadTooLarge(
                f"pictures are limited to {images.MAX_UPLOAD_BYTES} bytes", field="avatar"
            )
    return bytes(data)


# -- routes -------------------------------------------------------------------------------


async def sign_up(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await read_json(request)
    user = await services.sign_up(
        request, body.get("username"), body.get("password"), body.get("nickname")
    )
    return json_response(profile_json(user), status=201)


async def log_in(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await read_json(request)
    result = await services.log_in(request, body.get("username"), body.get("password"))
    response = json_response(
        {
            "token": result.token,
            "user": profile_json(result.user),
            "expires_at": result.expires_at,
            "idle_timeout_s": result.idle_timeout_s,
        }
    )
    services.set_session_cookie(response, result)
    return response


async def get_profile(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    token_hash = token_hash_of(request, services.config.secure_cookies)
    return json_response(profile_json(await services.profile(request, token_hash)))


async def put_nickname(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    token_hash = token_hash_of(request, services.config.secure_cookies)
    body = await read_json(request)
    nickname = validation.normalize_nickname(body.get("nickname"))
    user = await services.change(request, token_hash, nickname=nickname)
    return json_response(profile_json(user))


async def put_avatar(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    token_hash = token_hash_of(request, services.config.secure_cookies)
    key = await services.store_avatar(await read_avatar_field(request))
    user = await services.change(request, token_hash, avatar_key=key)
    return json_response(profile_json(user))


async def log_out(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    token_hash = token_hash_of(request, services.config.secure_cookies)
    await services.log_out(request, token_hash)
    response = web.Response(status=204)
    services.clear_session_cookie(response)
    return response


async def get_avatar(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    key = request.match_info["key"]
    data = await services.images.get(key)
    if data is None:
        raise NotFound("no such picture")
    return web.Response(
        body=data,
        content_type=images.content_type_for_key(key),
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
