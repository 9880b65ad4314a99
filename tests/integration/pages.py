"""Helpers for the HTML page tests: tokens out of pages, forms in, hostile pictures."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import aiohttp
from PIL import Image

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_tokens(html: str) -> list[str]:
    return CSRF_RE.findall(html)


async def page_token(http: aiohttp.ClientSession, path: str = "/login") -> str:
    """Load a page (which sets the CSRF cookie if needed) and return its form token."""
    async with http.get(path) as r:
        assert r.status == 200, (path, r.status)
        tokens = csrf_tokens(await r.text())
    assert tokens, f"no CSRF token on {path}"
    return tokens[0]


async def form_log_in(http: aiohttp.ClientSession, username: str, password: str) -> None:
    token = await page_token(http, "/login")
    async with http.post(
        "/login",
        data={"csrf_token": token, "username": username, "password": password},
        allow_redirects=False,
    ) as r:
        assert r.status == 303, await r.text()
        assert r.headers["Location"] == "/profile"


def avatar_form(data: bytes, token: str | None, filename: str = "me.png") -> aiohttp.FormData:
    form = aiohttp.FormData()
    if token is not None:
        form.add_field("csrf_token", token)
    form.add_field("avatar", data, filename=filename, content_type="image/png")
    return form


def stored_files(var: Path) -> list[Path]:
    return sorted(p for p in (var / "avatars").rglob("*") if p.is_file())


# -- pictures, good and hostile -----------------------------------------------------------


def png_bytes(
    size: tuple[int, int] = (320, 240), color: tuple[int, int, int] = (200, 90, 40)
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def noisy_png(size: tuple[int, int] = (256, 256)) -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buf, "PNG")
    return buf.getvalue()


def pixel_bomb() -> bytes:
    """A few kilobytes of PNG that would decode to 100 million pixels."""
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000), 0).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def polyglot() -> bytes:
    """A GIF header that is also JavaScript: ``GIF89a/*...*/=alert(1)``."""
    return b"GIF89a/*\x0a\x00\x00\x00\x00*/=alert(document.domain);//" + b"\x00" * 32


#: name -> (bytes, HTTP status, words the error message must contain)
BAD_UPLOADS: dict[str, tuple[bytes, int, str]] = {
    "text renamed to .png": (
        b"%PDF-1.7\n this is a document, not a picture\n" * 4,
        415,
        "PNG, JPEG",
    ),
    "truncated png": (noisy_png()[:20_000], 422, "truncated or corrupt"),
    "pixel bomb": (pixel_bomb(), 422, "too large"),
    "over the size limit": (
        b"\x89PNG\r\n\x1a\n" + os.urandom(2 * 1024 * 1024 + 10),
        413,
        "limited",
    ),
    "gif header plus script": (polyglot(), 422, "not a valid GIF"),
}
