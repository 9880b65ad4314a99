"""actors.web.cookies: the session cookie's flags, and how a request names its session."""

from __future__ import annotations

import time
from http.cookies import SimpleCookie

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from actors.rules import tokens
from actors.web import cookies
from actors.wire import messages
from actors.wire.errors import Unauthenticated


def set_cookie(response: web.StreamResponse) -> SimpleCookie:
    """The cookies as the Set-Cookie headers will say them, parsed back."""
    cookie: SimpleCookie = SimpleCookie()
    for morsel in response.cookies.values():
        cookie.load(morsel.OutputString())
    return cookie


@pytest.mark.parametrize("secure", [False, True])
def test_the_session_cookie_flags(secure: bool) -> None:
    user = messages.User(1, "ann", "Ann", None, time.time(), 1)
    result = messages.LoginResult("t" * 43, user, time.time() + 3600, 1800.0)
    response = web.Response()
    cookies.set_session_cookie(response, result, secure)
    name = "__Host-userhub_session" if secure else "userhub_session"
    morsel = set_cookie(response)[name]
    assert morsel["httponly"] and morsel["samesite"] == "Lax" and morsel["path"] == "/"
    assert bool(morsel["secure"]) is secure
    assert not morsel["domain"]
    assert 3590 <= int(morsel["max-age"]) <= 3600, "ends with the absolute expiry"


@pytest.mark.parametrize("secure", [False, True])
def test_clearing_the_session_cookie_expires_it(secure: bool) -> None:
    response = web.Response()
    cookies.clear_session_cookie(response, secure)
    morsel = set_cookie(response)[cookies.session_cookie_name(secure)]
    assert morsel.value == ""
    assert int(morsel["max-age"]) == 0


def test_a_bearer_token_or_the_cookie_names_the_session() -> None:
    token, stored = tokens.new_token()
    bearer = make_mocked_request("GET", "/", headers={"Authorization": f"Bearer {token}"})
    assert cookies.token_hash_of(bearer, secure=False) == stored
    cookie = make_mocked_request("GET", "/", headers={"Cookie": f"userhub_session={token}"})
    assert cookies.token_hash_of(cookie, secure=False) == stored
    assert cookies.cookie_token_hash(cookie, secure=False) == stored
    # With TLS only the __Host- cookie counts.
    with pytest.raises(Unauthenticated):
        cookies.token_hash_of(cookie, secure=True)
    assert cookies.cookie_token_hash(cookie, secure=True) is None


@pytest.mark.parametrize(
    "header",
    ["Basic abc", "Bearer", "Bearer    ", "Bearer not-a-token", "Bearer " + "A" * 43 + "x"],
)
def test_anything_but_a_well_formed_bearer_token_is_401(header: str) -> None:
    request = make_mocked_request("GET", "/", headers={"Authorization": header})
    with pytest.raises(Unauthenticated):
        cookies.token_hash_of(request, secure=False)


def test_no_credentials_at_all_is_401() -> None:
    with pytest.raises(Unauthenticated):
        cookies.token_hash_of(make_mocked_request("GET", "/"), secure=False)
