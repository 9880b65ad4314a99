"""Every API flow against a real tree: MariaDB, Redis, and all actors as processes."""

from __future__ import annotations

import io
from typing import TypedDict

import aiohttp
import pytest
from PIL import Image

from tests.integration.conftest import Account, sign_up_and_log_in, unique_name
from tests.integration.pages import png_bytes
from tests.integration.tree import Tree

pytestmark = pytest.mark.integration


class Sent(TypedDict, total=False):
    """What a malformed request carries: the ClientSession.request keywords it uses."""

    json: object
    data: bytes
    headers: dict[str, str]


async def error_code(r: aiohttp.ClientResponse) -> str:
    body = await r.json()
    return str(body["error"]["code"])


async def test_sign_up_returns_profile_and_refuses_taken_name(http: aiohttp.ClientSession) -> None:
    name = unique_name()
    body = {"username": name, "password": "long-enough-1", "nickname": "Zoë"}
    async with http.post("/api/v1/users", json=body) as r:
        assert r.status == 201
        profile = await r.json()
        assert profile["username"] == name
        assert profile["nickname"] == "Zoë"
        assert profile["avatar_url"] is None
        assert r.headers["X-Request-ID"]
    async with http.post("/api/v1/users", json=body) as r:
        assert r.status == 409
        assert await error_code(r) == "username_taken"
    upper = dict(body, username=name.upper())
    async with http.post("/api/v1/users", json=upper) as r:
        assert r.status == 409, "usernames are case-insensitive"


async def test_login_sets_cookie_and_profile_reads_with_bearer_or_cookie(
    http: aiohttp.ClientSession, tree: object
) -> None:
    name = unique_name()
    await http.post(
        "/api/v1/users", json={"username": name, "password": "pw-123456", "nickname": "Ann"}
    )
    async with http.post("/api/v1/login", json={"username": name, "password": "pw-123456"}) as r:
        assert r.status == 200
        body = await r.json()
        assert len(body["token"]) == 43
        assert body["user"]["username"] == name
        cookie = r.cookies["userhub_session"]
        assert cookie.value == body["token"]
        assert cookie["httponly"]
        assert cookie["samesite"] == "Lax"
    async with http.get(
        "/api/v1/profile", headers={"Authorization": f"Bearer {body['token']}"}
    ) as r:
        assert r.status == 200
        assert (await r.json())["nickname"] == "Ann"
    # The session cookie alone also works (the cookie jar kept it).
    async with http.get("/api/v1/profile") as r:
        assert r.status == 200
        assert (await r.json())["username"] == name


async def test_each_login_mints_a_new_token(http: aiohttp.ClientSession, account: Account) -> None:
    tokens = set()
    for _ in range(2):
        async with http.post(
            "/api/v1/login", json={"username": account.username, "password": account.password}
        ) as r:
            tokens.add((await r.json())["token"])
    assert len(tokens | {account.token}) == 3


async def test_wrong_password_and_unknown_user_get_the_same_answer(
    http: aiohttp.ClientSession, account: Account
) -> None:
    answers = []
    for username in (account.username, unique_name()):
        async with http.post(
            "/api/v1/login", json={"username": username, "password": "not-the-password"}
        ) as r:
            answers.append((r.status, await r.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 401
    assert answers[0][1]["error"]["code"] == "invalid_credentials"


async def test_nickname_change_is_visible_on_the_next_read(
    http: aiohttp.ClientSession, account: Account
) -> None:
    async with http.get("/api/v1/profile", headers=account.auth) as r:
        assert (await r.json())["nickname"] == "Tester"  # now cached
    for nickname in ("First", "Second ✨", "Third"):
        async with http.put(
            "/api/v1/profile/nickname", json={"nickname": nickname}, headers=account.auth
        ) as r:
            assert r.status == 200
            assert (await r.json())["nickname"] == nickname
        async with http.get("/api/v1/profile", headers=account.auth) as r:
            assert (await r.json())["nickname"] == nickname


async def test_avatar_upload_is_stored_and_served(
    http: aiohttp.ClientSession, account: Account
) -> None:
    form = aiohttp.FormData()
    form.add_field("avatar", png_bytes(), filename="me.png", content_type="image/png")
    async with http.put("/api/v1/profile/avatar", data=form, headers=account.auth) as r:
        assert r.status == 200, await r.text()
        url = (await r.json())["avatar_url"]
    assert url.startswith("/avatars/") and url.endswith(".jpg")
    async with http.get("/api/v1/profile", headers=account.auth) as r:
        assert (await r.json())["avatar_url"] == url
    async with http.get(url) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "image/jpeg"
        assert "immutable" in r.headers["Cache-Control"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        image = Image.open(io.BytesIO(await r.read()))
        assert image.size == (320, 240)
    async with http.get("/avatars/" + "0" * 64 + ".png") as r:
        assert r.status == 404
    async with http.get("/avatars/..%2F..%2Fetc%2Fpasswd") as r:
        assert r.status == 404


async def test_bad_avatar_uploads_are_refused(
    http: aiohttp.ClientSession, account: Account
) -> None:
    cases = [
        (b"this is not an image at all", {415, 422}),
        (png_bytes()[:60], {422}),
        (b"\0" * (3 * 1024 * 1024), {413}),
    ]
    for data, statuses in cases:
        form = aiohttp.FormData()
        form.add_field("avatar", data, filename="x.png", content_type="image/png")
        async with http.put("/api/v1/profile/avatar", data=form, headers=account.auth) as r:
            assert r.status in statuses, (r.status, await r.text())
            assert "error" in await r.json()
    async with http.put("/api/v1/profile/avatar", json={"avatar": "x"}, headers=account.auth) as r:
        assert r.status == 422
    async with http.get("/api/v1/profile", headers=account.auth) as r:
        assert (await r.json())["avatar_url"] is None


async def test_log_out_ends_the_session_everywhere(
    http: aiohttp.ClientSession, account: Account
) -> None:
    async with http.get("/api/v1/profile", headers=account.auth) as r:
        assert r.status == 200  # cached now
    async with http.post("/api/v1/logout", headers=account.auth) as r:
        assert r.status == 204
    for _ in range(3):
        async with http.get("/api/v1/profile", headers=account.auth) as r:
            assert r.status == 401
            assert await error_code(r) == "unauthenticated"
    async with http.put(
        "/api/v1/profile/nickname", json={"nickname": "ghost"}, headers=account.auth
    ) as r:
        assert r.status == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "ab", "password": "long-enough-1", "nickname": "x"}, "username"),
        ({"username": "a" * 31, "password": "long-enough-1", "nickname": "x"}, "username"),
        ({"username": "bad name", "password": "long-enough-1", "nickname": "x"}, "username"),
        ({"username": "ok_name1", "password": "short", "nickname": "x"}, "password"),
        ({"username": "ok_name1", "password": "long-enough\x00", "nickname": "x"}, "password"),
        ({"username": "ok_name1", "password": "long-enough-1", "nickname": ""}, "nickname"),
        ({"username": "ok_name1", "password": "long-enough-1", "nickname": "n" * 31}, "nickname"),
        ({"username": "ok_name1", "password": "long-enough-1", "nickname": "a\u202eb"}, "nickname"),
        ({"username": "ok_name1", "password": "long-enough-1", "nickname": "a\nb"}, "nickname"),
        ({"username": 12, "password": "long-enough-1", "nickname": "x"}, "username"),
        ({"password": "long-enough-1", "nickname": "x"}, "username"),
    ],
)
async def test_invalid_sign_ups_get_422_with_the_field(
    http: aiohttp.ClientSession, body: dict[str, object], field: str
) -> None:
    async with http.post("/api/v1/users", json=body) as r:
        assert r.status == 422
        error = (await r.json())["error"]
        assert error["code"] == "invalid_input"
        assert error["field"] == field


async def test_malformed_requests_get_clear_4xx(
    http: aiohttp.ClientSession, account: Account
) -> None:
    http.cookie_jar.clear()  # only what each request says counts
    json_type = {"Content-Type": "application/json"}
    checks: list[tuple[str, str, Sent, int]] = [
        ("POST", "/api/v1/users", {"data": b"{not json", "headers": json_type}, 400),
        ("POST", "/api/v1/users", {"json": [1, 2]}, 422),
        ("POST", "/api/v1/users", {"data": b"x" * 100_000, "headers": json_type}, 413),
        ("POST", "/api/v1/users", {"data": b"\xff\xfe\xfd", "headers": json_type}, 400),
        # Only JSON is read as JSON: a form, plain text or no type at all is 415.
        ("POST", "/api/v1/users", {"data": b'{"username": "a"}'}, 415),
        ("POST", "/api/v1/login", {"data": b"{}", "headers": {"Content-Type": "text/plain"}}, 415),
        (
            "PUT",
            "/api/v1/profile/nickname",
            {"data": b"nickname=x", "headers": {**account.auth, "Content-Type": "text/plain"}},
            415,
        ),
        ("GET", "/api/v1/profile", {}, 401),
        ("GET", "/api/v1/profile", {"headers": {"Authorization": "Bearer nonsense"}}, 401),
        ("GET", "/api/v1/profile", {"headers": {"Authorization": "Basic Zm9vOmJhcg=="}}, 401),
        ("GET", "/api/v1/profile", {"headers": {"Authorization": "Bearer " + "A" * 43}}, 401),
        (
            "PUT",
            "/api/v1/profile/nickname",
            {"json": {"nickname": 5}, "headers": account.auth},
            422,
        ),
        ("PUT", "/api/v1/profile/nickname", {"json": {}, "headers": account.auth}, 422),
        ("DELETE", "/api/v1/profile", {}, 405),
        ("GET", "/api/v1/nothing-here", {}, 404),
    ]
    for method, path, kwargs, status in checks:
        async with http.request(method, path, **kwargs) as r:
            assert r.status == status, (method, path, r.status, await r.text())
            body = await r.json()
            assert set(body["error"]) >= {"code", "message"}


async def test_login_throttling_answers_429_with_retry_after(http: aiohttp.ClientSession) -> None:
    account = await sign_up_and_log_in(http)
    statuses = []
    for _ in range(12):
        async with http.post(
            "/api/v1/login", json={"username": account.username, "password": "wrong-guess"}
        ) as r:
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1
                assert await error_code(r) == "throttled"
    assert 401 in statuses and 429 in statuses


async def test_health_ready_and_metrics(http: aiohttp.ClientSession, tree: Tree) -> None:
    async with http.get("/healthz") as r:
        assert r.status == 200
    async with http.get("/readyz") as r:
        body = await r.json()
        assert r.status == 200 and body["ready"] is True
        assert body["db_workers"] >= 1 and body["cache_workers"] >= 1
    # The host's metrics are on the admin listener only, never on the public port.
    async with http.get("/metrics") as r:
        assert r.status == 404
        assert "userhub_" not in await r.text()
    async with http.get(tree.metrics_url) as r:
        text = await r.text()
        assert r.status == 200
        assert "userhub_http_request_seconds_bucket" in text
