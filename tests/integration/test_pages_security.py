"""The HTML pages over plain HTTP: CSRF, headers, cookies, escaping, throttling, uploads.

Each test names the OWASP ASVS concern it checks; docs/security.md maps them back.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from http.cookies import SimpleCookie

import aiohttp
import pytest

from tests.integration.conftest import Account, sign_up_and_log_in, unique_name
from tests.integration.pages import (
    BAD_UPLOADS,
    avatar_form,
    csrf_tokens,
    form_log_in,
    page_token,
    png_bytes,
    stored_files,
)
from tests.integration.tree import Tree

pytestmark = pytest.mark.integration


def set_cookies(r: aiohttp.ClientResponse) -> dict[str, SimpleCookie]:
    """Every Set-Cookie header of a response, by cookie name, flags included."""
    out: dict[str, SimpleCookie] = {}
    for header in r.headers.getall("Set-Cookie", []):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            out[name] = cookie
    return out


def session_token(http: aiohttp.ClientSession) -> str:
    for cookie in http.cookie_jar:
        if cookie.key == "userhub_session":
            return cookie.value
    return ""


async def api_status(http: aiohttp.ClientSession, token: str) -> int:
    async with http.get("/api/v1/profile", headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status


@pytest.fixture
async def logged_in(http: aiohttp.ClientSession) -> Account:
    """An account whose session lives in the cookie jar, logged in through the page."""
    account = await sign_up_and_log_in(http)
    http.cookie_jar.clear()
    await form_log_in(http, account.username, account.password)
    account.token = session_token(http)
    return account


# -- headers -------------------------------------------------------------------------------


async def test_pages_send_security_headers(http: aiohttp.ClientSession) -> None:
    for path in ("/", "/login", "/signup"):
        async with http.get(path) as r:
            assert r.status == 200
            assert r.content_type == "text/html"
            csp = r.headers["Content-Security-Policy"]
            for directive in (
                "default-src 'none'",
                "script-src 'self'",
                "style-src 'self'",
                "frame-ancestors 'none'",
                "form-action 'self'",
            ):
                assert directive in csp, (path, csp)
            assert "unsafe" not in csp
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["X-Frame-Options"] == "DENY"
            assert r.headers["Referrer-Policy"] == "same-origin"
            assert r.headers["Cache-Control"] == "no-store"
            html = await r.text()
            assert "<script>" not in html and "style=" not in html, "no inline script or style"
            static = re.findall(r'(?:href|src)="(/static/[^"]+)"', html)
            assert static
    for url in static:
        async with http.get(url) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith(("text/css", "text/javascript"))
            assert r.headers["X-Content-Type-Options"] == "nosniff"
    async with http.get("/static/../gateway.py") as r:
        assert r.status == 404


# -- CSRF ----------------------------------------------------------------------------------


async def test_every_form_carries_a_csrf_token(
    http: aiohttp.ClientSession, logged_in: Account
) -> None:
    for path in ("/login", "/signup", "/profile"):
        async with http.get(path) as r:
            html = await r.text()
        forms = re.findall(r"<form\b.*?</form>", html, flags=re.S)
        assert forms, path
        for form in forms:
            assert 'method="post"' in form
            assert len(csrf_tokens(form)) == 1, (path, form)


async def test_posts_without_a_valid_csrf_token_are_refused(
    http: aiohttp.ClientSession, logged_in: Account, tree: Tree
) -> None:
    good = await page_token(http, "/profile")
    other_browser = aiohttp.ClientSession(
        base_url=tree.base_url, cookie_jar=aiohttp.CookieJar(unsafe=True)
    )
    async with other_browser:
        foreign = await page_token(other_browser, "/login")
    cases: list[tuple[str, dict[str, str], dict[str, str]]] = [
        ("missing", {}, {}),
        ("forged", {"csrf_token": "A" * 43}, {}),
        ("another browser's", {"csrf_token": foreign}, {}),
        ("cross-site origin", {"csrf_token": good}, {"Origin": "https://evil.example"}),
        ("cross-site fetch", {"csrf_token": good}, {"Sec-Fetch-Site": "cross-site"}),
    ]
    posts = [
        ("/profile/nickname", {"nickname": "pwned"}),
        ("/logout", {}),
        ("/login", {"username": logged_in.username, "password": logged_in.password}),
        ("/signup", {"username": unique_name(), "password": "long-enough-1", "nickname": "x"}),
    ]
    for label, token, headers in cases:
        for path, fields in posts:
            async with http.post(
                path, data={**fields, **token}, headers=headers, allow_redirects=False
            ) as r:
                assert r.status == 403, (label, path, r.status)
                assert "text/html" in r.headers["Content-Type"]
                assert 'data-code="csrf_failed"' in await r.text()
        form = avatar_form(png_bytes(), token.get("csrf_token"))
        async with http.post("/profile/avatar", data=form, headers=headers) as r:
            assert r.status == 403, (label, "avatar", r.status)
    # Nothing happened: same session, same nickname, no picture.
    async with http.get("/api/v1/profile") as r:
        assert r.status == 200
        profile = await r.json()
    assert profile["nickname"] == "Tester" and profile["avatar_url"] is None
    # And the real token still works.
    async with http.post(
        "/profile/nickname", data={"nickname": "Mine", "csrf_token": good}, allow_redirects=False
    ) as r:
        assert r.status == 303


# -- sessions and cookies ------------------------------------------------------------------


async def test_login_sets_a_fresh_httponly_samesite_session_each_time(
    http: aiohttp.ClientSession, account: Account
) -> None:
    http.cookie_jar.clear()
    token = await page_token(http, "/login")
    async with http.post(
        "/login",
        data={"csrf_token": token, "username": account.username, "password": account.password},
        allow_redirects=False,
    ) as r:
        assert r.status == 303 and r.headers["Location"] == "/profile"
        cookies = set_cookies(r)
    session = cookies["userhub_session"]["userhub_session"]
    assert session["httponly"] and session["samesite"] == "Lax" and session["path"] == "/"
    assert not session["secure"], "USERHUB_TLS is off in this tree"
    assert cookies["userhub_csrf"]["userhub_csrf"]["httponly"], "the browser id rotates too"
    first = session.value
    # Logging in again mints another session and ends the one the browser had.
    await form_log_in(http, account.username, account.password)
    second = session_token(http)
    assert second and second != first
    assert await api_status(http, first) == 401
    assert await api_status(http, second) == 200


async def test_log_out_ends_the_session_on_the_server(
    http: aiohttp.ClientSession, logged_in: Account
) -> None:
    token = await page_token(http, "/profile")
    async with http.post("/logout", data={"csrf_token": token}, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/login?m=logged_out"
        assert set_cookies(r)["userhub_session"]["userhub_session"].value == ""
    # Even a client that kept the old cookie is turned away.
    assert await api_status(http, logged_in.token) == 401
    async with http.get(
        "/profile", cookies={"userhub_session": logged_in.token}, allow_redirects=False
    ) as r:
        assert r.status == 303 and r.headers["Location"] == "/login?m=expired"


async def test_profile_without_a_session_goes_to_log_in(http: aiohttp.ClientSession) -> None:
    http.cookie_jar.clear()
    async with http.get("/profile", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/login?m=login_required"
    async with http.get("/profile", cookies={"userhub_session": "x" * 43}) as r:
        assert r.url.path == "/login"
        assert "Your session has expired, please log in again." in await r.text()


# -- escaping, errors next to fields -------------------------------------------------------


async def test_nicknames_are_always_escaped(
    http: aiohttp.ClientSession, logged_in: Account
) -> None:
    evil = "<script>alert(1)</script>"
    token = await page_token(http, "/profile")
    async with http.post("/profile/nickname", data={"nickname": evil, "csrf_token": token}) as r:
        assert r.status == 200 and r.url.path == "/profile"
        html = await r.text()
    assert evil not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # Values echoed back into a form after an error are escaped as well.
    token = await page_token(http, "/signup")
    async with http.post(
        "/signup",
        data={"csrf_token": token, "username": '"><img src=x>', "password": "p", "nickname": evil},
    ) as r:
        assert r.status == 422
        html = await r.text()
    assert "<img src=x>" not in html and evil not in html


async def test_form_errors_are_shown_next_to_their_field(http: aiohttp.ClientSession) -> None:
    token = await page_token(http, "/signup")
    name = unique_name()
    async with http.post(
        "/signup",
        data={"csrf_token": token, "username": name, "password": "short", "nickname": "Ann"},
    ) as r:
        assert r.status == 422
        html = await r.text()
    assert re.search(r'id="password-error">Password must be \d+ to \d+ characters', html)
    assert 'aria-describedby="password-error"' in html
    assert f'value="{name}"' in html, "what the user typed is kept (but never the password)"
    async with http.post(
        "/signup",
        data={"csrf_token": token, "username": name, "password": "long-enough-1", "nickname": "A"},
        allow_redirects=False,
    ) as r:
        assert r.status == 303
        assert r.headers["Location"] == f"/login?m=signed_up&username={name}"
    async with http.post(
        "/signup",
        data={"csrf_token": token, "username": name, "password": "long-enough-1", "nickname": "A"},
    ) as r:
        assert r.status == 409
        assert 'id="username-error">This username is taken' in await r.text()


# -- authentication answers and throttling -------------------------------------------------


async def test_unknown_user_and_wrong_password_look_the_same(
    http: aiohttp.ClientSession, tree: Tree
) -> None:
    accounts = [await sign_up_and_log_in(http) for _ in range(3)]
    http.cookie_jar.clear()
    token = await page_token(http, "/login")

    async def attempt(username: str) -> tuple[int, str, float]:
        started = time.perf_counter()
        async with http.post(
            "/login", data={"csrf_token": token, "username": username, "password": "wrong-pass"}
        ) as r:
            body = await r.text()
            elapsed = time.perf_counter() - started
            return r.status, body.replace(username, "NAME"), elapsed

    known, unknown = [], []
    for _ in range(3):  # interleaved, so load on the machine hits both alike
        for account in accounts:
            known.append(await attempt(account.username))
            unknown.append(await attempt(unique_name()))
    assert {k[0] for k in known} == {u[0] for u in unknown} == {401}
    assert {k[1] for k in known} == {u[1] for u in unknown}, "byte-identical pages"
    assert "Wrong username or password." in known[0][1]
    k_med = statistics.median(k[2] for k in known)
    u_med = statistics.median(u[2] for u in unknown)
    # Both pay one argon2id verify; a skipped hash would be many times faster.
    assert 0.6 < u_med / k_med < 1.6, (k_med, u_med)


async def test_login_throttle_answers_429_but_does_not_lock_out_the_owner(
    http: aiohttp.ClientSession, tree: Tree
) -> None:
    account = await sign_up_and_log_in(http)

    def client(address: str) -> aiohttp.ClientSession:
        # The whole of 127/8 is loopback: each session is a different client address.
        return aiohttp.ClientSession(
            base_url=tree.base_url,
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(local_addr=(address, 0)),
        )

    async with client("127.0.0.2") as attacker:
        token = await page_token(attacker, "/login")
        statuses = []
        for _ in range(7):
            async with attacker.post(
                "/login",
                data={"csrf_token": token, "username": account.username, "password": "guess-123"},
            ) as r:
                statuses.append(r.status)
                if r.status == 429:
                    retry_after = int(r.headers["Retry-After"])
                    html = await r.text()
        assert statuses[:5] == [401] * 5 and statuses[-1] == 429, statuses
        assert 1 <= retry_after <= 60, "at most one window"
        assert f"Try again in {retry_after} seconds." in html
        assert 'id="username"' in html, "the form is still there"
    async with client("127.0.0.3") as owner:
        await form_log_in(owner, account.username, account.password)
        async with owner.get("/profile") as r:
            assert r.status == 200 and account.username in await r.text()


# -- picture uploads -----------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
async def test_bad_uploads_are_refused_by_form_and_api_and_nothing_is_stored(
    http: aiohttp.ClientSession, logged_in: Account, tree: Tree, case: str
) -> None:
    data, status, words = BAD_UPLOADS[case]
    before = stored_files(tree.var)
    token = await page_token(http, "/profile")
    async with http.post("/profile/avatar", data=avatar_form(data, token, "cute.png")) as r:
        assert r.status == status, (case, r.status)
        html = await r.text()
    message = re.search(r'id="avatar-error">([^<]+)<', html)
    assert message, f"{case}: the error is next to the picture field"
    assert words in message.group(1), message.group(1)
    async with http.put(
        "/api/v1/profile/avatar", data=avatar_form(data, None, "cute.png"), headers=logged_in.auth
    ) as r:
        assert r.status == status, (case, r.status)
        error = (await r.json())["error"]
        assert error["code"] in ("invalid_input", "unsupported_media_type", "payload_too_large")
        assert words in error["message"]
    assert stored_files(tree.var) == before, "nothing stored"
    # The service carries on: health, the profile, and a good picture all still work.
    async with http.get("/healthz") as r:
        assert r.status == 200
    async with http.get("/api/v1/profile") as r:
        assert (await r.json())["avatar_url"] is None
    token = await page_token(http, "/profile")
    async with http.post("/profile/avatar", data=avatar_form(png_bytes(), token)) as r:
        assert r.status == 200 and "Your new picture has been saved." in await r.text()


async def test_failed_logins_count_across_gateway_processes(tree: Tree) -> None:
    """Two gateway processes share one count: alternating between them buys nothing."""
    url_a = await asyncio.to_thread(tree.start_gateway)
    url_b = await asyncio.to_thread(tree.start_gateway)
    async with (
        aiohttp.ClientSession(base_url=url_a) as a,
        aiohttp.ClientSession(base_url=url_b) as b,
    ):
        account = await sign_up_and_log_in(a)
        guess = {"username": account.username, "password": "guess-456"}
        statuses = []
        for n in range(6):
            async with (a if n % 2 == 0 else b).post("/api/v1/login", json=guess) as r:
                statuses.append(r.status)
        assert statuses == [401] * 5 + [429], statuses
        async with a.post("/api/v1/login", json=guess) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
