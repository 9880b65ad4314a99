"""Reading what a client sends: JSON, forms and picture uploads, bounded in size and time.

Every read has a byte limit, checked against Content-Length before anything is
read and again as bytes arrive, and a time limit: a client that trickles its body
holds a gateway connection for at most that long (408), and one that sends too
much is cut off at the limit (413). JSON, page forms and uploads alike: no body
is read any other way.

The JSON API reads only bodies that say they are JSON (``Content-Type:
application/json``, with at most a UTF-8 charset): anything else is 415. A page on
another site can make a browser send a ``text/plain`` body without asking first
(a "simple" request), but not an ``application/json`` one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiohttp import BodyPartReader, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError

from actors.web import images
from actors.wire.errors import (
    CallerError,
    InvalidInput,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)

MAX_JSON_BYTES = 16 * 1024
#: A JSON body or a page form must arrive whole within this many seconds of the handler
#: asking for it. (Picture uploads have their own, longer limit: UploadPolicy.timeout_s.)
BODY_TIMEOUT_S = 10.0
_JSON_CHARSETS = frozenset({"utf-8", "utf8"})
#: A connection that has not sent a whole request head this long after it opened, or
#: after its last answer, is closed: a client trickling its headers (slowloris) or
#: idling on a kept-alive connection holds nothing for longer.
HTTP_IDLE_TIMEOUT_S = 20.0
#: Room for the multipart framing around the largest picture accepted.
_MULTIPART_SLACK = 64 * 1024


def require_json(request: web.Request) -> None:
    """415 unless the body is declared ``application/json`` (charset UTF-8 at most)."""
    declared = parse_mimetype(request.headers.get("Content-Type", ""))
    params = {name.lower(): value.lower() for name, value in declared.parameters.items()}
    if (
        (declared.type, declared.subtype, declared.suffix) != ("application", "json", "")
        or set(params) - {"charset"}
        or params.get("charset", "utf-8") not in _JSON_CHARSETS
    ):
        raise UnsupportedMediaType("send the body as Content-Type: application/json")


async def read_json(request: web.Request) -> dict[str, Any]:
    """A JSON object body, bounded in size and time; anything else is the caller's error."""
    require_json(request)
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


async def read_form(request: web.Request, limit: int) -> dict[str, str]:
    """The text fields of a url-encoded or multipart form of at most ``limit`` bytes,
    arrived within BODY_TIMEOUT_S; file fields are dropped."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"forms are limited to {limit} bytes")
    # aiohttp's parser, on a view of the request that may hold no more than ``limit``.
    bounded = request.clone(client_max_size=limit)
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            data = await bounded.post()
    except TimeoutError:
        raise RequestTimeout(f"the form did not arrive within {BODY_TIMEOUT_S:g} s") from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"forms are limited to {limit} bytes") from None
    except (ValueError, UnicodeDecodeError):
        raise CallerError("the form is malformed") from None
    return {key: value for key, value in data.items() if isinstance(value, str)}


@contextlib.asynccontextmanager
async def upload_time_limit(request: web.Request, timeout_s: float) -> AsyncIterator[None]:
    """Bound the reading of a multipart upload: 413 if announced too large, 408 if it
    has not arrived within ``timeout_s``, 400 if aiohttp's parser refuses it."""
    length = request.content_length
    if length is not None and length > images.MAX_UPLOAD_BYTES + _MULTIPART_SLACK:
        raise PayloadTooLarge(
            f"pictures are limited to {images.MAX_UPLOAD_BYTES} bytes", field="avatar"
        )
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError:
        raise RequestTimeout(f"the upload did not arrive within {timeout_s:g} s") from None
    except (ValueError, HttpProcessingError):
        # aiohttp's multipart parser refuses a bad boundary, part header or length so.
        raise CallerError("the multipart body is malformed") from None


async def read_avatar_field(request: web.Request, timeout_s: float) -> bytes:
    """The bytes of the multipart field ``avatar``, refused past the upload limit (or if it
    does not arrive within ``timeout_s``)."""
    if not request.content_type.startswith("multipart/"):
        raise InvalidInput("send the picture as multipart/form-data field 'avatar'")
    async with upload_time_limit(request, timeout_s):
        return await _read_avatar_field(request)
    raise AssertionError("unreachable: the block returns or raises")  # for mypy


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
