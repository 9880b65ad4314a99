"""CSRF protection for the HTML forms: an HMAC-signed, per-browser double submit.

Every browser that sees a page gets a random *browser id* in an HttpOnly cookie
(``userhub_csrf``, or ``__Host-userhub_csrf`` when ``USERHUB_TLS=1``). Each form
carries ``csrf_token = HMAC-SHA256(secret, browser id)``. A POST is accepted only
when the token in its body matches the HMAC of the cookie the same request carries.

Why this shape:

* A page on another site can make the browser send the cookie, but it can neither
  read the cookie nor compute the HMAC without the server's secret, so it cannot
  put a valid token in the body.
* It is stateless: nothing is stored per form, so any of the K gateway processes can
  check a token another one issued, as long as they share the secret (below).
* It covers the login and sign-up forms too (login CSRF), which have no session to
  bind a token to; the browser id is rotated on every log in and log out, so a token
  never outlives the session it was shown with.
* With TLS the ``__Host-`` prefix stops a sibling sub-domain from planting a
  browser id of its own choosing (cookie tossing).

As a second, independent layer a POST is refused when the browser says it is
cross-site (``Sec-Fetch-Site: cross-site``) or its ``Origin`` names another host
(:func:`cross_site`). The JSON API applies the same rule to every write a browser
could send on its own: log in, sign up, and writes authenticated by the cookie.

The secret comes from ``USERHUB_CSRF_SECRET`` (at least 32 characters) when set;
otherwise from ``<USERHUB_VAR>/csrf.key``, 32 random bytes created on first use by
whichever gateway gets there first. The file is written under a temporary name and
hard-linked into place, so a racing gateway either wins or reads the winner's
complete key; every gateway on the host then signs with the same secret.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web

from actors.wire.errors import CsrfFailed

FIELD: Final = "csrf_token"
COOKIE: Final = "userhub_csrf"
SECURE_COOKIE: Final = "__Host-userhub_csrf"
KEY_FILE: Final = "csrf.key"
SECRET_BYTES: Final = 32
MIN_ENV_SECRET_CHARS: Final = 32
_BROWSER_ID_CHARS: Final = 43  # base64url of 32 bytes, unpadded
_CONTEXT: Final = b"userhub-csrf-v1\0"


def cross_site(request: web.Request, *, null_origin: bool = False) -> bool:
    """Whether the browser says this request comes from a page of another site.

    ``Sec-Fetch-Site: cross-site``, or an ``Origin`` naming another host than the one
    the request was sent to. A request without either header is not a cross-site one
    from any current browser (browsers send ``Origin`` on every cross-origin POST and
    PUT); programs usually send neither. ``Origin: null`` (a sandboxed frame, a file,
    some privacy settings) counts as cross-site only when ``null_origin`` says so: the
    pages leave it to their token, the JSON API, which has none, refuses it.
    """
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return True
    origin = request.headers.get("Origin", "")
    if origin == "null":
        return null_origin
    return bool(origin) and urlsplit(origin).netloc.lower() != request.host.lower()


def load_secret(var_dir: Path, env_secret: str = "") -> bytes:
    """The HMAC key every gateway shares: from the environment, else from ``var_dir``."""
    if env_secret:
        if len(env_secret) < MIN_ENV_SECRET_CHARS:
            raise ValueError(
                f"USERHUB_CSRF_SECRET must be at least {MIN_ENV_SECRET_CHARS} characters"
            )
        return hashlib.sha256(_CONTEXT + env_secret.encode("utf-8")).digest()
    path = var_dir / KEY_FILE
    existing = _read_key(path)
    if existing is not None:
        return existing
    var_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".csrf-", dir=var_dir)  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(SECRET_BYTES) + "\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another gateway won the race
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
    key = _read_key(path)
    if key is None:
        raise RuntimeError(f"{path} does not hold a {SECRET_BYTES}-byte hex key")
    return key


def _read_key(path: Path) -> bytes | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        return None
    return key if len(key) == SECRET_BYTES else None


class Csrf:
    """Issues and checks form tokens for one gateway process."""

    def __init__(self, secret: bytes, *, secure: bool) -> None:
        if len(secret) < 16:
            raise ValueError("the CSRF secret is too short")
        self._secret = secret
        self.secure = secure
        self.cookie_name = SECURE_COOKIE if secure else COOKIE

    # -- issuing ------------------------------------------------------------------

    @staticmethod
    def new_browser_id() -> str:
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")

    def browser_id(self, request: web.Request) -> str | None:
        """The browser id the request's cookie carries, if it has a well-formed one."""
        value = request.cookies.get(self.cookie_name, "")
        if len(value) != _BROWSER_ID_CHARS or not value.isascii():
            return None
        if not all(c.isalnum() or c in "-_" for c in value):
            return None
        return value

    def token_for(self, browser_id: str) -> str:
        mac = hmac.new(self._secret, _CONTEXT + browser_id.encode("ascii"), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")

    def set_cookie(self, response: web.StreamResponse, browser_id: str) -> None:
        """A browser-session cookie: scripts cannot read it, other sites do not get it on POST."""
        response.set_cookie(
            self.cookie_name,
            browser_id,
            path="/",
            httponly=True,
            secure=self.secure,
            samesite="Lax",
        )

    # -- checking -----------------------------------------------------------------

    def verify(self, request: web.Request, token: object) -> None:
        """Raise :class:`CsrfFailed` unless ``token`` is right for this request's browser."""
        if cross_site(request):
            raise CsrfFailed("this form was sent from another site")
        browser_id = self.browser_id(request)
        if browser_id is None or not isinstance(token, str) or not token.isascii():
            raise CsrfFailed("this form has expired; reload the page and try again")
        if not hmac.compare_digest(token.encode("ascii"), self.token_for(browser_id).encode()):
            raise CsrfFailed("this form has expired; reload the page and try again")
