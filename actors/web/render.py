"""How the HTML pages are rendered and served: templates, headers, static files.

Templates are Jinja2 with autoescaping always on (every ``.html`` and strings too),
so a nickname such as ``<script>`` is shown as text, never run. Pages carry their
own strict Content-Security-Policy: scripts, styles and images only from this
origin, no inline script or style, forms only to this origin, no framing. The
observe middleware adds the other default headers with ``setdefault`` and so keeps
this one.

Static files (one stylesheet, one small script for the picture preview) are read
once at start-up and served from memory under ``/static/<name>?v=<hash>``; the hash
changes with the content, so browsers may cache them for a day without ever
showing a stale version.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jinja2
from aiohttp import web

from actors.rules import validation
from actors.web import csrf, images
from actors.web.views import public_message, retry_after
from actors.wire.errors import NotFound, UserhubError

HERE: Final = Path(__file__).resolve().parent
TEMPLATES_DIR: Final = HERE / "templates"
STATIC_DIR: Final = HERE / "static"

PAGE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: the browser then sends a real Origin header on our
    # own form posts, which the CSRF check compares; other sites still get nothing.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cache-Control": "no-store",
}

#: Short notices a redirect may ask a page to show. Only these fixed texts are ever
#: shown, so a crafted link cannot put words of its own on the page.
FLASH: Final = {
    "signed_up": "Your account is ready. Log in to continue.",
    "logged_out": "You have been logged out.",
    "login_required": "Please log in to see your profile.",
    "expired": "Your session has expired, please log in again.",
    "nickname_saved": "Your nickname has been changed.",
    "avatar_saved": "Your new picture has been saved.",
}

_STATIC_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    version: str


def load_static(directory: Path = STATIC_DIR) -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    for path in sorted(directory.iterdir()):
        content_type = _STATIC_TYPES.get(path.suffix)
        if content_type and path.is_file():
            body = path.read_bytes()
            files[path.name] = StaticFile(body, content_type, hashlib.sha256(body).hexdigest()[:12])
    return files


class Renderer:
    """Templates, static files and the CSRF issuer of one gateway process."""

    def __init__(self, forms: csrf.Csrf) -> None:
        self.csrf = forms
        self.static = load_static()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(
            static_url=self.static_url,
            max_upload_mib=images.MAX_UPLOAD_BYTES // (1024 * 1024),
            max_upload_bytes=images.MAX_UPLOAD_BYTES,
            limits={
                "username_min": validation.USERNAME_MIN,
                "username_max": validation.USERNAME_MAX,
                "nickname_max": validation.NICKNAME_MAX,
                "password_min": validation.PASSWORD_MIN,
                "password_max": validation.PASSWORD_MAX,
            },
        )
        self.env.filters["date"] = _format_date
        self.env.filters["isodate"] = lambda ts: time.strftime("%Y-%m-%d", time.gmtime(ts))

    def static_url(self, name: str) -> str:
        return f"/static/{name}?v={self.static[name].version}"

    def render(
        self,
        request: web.Request,
        template: str,
        *,
        status: int = 200,
        errors: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> web.Response:
        """A page with a CSRF token for its forms, setting the browser id cookie if new."""
        browser_id = self.csrf.browser_id(request)
        fresh = browser_id is None
        if browser_id is None:
            browser_id = self.csrf.new_browser_id()
        flash = FLASH.get(request.query.get("m", ""))
        html = self.env.get_template(template).render(
            csrf_field=csrf.FIELD,
            csrf_token=self.csrf.token_for(browser_id),
            errors=errors or {},
            flash=flash,
            **context,
        )
        response = web.Response(
            text=html,
            status=status,
            content_type="text/html",
            charset="utf-8",
            headers={**PAGE_HEADERS, **(headers or {})},
        )
        if fresh:
            self.csrf.set_cookie(response, browser_id)
        return response

    def error_page(self, request: web.Request, exc: UserhubError) -> web.Response:
        """A whole-page error (CSRF refusal, a dependency down) as HTML, not JSON."""
        return self.render(
            request,
            "error.html",
            status=exc.http_status,
            headers=retry_after(exc),
            code=exc.code,
            message=public_message(exc),
        )

    async def serve_static(self, request: web.Request) -> web.Response:
        item = self.static.get(request.match_info["name"])
        if item is None:
            raise NotFound("no such file")
        return web.Response(
            body=item.body,
            headers={
                "Content-Type": item.content_type,
                "Cache-Control": "public, max-age=86400",
                "ETag": f'"{item.version}"',
                "X-Content-Type-Options": "nosniff",
            },
        )


def _format_date(timestamp: float) -> str:
    return time.strftime("%d %B %Y", time.gmtime(timestamp)).lstrip("0")


def redirect(location: str) -> web.Response:
    """303 See Other: after a POST the browser follows it with a GET."""
    return web.Response(status=303, headers={"Location": location, **PAGE_HEADERS})
