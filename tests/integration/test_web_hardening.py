"""Attacks on uploads, the JSON API's bodies, slow bodies and /metrics, against real processes.

Each test makes the attack a client found against a tree started with ``make run``
and sees it refused: an upload with a made-up session is not stored, a text/plain
JSON login gets no cookie, a cookie-authenticated write from another site is
refused, a trickled page form or upload gets 408 within its bound, uploads beyond a
gateway's slots get 503 at once, /metrics is only on the admin listener, and
pictures nobody references are swept after their grace period.

The tree is this module's own, with small bounds so each one is quick to reach:
one upload slot per gateway (two gateways), four uploads per account per hour, a
4 s upload time limit, and a sweep every half second with a 60 s grace period.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from actors.web.bodies import BODY_TIMEOUT_S
from actors.web.image_store import LocalImageStore
from actors.web.images import StoredImage, validate_avatar
from actors.web.views import PUBLIC_MESSAGES
from tests.integration.conftest import Account, sign_up_and_log_in
from tests.integration.pages import avatar_form, page_token, png_bytes, stored_files
from tests.integration.test_http_abuse import Raw, read_response
from tests.integration.tree import Tree, running_tree, wait_until

pytestmark = pytest.mark.integration

UPLOAD_TIMEOUT_S = 4.0
GRACE_S = 60.0
SETTINGS = {
    "USERHUB_GATEWAYS": "2",
    "USERHUB_UPLOADS_CONCURRENT": "1",
    "USERHUB_UPLOAD_MAX_PER_USER": "4",
    "USERHUB_UPLOAD_TIMEOUT_S": str(UPLOAD_TIMEOUT_S),
    "USERHUB_AVATAR_GRACE_S": str(GRACE_S),
    "USERHUB_AVATAR_SWEEP_S": "0.5",
}
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def tree() -> Iterator[Tree]:
    """This module's tree (the conftest's ``http`` fixture uses it through this name)."""
    with running_tree(**SETTINGS) as t:
        yield t


@pytest.fixture
async def raw(tree: Tree) -> AsyncIterator[Raw]:
    client = Raw(tree)
    try:
        yield client
    finally:
        client.close()


def png_multipart(boundary: str = "xyz", data: bytes | None = None) -> bytes:
    picture = png_bytes() if data is None else data
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="avatar"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + picture
        + f"\r\n--{boundary}--\r\n".encode()
    )


def error_of(body: bytes) -> dict[str, str]:
    return dict(json.loads(body)["error"])


def set_cookie_headers(r: aiohttp.ClientResponse) -> list[str]:
    return list(r.headers.getall("Set-Cookie", []))


# -- uploads with a dead or made-up session ---------------------------------------------------


async def test_an_upload_with_a_made_up_session_is_not_read_or_stored(
    tree: Tree, raw: Raw, http: aiohttp.ClientSession
) -> None:
    before = stored_files(tree.var)
    made_up = secrets.token_urlsafe(32)  # well-formed, belongs to nobody
    body = png_multipart(data=png_bytes(color=(1, 2, 3)))
    status, _, answer = await raw.request(
        "PUT",
        "/api/v1/profile/avatar",
        {"Content-Type": "multipart/form-data; boundary=xyz", "Authorization": f"Bearer {made_up}"},
        body,
    )
    assert status == 401, answer
    assert error_of(answer)["code"] == "unauthenticated"

    # Answered before the body is read: 2 MB announced, not one byte of it sent.
    reader, writer = await raw.open()
    headers: dict[str, str | bytes] = {
        "Content-Type": "multipart/form-data; boundary=xyz",
        "Content-Length": str(2 * 1024 * 1024),
        "Authorization": f"Bearer {made_up}",
    }
    writer.write(raw.head("PUT", "/api/v1/profile/avatar", headers))
    started = time.monotonic()
    status, _, _ = await read_response(reader, timeout=5)
    assert status == 401 and time.monotonic() - started < 2

    # The page: a made-up session cookie is sent to log in, and nothing is stored.
    token = await page_token(http, "/login")
    form = avatar_form(png_bytes(color=(4, 5, 6)), token)
    async with http.post(
        "/profile/avatar",
        data=form,
        cookies={"userhub_session": made_up},
        allow_redirects=False,
    ) as r:
        assert r.status == 303 and r.headers["Location"] == "/login?m=expired"
    assert stored_files(tree.var) == before, "nothing written"


async def test_an_upload_after_log_out_is_not_stored(
    tree: Tree, http: aiohttp.ClientSession, account: Account
) -> None:
    async with http.post("/api/v1/logout", headers=account.auth) as r:
        assert r.status == 204
    before = stored_files(tree.var)
    form = avatar_form(png_bytes(color=(7, 8, 9)), None)
    async with http.put("/api/v1/profile/avatar", data=form, headers=account.auth) as r:
        assert r.status == 401
    assert stored_files(tree.var) == before


# -- the JSON API reads JSON only, and not from other sites ----------------------------------


async def test_a_text_plain_json_login_gets_415_and_no_cookie(
    http: aiohttp.ClientSession, account: Account
) -> None:
    credentials = json.dumps({"username": account.username, "password": account.password})
    http.cookie_jar.clear()
    # What a page of another site can send without asking first (a "simple" request).
    for content_type in ("text/plain", "text/plain; charset=utf-8", None):
        headers = {} if content_type is None else {"Content-Type": content_type}
        async with http.post("/api/v1/login", data=credentials.encode(), headers=headers) as r:
            assert r.status == 415, (content_type, await r.text())
            assert (await r.json())["error"]["code"] == "unsupported_media_type"
            assert not set_cookie_headers(r)
    async with http.post(
        "/api/v1/login",
        data={"username": account.username, "password": account.password},  # a form
    ) as r:
        assert r.status == 415 and not set_cookie_headers(r)
    assert not list(http.cookie_jar)
    # Every JSON route refuses it alike; real JSON still works.
    async with http.post("/api/v1/users", data=b'{"username": "x"}') as r:
        assert r.status == 415
    async with http.put(
        "/api/v1/profile/nickname",
        data=b'{"nickname": "plain"}',
        headers={**account.auth, "Content-Type": "text/plain"},
    ) as r:
        assert r.status == 415
    async with http.post(
        "/api/v1/login",
        data=credentials.encode(),
        headers={"Content-Type": "application/json; charset=UTF-8"},
    ) as r:
        assert r.status == 200 and set_cookie_headers(r)


async def test_cookie_authenticated_api_writes_from_another_site_are_refused(
    tree: Tree, http: aiohttp.ClientSession
) -> None:
    account = await sign_up_and_log_in(http)  # the cookie jar holds the session cookie
    before = stored_files(tree.var)
    for foreign in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        async with http.put(
            "/api/v1/profile/nickname", json={"nickname": "pwned"}, headers=foreign
        ) as r:
            assert r.status == 403, (foreign, await r.text())
            assert (await r.json())["error"]["code"] == "csrf_failed"
        form = avatar_form(png_bytes(color=(10, 11, 12)), None)
        async with http.put("/api/v1/profile/avatar", data=form, headers=foreign) as r:
            assert r.status == 403
        async with http.post("/api/v1/logout", headers=foreign) as r:
            assert r.status == 403
        # Login CSRF: a page of another site logging the browser in as someone else.
        credentials = {"username": account.username, "password": account.password}
        async with http.post("/api/v1/login", json=credentials, headers=foreign) as r:
            assert r.status == 403 and not set_cookie_headers(r)
        body = {
            "username": f"x{secrets.token_hex(6)}",
            "password": "long-enough-1",
            "nickname": "x",
        }
        async with http.post("/api/v1/users", json=body, headers=foreign) as r:
            assert r.status == 403
    assert stored_files(tree.var) == before
    # Nothing happened: the session lives, the nickname is the old one.
    async with http.get("/api/v1/profile") as r:
        assert r.status == 200 and (await r.json())["nickname"] == "Tester"
    # The same origin, and a bearer token from anywhere, are not affected.
    same = {"Origin": tree.base_url, "Sec-Fetch-Site": "same-origin"}
    async with http.put("/api/v1/profile/nickname", json={"nickname": "Mine"}, headers=same) as r:
        assert r.status == 200
    async with http.put(
        "/api/v1/profile/nickname",
        json={"nickname": "Bearer"},
        headers={"Origin": EVIL, **account.auth},
    ) as r:
        assert r.status == 200


# -- slow bodies -------------------------------------------------------------------------------


async def test_a_trickled_page_form_gets_408_within_the_body_bound(raw: Raw) -> None:
    reader, writer = await raw.open()
    headers: dict[str, str | bytes] = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Length": "1000",
    }
    writer.write(raw.head("POST", "/login", headers) + b"username=a")  # 10 of 1,000 bytes
    started = time.monotonic()
    status, headers_in, body = await read_response(reader, timeout=BODY_TIMEOUT_S + 10)
    waited = time.monotonic() - started
    assert status == 408, body
    assert headers_in["content-type"].startswith("text/html")
    assert BODY_TIMEOUT_S - 1 <= waited <= BODY_TIMEOUT_S + 5, waited


async def test_a_trickled_upload_gets_408_within_the_upload_bound(
    raw: Raw, http: aiohttp.ClientSession
) -> None:
    account = await sign_up_and_log_in(http)
    token = await page_token(http, "/profile")
    cookies = "; ".join(f"{c.key}={c.value}" for c in http.cookie_jar)
    page_head = (
        f'--xyz\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
    ).encode()
    for path, method, extra, first_bytes in [
        ("/profile/avatar", "POST", {"Cookie": cookies}, page_head),
        ("/api/v1/profile/avatar", "PUT", account.auth, b""),
    ]:
        reader, writer = await raw.open()
        headers: dict[str, str | bytes] = {
            "Content-Type": "multipart/form-data; boundary=xyz",
            "Content-Length": str(500_000),
            **extra,
        }
        picture_head = png_multipart()[:200]
        writer.write(raw.head(method, path, headers) + first_bytes + picture_head)
        started = time.monotonic()
        status, _, body = await read_response(reader, timeout=UPLOAD_TIMEOUT_S + 10)
        waited = time.monotonic() - started
        assert status == 408, (path, body[:300])
        assert UPLOAD_TIMEOUT_S - 1 <= waited <= UPLOAD_TIMEOUT_S + 4, (path, waited)


# -- bounds on uploads ---------------------------------------------------------------------


async def test_uploads_beyond_the_gateways_slots_get_503_at_once(
    tree: Tree, raw: Raw, http: aiohttp.ClientSession
) -> None:
    """Two gateways with one slot each: of four slow uploads at least two are refused."""
    accounts = [await sign_up_and_log_in(http) for _ in range(4)]
    held: list[asyncio.StreamReader] = []
    refused: list[tuple[int, dict[str, str], bytes]] = []
    for account in accounts:
        reader, writer = await raw.open()
        headers: dict[str, str | bytes] = {
            "Content-Type": "multipart/form-data; boundary=xyz",
            "Content-Length": str(500_000),
            **account.auth,
        }
        writer.write(raw.head("PUT", "/api/v1/profile/avatar", headers) + png_multipart()[:100])
        await writer.drain()
        try:
            refused.append(await read_response(reader, timeout=1.5))
        except TimeoutError:
            held.append(reader)  # it has a slot, and keeps it while it trickles
    assert len(refused) >= 2 and len(held) >= 1, (len(refused), len(held))
    for status, headers_in, body in refused:
        assert status == 503, body
        assert headers_in["retry-after"] == "1"
        assert error_of(body) == {"code": "busy", "message": PUBLIC_MESSAGES["busy"]}
    raw.close()  # the slow uploads give up: their slots come back
    form_data = png_bytes(color=(20, 30, 40))

    async def upload_works() -> bool:
        form = avatar_form(form_data, None)
        async with http.put("/api/v1/profile/avatar", data=form, headers=accounts[0].auth) as r:
            return r.status == 200

    deadline = time.monotonic() + 10
    while not await upload_works():
        assert time.monotonic() < deadline, "the slots never came back"
        await asyncio.sleep(0.2)


async def test_uploads_per_account_are_limited(http: aiohttp.ClientSession) -> None:
    """Four an hour per account, counted once for both gateways: the fifth is refused
    whichever gateway it reaches, and so are the ones after it."""
    account = await sign_up_and_log_in(http)
    statuses, retry_after = [], ""
    for n in range(9):
        form = avatar_form(png_bytes(color=(n, 50, 60)), None)
        async with http.put("/api/v1/profile/avatar", data=form, headers=account.auth) as r:
            statuses.append(r.status)
            if r.status == 429:
                retry_after = r.headers["Retry-After"]
                assert (await r.json())["error"]["code"] == "throttled"
    assert statuses == [200] * 4 + [429] * 5, statuses
    assert 1 <= int(retry_after) <= 3600


# -- the admin listener ------------------------------------------------------------------------


async def test_metrics_are_on_the_admin_listener_only(
    tree: Tree, http: aiohttp.ClientSession
) -> None:
    async with http.get("/metrics") as r:
        assert r.status == 404
    host, port = tree.config.admin_addr
    assert host == "127.0.0.1" and (host, port) != tree.http
    async with http.get(tree.metrics_url) as r:
        assert r.status == 200
        assert "userhub_http_request_seconds_bucket" in await r.text()
    async with (
        aiohttp.ClientSession() as plain,  # not recorded: this is no answer of the API's
        plain.get(f"{tree.admin_url}/api/v1/profile") as r,
    ):
        assert r.status == 404, "the admin listener serves nothing else"


# -- the orphan sweeper --------------------------------------------------------------------


def picture(color: tuple[int, int, int]) -> StoredImage:
    return validate_avatar(png_bytes(color=color))


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def upload(http: aiohttp.ClientSession, account: Account, data: bytes) -> str:
    async with http.put(
        "/api/v1/profile/avatar", data=avatar_form(data, None), headers=account.auth
    ) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["avatar_url"]).removeprefix("/avatars/")


async def test_pictures_nobody_references_are_swept_after_the_grace_period(
    tree: Tree, http: aiohttp.ClientSession
) -> None:
    store = LocalImageStore(tree.var / "avatars")

    def path(key: str) -> Path:
        found = store.path_for(key)
        assert found is not None
        return found

    owner, changer = await sign_up_and_log_in(http), await sign_up_and_log_in(http)
    referenced = await upload(http, owner, png_bytes(color=(250, 10, 10)))
    replaced = await upload(http, changer, png_bytes(color=(10, 250, 10)))
    current = await upload(http, changer, png_bytes(color=(10, 10, 250)))  # `replaced` is orphaned
    stray, fresh = picture((250, 250, 10)), picture((10, 250, 250))
    keys = {referenced, replaced, current, stray.key, fresh.key}
    assert len(keys) == 5, "five different pictures"
    await store.put(stray)  # stored, never referenced (an upload whose change never came)
    await store.put(fresh)
    for key in (referenced, replaced, current, stray.key):
        age(path(key), GRACE_S + 600)

    wait_until(
        lambda: not path(replaced).exists() and not path(stray.key).exists(),
        15,
        "the old orphans to be swept",
    )
    await asyncio.sleep(1.5)  # a few more passes
    assert path(referenced).exists() and path(current).exists(), "referenced ones stay"
    assert path(fresh.key).exists(), "an orphan within its grace period stays"
    async with http.get(f"/avatars/{referenced}") as r:
        assert r.status == 200
    async with http.get(f"/avatars/{stray.key}") as r:
        assert r.status == 404
    async with http.get(tree.metrics_url) as r:
        text = await r.text()
    assert 'userhub_avatar_sweep_total{result="deleted"}' in text
    # One gateway of the host sweeps; the other waits for its lock.
    leaders = [
        log.name
        for log in (tree.var / "log").glob("gateway_*.log")
        if '"avatar_sweeper_leader"' in log.read_text(errors="replace")
    ]
    assert len(leaders) == 1, leaders


async def test_a_picture_stored_again_gets_a_new_grace_period(
    tree: Tree, http: aiohttp.ClientSession
) -> None:
    """The same content uploaded again (same key) is touched, so it cannot be swept
    between the store and the profile change that references it."""
    account = await sign_up_and_log_in(http)
    data = png_bytes(color=(130, 40, 200))
    key = await upload(http, account, data)
    store = LocalImageStore(tree.var / "avatars")
    path = store.path_for(key)
    assert path is not None
    age(path, 3600)
    assert await upload(http, account, data) == key
    assert path.stat().st_mtime > time.time() - 30
