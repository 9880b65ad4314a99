"""actors.web.device_cookie: signed, bound to one account, expiring, flags."""

from __future__ import annotations

import base64
from http.cookies import SimpleCookie

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from actors.web import csrf
from actors.web.device_cookie import DeviceCookies

SECRET = b"s" * 32
DAY = 86400.0


def cookies(secret: bytes = SECRET, secure: bool = False) -> DeviceCookies:
    return DeviceCookies(secret, secure=secure, max_age_s=30 * DAY)


def test_a_cookie_names_its_account_and_a_fresh_nonce() -> None:
    d = cookies()
    first, second = d.issue("alice"), d.issue("alice")
    nonce = d.nonce_for(first, "alice")
    assert nonce is not None and len(nonce) == 32
    assert d.nonce_for(second, "alice") not in (None, nonce)


def test_it_is_good_only_for_its_own_account() -> None:
    d = cookies()
    assert d.nonce_for(d.issue("alice"), "bob") is None


def test_it_expires() -> None:
    d = cookies()
    value = d.issue("alice", now=1000.0)
    assert d.nonce_for(value, "alice", now=1000.0 + 30 * DAY - 1) is not None
    assert d.nonce_for(value, "alice", now=1000.0 + 30 * DAY) is None


def test_tampering_or_another_key_is_refused() -> None:
    d = cookies()
    value = d.issue("alice")
    payload, mac = value.split(".")
    forged_payload = base64.urlsafe_b64decode(payload + "==").replace(b"alice", b"admin")
    forged = base64.urlsafe_b64encode(forged_payload).rstrip(b"=").decode() + "." + mac
    assert d.nonce_for(forged, "admin") is None
    assert cookies(b"t" * 32).nonce_for(value, "alice") is None
    for junk in ("", ".", "a.b", "x" * 600, "é.é", value + "x", value.replace(".", "")):
        assert d.nonce_for(junk, "alice") is None, junk


def test_a_csrf_token_is_never_a_device_cookie() -> None:
    """Both derive from one secret, under different contexts."""
    forms = csrf.Csrf(SECRET, secure=False)
    browser_id = forms.new_browser_id()
    assert cookies().nonce_for(f"{browser_id}.{forms.token_for(browser_id)}", "alice") is None


@pytest.mark.parametrize("secure", [False, True])
def test_the_cookie_flags(secure: bool) -> None:
    d = cookies(secure=secure)
    response = web.Response()
    d.set_cookie(response, "alice")
    jar: SimpleCookie = SimpleCookie()
    for sent in response.cookies.values():
        jar.load(sent.OutputString())
    name = "__Host-userhub_device" if secure else "userhub_device"
    morsel = jar[name]
    assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
    assert bool(morsel["secure"]) is secure
    assert int(morsel["max-age"]) == 30 * 86400
    assert d.nonce_for(morsel.value, "alice") is not None
    # ... and comes back from the browser unchanged (no quoting needed).
    back = make_mocked_request("POST", "/login", headers={"Cookie": f"{name}={morsel.value}"})
    assert d.read(back, "alice") == d.nonce_for(morsel.value, "alice")
    assert d.read(back, "bob") is None
    assert cookies(secure=not secure).read(back, "alice") is None, "the other cookie name"


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        DeviceCookies(b"short", secure=False, max_age_s=DAY)
