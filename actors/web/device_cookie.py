"""The "known device" cookie: why an attacker cannot lock the real user out.

A login throttle that counts failures per account lets anyone who knows a name
keep that account locked. Following OWASP's device-cookie pattern, a client that
logged in successfully gets a cookie naming the account and a random nonce,
signed with HMAC (``userhub_device``, ``__Host-userhub_device`` with TLS). An
attempt on that account that presents a valid cookie is not judged by the
account-wide key; it is judged by its pair and address keys as every attempt is,
and by a key of its own nonce with the pair's limit (actors/web/throttle.py). So
an attacker spraying guesses from many addresses locks out only clients the
account has never logged in from, while the owner's browser or API client keeps
logging in; a stolen cookie buys no more guesses than one more address would.

The cookie is stateless: ``base64url(payload) "." base64url(HMAC-SHA256(key,
payload))`` with the payload ``v1 / account / nonce / expiry``, so any gateway
checks a cookie any other one issued. The key is derived from the CSRF secret
(actors/web/csrf.py), so it is shared exactly as that secret is, and is never
the same key: a CSRF token can never pass as a device cookie or the reverse.
Each successful log-in issues a fresh cookie; one browser remembers the last
account it logged in to. HttpOnly, SameSite=Strict (it is only ever needed on the
site's own log-in form and the API), and it expires after
``USERHUB_DEVICE_COOKIE_MAX_AGE_S``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from typing import Final

from aiohttp import web

COOKIE: Final = "userhub_device"
SECURE_COOKIE: Final = "__Host-userhub_device"
_VERSION: Final = "v1"
_KEY_CONTEXT: Final = b"userhub-device-cookie-key-v1"
_MAX_VALUE_CHARS: Final = 512  # far above any cookie this module issues


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


class DeviceCookies:
    """Issues and checks known-device cookies for one gateway process."""

    def __init__(self, csrf_secret: bytes, *, secure: bool, max_age_s: float) -> None:
        if len(csrf_secret) < 16:
            raise ValueError("the secret is too short")
        self._key = hmac.new(csrf_secret, _KEY_CONTEXT, hashlib.sha256).digest()
        self.secure = secure
        self.max_age_s = max_age_s
        self.cookie_name = SECURE_COOKIE if secure else COOKIE

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, account: str, now: float | None = None) -> str:
        """A new cookie value for ``account`` (its canonical name)."""
        expires = int((time.time() if now is None else now) + self.max_age_s)
        nonce = secrets.token_hex(16)
        payload = f"{_VERSION}\n{account}\n{nonce}\n{expires}".encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def nonce_for(self, value: str, account: str, now: float | None = None) -> str | None:
        """The cookie's nonce if it is genuine, unexpired and for ``account``; else None."""
        if not value or len(value) > _MAX_VALUE_CHARS or not value.isascii():
            return None
        encoded_payload, _, encoded_mac = value.partition(".")
        payload, mac = _unb64(encoded_payload), _unb64(encoded_mac)
        if payload is None or mac is None or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            version, named, nonce, expires = payload.decode("utf-8").split("\n")
            expiry = int(expires)
        except ValueError:
            return None
        if version != _VERSION or named != account:
            return None
        if expiry <= (time.time() if now is None else now):
            return None
        return nonce

    def read(self, request: web.BaseRequest, account: str) -> str | None:
        """The nonce of the request's device cookie, if it is a valid one for ``account``."""
        return self.nonce_for(request.cookies.get(self.cookie_name, ""), account)

    def set_cookie(self, response: web.StreamResponse, account: str) -> None:
        response.set_cookie(
            self.cookie_name,
            self.issue(account),
            max_age=int(self.max_age_s),
            path="/",
            httponly=True,
            secure=self.secure,
            samesite="Strict",
        )
