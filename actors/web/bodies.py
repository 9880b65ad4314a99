"""Reading what a client sends: JSON bodies and picture uploads, bounded in size and time.

Every read has a byte limit, checked against Content-Length before anything is
read and again as bytes arrive, and a time limit: a client that trickles its body
holds a gateway connection for at most that long (408), and one that sends too
much is cut off at the limit (413).
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from actors.web import images
from actors.wire.errors import CallerError, InvalidInput, PayloadTooLarge, RequestTimeout

MAX_JSON_BYTES = 16 * 1024
#: A JSON body must arrive whole within this many seconds of the handler asking for it.
BODY_TIMEOUT_S = 10.0
#: A picture upload must arrive whole within this many seconds.
UPLOAD_TIMEOUT_S = 60.0
#: A connection that has not sent a whole request head this long after it opened, or
#: after its last answer, is closed: a client trickling its headers (slowloris) or
#: idling on a kept-alive connection holds nothing for longer.
HTTP_IDLE_TIMEOUT_S = 20.0
#: Room for the multipart framing around the largest picture accepted.
_MULTIPART_SLACK = 64 * 1024


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
