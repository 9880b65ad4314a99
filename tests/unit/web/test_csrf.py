"""CSRF tokens, the shared secret, and the cookie flags with and without TLS."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from actors.web import csrf
from actors.wire.errors import CsrfFailed

SECRET = b"k" * 32


def request(
    cookie: str | None = None, secure: bool = False, headers: Mapping[str, str] | None = None
) -> web.Request:
    hdrs = {"Host": "example.test", **(headers or {})}
    if cookie is not None:
        name = csrf.SECURE_COOKIE if secure else csrf.COOKIE
        hdrs["Cookie"] = f"{name}={cookie}"
    return make_mocked_request("POST", "/profile/nickname", headers=hdrs)


def set_cookie(response: web.StreamResponse) -> SimpleCookie:
    """The cookies as the Set-Cookie headers will say them, parsed back."""
    cookie: SimpleCookie = SimpleCookie()
    for morsel in response.cookies.values():
        cookie.load(morsel.OutputString())
    return cookie


def test_a_token_is_accepted_only_with_the_browser_id_it_was_made_for() -> None:
    forms = csrf.Csrf(SECRET, secure=False)
    browser = forms.new_browser_id()
    token = forms.token_for(browser)
    forms.verify(request(browser), token)
    other = forms.new_browser_id()
    for req, tok in [
        (request(other), token),  # another browser's cookie
        (request(None), token),  # no cookie at all
        (request(browser), None),  # no token
        (request(browser), ""),
        (request(browser), token[:-1] + ("A" if token[-1] != "A" else "B")),
        (request(browser), "é" * 43),
        (request("short"), forms.token_for("short")),  # not a browser id we issue
    ]:
        with pytest.raises(CsrfFailed):
            forms.verify(req, tok)


def test_another_secret_makes_other_tokens() -> None:
    browser = csrf.Csrf.new_browser_id()
    one = csrf.Csrf(SECRET, secure=False)
    two = csrf.Csrf(b"z" * 32, secure=False)
    assert one.token_for(browser) != two.token_for(browser)
    with pytest.raises(CsrfFailed):
        one.verify(request(browser), two.token_for(browser))


def test_cross_site_requests_are_refused_even_with_a_token() -> None:
    forms = csrf.Csrf(SECRET, secure=False)
    browser = forms.new_browser_id()
    token = forms.token_for(browser)
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "http://example.test.evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        with pytest.raises(CsrfFailed):
            forms.verify(request(browser, headers=headers), token)
    # Same origin, same site, and browsers that send "null" (the token decides) pass.
    for headers in (
        {"Origin": "http://example.test"},
        {"Origin": "https://EXAMPLE.test"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Origin": "null"},
    ):
        forms.verify(request(browser, headers=headers), token)


@pytest.mark.parametrize(
    ("headers", "pages", "api"),
    [
        ({}, False, False),
        ({"Origin": "http://example.test"}, False, False),
        ({"Origin": "http://EXAMPLE.test"}, False, False),
        ({"Sec-Fetch-Site": "same-origin"}, False, False),
        ({"Origin": "https://evil.example"}, True, True),
        ({"Origin": "http://example.test.evil.example"}, True, True),
        ({"Sec-Fetch-Site": "cross-site"}, True, True),
        ({"Sec-Fetch-Site": "Cross-Site", "Origin": "http://example.test"}, True, True),
        ({"Origin": "null"}, False, True),
    ],
)
def test_cross_site_by_the_browsers_headers(
    headers: dict[str, str], pages: bool, api: bool
) -> None:
    assert csrf.cross_site(request(headers=headers)) is pages
    assert csrf.cross_site(request(headers=headers), null_origin=True) is api


@pytest.mark.parametrize("secure", [False, True])
def test_the_browser_id_cookie_flags(secure: bool) -> None:
    forms = csrf.Csrf(SECRET, secure=secure)
    response = web.Response()
    browser = forms.new_browser_id()
    forms.set_cookie(response, browser)
    name = "__Host-userhub_csrf" if secure else "userhub_csrf"
    morsel = set_cookie(response)[name]
    assert morsel.value == browser
    assert morsel["httponly"] and morsel["samesite"] == "Lax" and morsel["path"] == "/"
    assert bool(morsel["secure"]) is secure
    assert not morsel["domain"], "__Host- cookies may not name a domain"
    forms.verify(request(browser, secure=secure), forms.token_for(browser))


def test_the_secret_file_is_made_once_private_and_reused(tmp_path: Path) -> None:
    first = csrf.load_secret(tmp_path)
    assert len(first) == csrf.SECRET_BYTES
    key_file = tmp_path / csrf.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert csrf.load_secret(tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == [csrf.KEY_FILE], "no temporary files left"


def _load(path: str) -> bytes:
    return csrf.load_secret(Path(path))


def test_gateways_racing_to_make_the_secret_agree(tmp_path: Path) -> None:
    with ProcessPoolExecutor(8) as pool:
        keys = list(pool.map(_load, [str(tmp_path / "var")] * 32))
    assert len(set(keys)) == 1
    assert sorted(os.listdir(tmp_path / "var")) == [csrf.KEY_FILE]


def test_a_secret_from_the_environment(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 32"):
        csrf.load_secret(tmp_path, "too-short")
    one = csrf.load_secret(tmp_path, "s" * 40)
    assert one == csrf.load_secret(tmp_path / "elsewhere", "s" * 40)
    assert not (tmp_path / csrf.KEY_FILE).exists(), "no key file when the environment has one"
