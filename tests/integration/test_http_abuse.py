"""The HTTP API under abuse: over-long and malformed input, huge and slow bodies, trickled
headers, cut connections. Each gets a clear 4xx (or, for a client that never finishes
its request head, a closed connection), no gateway logs an unhandled error, and a normal
request succeeds right after each.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from actors.web.bodies import BODY_TIMEOUT_S, HTTP_IDLE_TIMEOUT_S, MAX_JSON_BYTES
from tests.integration.conftest import Account, unique_name
from tests.integration.tree import Tree

pytestmark = pytest.mark.integration

USERS = "/api/v1/users"


# -- helpers -------------------------------------------------------------------------------


def unhandled_errors(tree: Tree) -> int:
    """Lines in which a gateway logged an error it did not expect (each is a 500)."""
    return sum(
        path.read_text(errors="replace").count('"unhandled_error"')
        for path in Path(tree.var, "log").glob("gateway_*.log")
    )


@pytest.fixture(autouse=True)
async def service_stays_up(
    tree: Tree, http: aiohttp.ClientSession, account: Account
) -> AsyncIterator[None]:
    """Around every test: no new unhandled errors, and a normal request works afterwards."""
    before = unhandled_errors(tree)
    yield
    async with http.get("/api/v1/profile", headers=account.auth) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["username"] == account.username
    assert unhandled_errors(tree) == before, "a gateway logged an unhandled error (a 500)"


class Raw:
    """A raw TCP client for what aiohttp's client would refuse to send."""

    def __init__(self, tree: Tree) -> None:
        url = urlsplit(tree.base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.writers.append(writer)
        return reader, writer

    def head(self, method: str, path: str, headers: dict[str, str | bytes]) -> bytes:
        lines = [f"{method} {path} HTTP/1.1".encode(), f"Host: {self.host}".encode()]
        for name, value in headers.items():
            raw = value if isinstance(value, bytes) else value.encode()
            lines.append(name.encode() + b": " + raw)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str | bytes] | None = None,
        body: bytes = b"",
        *,
        timeout: float = 10,
    ) -> tuple[int, dict[str, str], bytes]:
        hdrs: dict[str, str | bytes] = {"Connection": "close", **(headers or {})}
        if body and "Transfer-Encoding" not in hdrs:
            hdrs.setdefault("Content-Length", str(len(body)))
        reader, writer = await self.open()
        writer.write(self.head(method, path, hdrs) + body)
        await writer.drain()
        return await read_response(reader, timeout)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


async def read_response(
    reader: asyncio.StreamReader, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
    return int(status_line.split()[1]), headers, body


def error_code(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


@pytest.fixture
async def raw(tree: Tree) -> AsyncIterator[Raw]:
    client = Raw(tree)
    try:
        yield client
    finally:
        client.close()


def sign_up_body(**fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        "username": unique_name(),
        "password": "long-enough-1",
        "nickname": "Abuse",
    }
    body.update(fields)
    return body


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Read until the server closes the connection; False if it is still open at ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


# -- over-long fields ------------------------------------------------------------------------


async def test_over_long_fields_are_refused(http: aiohttp.ClientSession, account: Account) -> None:
    long_nick = "n" * 10_000
    async with http.post(USERS, json=sign_up_body(nickname=long_nick)) as r:
        assert r.status == 422
        assert (await r.json())["error"]["field"] == "nickname"
    async with http.put(
        "/api/v1/profile/nickname", json={"nickname": long_nick}, headers=account.auth
    ) as r:
        assert r.status == 422
        assert (await r.json())["error"]["field"] == "nickname"

    # A username just under the JSON limit is read, and refused by the input rules...
    under = "u" * (MAX_JSON_BYTES - 100)
    async with http.post(USERS, json=sign_up_body(username=under)) as r:
        assert r.status == 422
        assert (await r.json())["error"]["field"] == "username"
    # ...one of 1 MB is refused before it is read.
    async with http.post(USERS, json=sign_up_body(username="u" * 1_000_000)) as r:
        assert r.status == 413
        assert (await r.json())["error"]["code"] == "payload_too_large"

    async with http.post(USERS, json=sign_up_body(password="p" * 10_000)) as r:
        assert r.status == 422
        assert (await r.json())["error"]["field"] == "password"
    async with http.post(
        "/api/v1/login", json={"username": account.username, "password": "p" * 10_000}
    ) as r:
        assert r.status == 401


async def test_over_long_headers_are_refused(raw: Raw, account: Account) -> None:
    status, _, _ = await raw.request(
        "GET", "/api/v1/profile", {"Authorization": "Bearer " + "A" * 20_000}
    )
    assert status in (400, 431)
    many = {f"X-Filler-{i}": "x" for i in range(200)}
    status, _, _ = await raw.request("GET", "/api/v1/profile", {**many, **account.auth})
    assert status in (400, 431)
    status, _, body = await raw.request(
        "POST", USERS, {"Idempotency-Key": "k" * 65, "Content-Type": "application/json"},
        json.dumps(sign_up_body()).encode(),
    )  # fmt: skip
    assert status == 422, body


# -- NUL bytes and invalid UTF-8 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"username": "ab\0cd"}, "username"),
        ({"username": "\0" * 5}, "username"),
        ({"nickname": "a\0b"}, "nickname"),
        ({"nickname": "\0"}, "nickname"),
        ({"password": "long-enough\0-1"}, "password"),
    ],
)
async def test_nul_bytes_in_fields_are_refused(
    http: aiohttp.ClientSession, fields: dict[str, str], field: str
) -> None:
    async with http.post(USERS, json=sign_up_body(**fields)) as r:
        assert r.status == 422
        error = (await r.json())["error"]
        assert (error["code"], error["field"]) == ("invalid_input", field)


@pytest.mark.parametrize(
    "body",
    [
        b'{"username": "\xff\xfeab", "password": "long-enough-1", "nickname": "x"}',
        b'{"username": "abc", "password": "long-enough-1", "nickname": "\xc0\xaf"}',  # overlong
        b'{"username": "abc", "password": "long-\xed\xa0\x80-1", "nickname": "x"}',  # surrogate
        b'{"username": "abc", "password": "long-enough-1", "nickname": "\xe2\x82"}',  # cut short
        b'{"username": "a\\ud800bc", "password": "long-enough-1", "nickname": "x"}',  # lone \\u
        b'{"username": "abc",\0 "password": "long-enough-1", "nickname": "x"}',
        b"\0\0\0\0",
    ],
)
async def test_invalid_utf8_and_nul_in_json_bodies_get_400(raw: Raw, body: bytes) -> None:
    status, headers, answer = await raw.request(
        "POST", USERS, {"Content-Type": "application/json"}, body
    )
    assert status == 400, answer
    assert headers["content-type"].startswith("application/json")
    assert error_code(answer) == "bad_request"


async def test_invalid_utf8_in_a_nickname_change_gets_400(raw: Raw, account: Account) -> None:
    status, _, answer = await raw.request(
        "PUT",
        "/api/v1/profile/nickname",
        {"Content-Type": "application/json", **account.auth},
        b'{"nickname": "\xf0\x28\x8c\x28"}',
    )
    assert status == 400, answer


@pytest.mark.parametrize(
    ("headers", "statuses"),
    [
        ({"Authorization": b"Bearer \xff\xfe\xfd"}, {401}),
        ({"Authorization": b"Bearer \xc3\xa9t\xc3\xa9"}, {401}),
        ({"Cookie": b"userhub_session=\xff\xfe"}, {401}),
        ({"Authorization": b"Bearer abc\0def"}, {400}),  # the HTTP parser refuses NUL
        ({"X-Anything": b"a\x01b"}, {400}),
    ],
)
async def test_bad_bytes_in_headers_get_4xx(
    raw: Raw, headers: dict[str, str | bytes], statuses: set[int]
) -> None:
    status, _, _ = await raw.request("GET", "/api/v1/profile", headers)
    assert status in statuses


@pytest.mark.parametrize("key", [b"\xff\xfe", "clé".encode(), b"tab\there"])
async def test_bad_idempotency_keys_get_422(raw: Raw, key: bytes) -> None:
    status, _, answer = await raw.request(
        "POST",
        USERS,
        {"Content-Type": "application/json", "Idempotency-Key": key},
        json.dumps(sign_up_body()).encode(),
    )
    assert status == 422, answer
    assert error_code(answer) == "invalid_input"


# -- Unicode look-alikes ---------------------------------------------------------------------


def full_width(text: str) -> str:
    return "".join(chr(ord(c) - 0x21 + 0xFF01) if "!" <= c <= "~" else c for c in text)


async def test_full_width_username_is_the_same_account(http: aiohttp.ClientSession) -> None:
    name = "fw" + uuid.uuid4().hex[:10]
    password = "long-enough-1"
    async with http.post(USERS, json=sign_up_body(username=name, password=password)) as r:
        assert r.status == 201
    wide = full_width(name)
    assert wide != name and wide.isprintable()
    async with http.post(USERS, json=sign_up_body(username=wide)) as r:
        assert r.status == 409
        assert (await r.json())["error"]["code"] == "username_taken"
    async with http.post(USERS, json=sign_up_body(username=full_width(name.upper()))) as r:
        assert r.status == 409
    async with http.post("/api/v1/login", json={"username": wide, "password": password}) as r:
        assert r.status == 200
        assert (await r.json())["user"]["username"] == name


@pytest.mark.parametrize(
    "username",
    [
        "\u0430dmin" + uuid.uuid4().hex[:6],  # Cyrillic a
        "adm\u0456n" + uuid.uuid4().hex[:6],  # Cyrillic i
        "ad\u200bmin" + uuid.uuid4().hex[:6],  # zero-width space
    ],
)
async def test_other_script_look_alike_usernames_are_refused(
    http: aiohttp.ClientSession, username: str
) -> None:
    async with http.post(USERS, json=sign_up_body(username=username)) as r:
        assert r.status == 422
        assert (await r.json())["error"]["field"] == "username"


@pytest.mark.parametrize(
    "nickname", ["evil\u202egnp.exe", "a\u202ab", "x\u2066y\u2069", "\u200b\u200b", "\u0301"]
)
async def test_bidi_and_invisible_nicknames_are_refused(
    http: aiohttp.ClientSession, account: Account, nickname: str
) -> None:
    async with http.put(
        "/api/v1/profile/nickname", json={"nickname": nickname}, headers=account.auth
    ) as r:
        assert r.status == 422
        assert (await r.json())["error"]["field"] == "nickname"
    async with http.post(USERS, json=sign_up_body(nickname=nickname)) as r:
        assert r.status == 422


# -- huge bodies ----------------------------------------------------------------------------


async def send_until_answered(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunks: AsyncIterator[bytes]
) -> tuple[int, dict[str, str], bytes]:
    """Write body chunks until the server answers (or stops reading); then read the answer."""
    answer = asyncio.ensure_future(read_response(reader, timeout=15))
    try:
        async for chunk in chunks:
            if answer.done():
                break
            writer.write(chunk)
            try:
                async with asyncio.timeout(2):
                    await writer.drain()
            except (TimeoutError, ConnectionError):
                break  # the server stopped reading: it has answered or is about to
        return await answer
    finally:
        answer.cancel()


async def repeat(chunk: bytes, times: int) -> AsyncIterator[bytes]:
    for _ in range(times):
        yield chunk
        await asyncio.sleep(0)


async def test_announced_100_mb_body_sent_partially_gets_413_at_once(
    raw: Raw, account: Account
) -> None:
    for path, content_type, extra in [
        (USERS, "application/json", {}),
        ("/api/v1/login", "application/json", {}),
        ("/api/v1/profile/nickname", "application/json", account.auth),
        ("/api/v1/profile/avatar", "multipart/form-data; boundary=xyz", account.auth),
    ]:
        reader, writer = await raw.open()
        headers: dict[str, str | bytes] = {
            "Content-Type": content_type,
            "Content-Length": str(100 * 1024 * 1024),
            **extra,
        }
        writer.write(raw.head("POST" if "profile" not in path else "PUT", path, headers))
        writer.write(b"{" + b" " * 65536)  # a sliver of the announced body, then nothing
        started = time.monotonic()
        status, _, body = await read_response(reader, timeout=5)
        assert status == 413, (path, body)
        assert error_code(body) == "payload_too_large"
        assert time.monotonic() - started < 5


async def test_chunked_huge_bodies_get_413(raw: Raw, account: Account) -> None:
    for path, method, content_type, limit in [
        (USERS, "POST", "application/json", MAX_JSON_BYTES),
        ("/api/v1/profile/avatar", "PUT", "multipart/form-data; boundary=xyz", 2 * 1024 * 1024),
    ]:
        reader, writer = await raw.open()
        headers: dict[str, str | bytes] = {
            "Content-Type": content_type,
            "Transfer-Encoding": "chunked",
            **account.auth,
        }
        writer.write(raw.head(method, path, headers))
        if "multipart" in content_type:
            writer.write(b"%x\r\n%b\r\n" % (len(part := multipart_head()), part))
        piece = b"A" * 65536
        chunks = repeat(b"%x\r\n%b\r\n" % (len(piece), piece), (4 * limit) // len(piece))
        status, _, body = await send_until_answered(reader, writer, chunks)
        assert status == 413, (path, body)
        assert error_code(body) == "payload_too_large"


def multipart_head() -> bytes:
    return (
        b'--xyz\r\nContent-Disposition: form-data; name="avatar"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n"
    )


# -- slow clients ----------------------------------------------------------------------------


async def test_a_body_split_in_transit_is_read_whole(raw: Raw) -> None:
    body = json.dumps(sign_up_body(nickname="Split " + "é" * 10)).encode()
    reader, writer = await raw.open()
    headers: dict[str, str | bytes] = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
    }
    writer.write(raw.head("POST", USERS, headers))
    for i in range(0, len(body), 17):
        writer.write(body[i : i + 17])
        await writer.drain()
        await asyncio.sleep(0.05)
    status, _, answer = await read_response(reader)
    assert status == 201, answer


async def test_slow_clients_are_cut_off_and_do_not_block_others(
    raw: Raw, http: aiohttp.ClientSession, account: Account
) -> None:
    """Trickled headers (slowloris) are dropped after the idle timeout; a body that stops
    half-way gets 408 after the body timeout; everyone else is served meanwhile."""

    async def slowloris() -> float:
        reader, writer = await raw.open()
        started = time.monotonic()
        request = raw.head("GET", "/api/v1/profile", {"X-Pad": "p" * 200})
        for byte in request[:-2]:  # never finish the head
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            if reader.at_eof() or await closed_by_server(reader, 0.5):
                break
        return time.monotonic() - started

    async def stalled_body() -> tuple[int, bytes, float]:
        reader, writer = await raw.open()
        started = time.monotonic()
        body = json.dumps(sign_up_body()).encode()
        headers: dict[str, str | bytes] = {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
        }
        writer.write(raw.head("POST", USERS, headers) + body[: len(body) // 2])
        status, _, answer = await read_response(reader, timeout=BODY_TIMEOUT_S + 10)
        return status, answer, time.monotonic() - started

    async def others() -> int:
        served = 0
        async with asyncio.timeout(HTTP_IDLE_TIMEOUT_S + 15):
            while not (lorises.done() and stalled.done()):
                async with http.get("/api/v1/profile", headers=account.auth) as r:
                    assert r.status == 200
                served += 1
                await asyncio.sleep(0.5)
        return served

    lorises = asyncio.gather(*(slowloris() for _ in range(5)))
    stalled = asyncio.ensure_future(stalled_body())
    served = await others()
    held = await lorises
    status, answer, waited = await stalled

    assert status == 408, answer
    assert error_code(answer) == "request_timeout"
    assert BODY_TIMEOUT_S - 1 <= waited <= BODY_TIMEOUT_S + 5
    for seconds in held:
        assert HTTP_IDLE_TIMEOUT_S - 1 <= seconds <= HTTP_IDLE_TIMEOUT_S + 5, held
    assert served >= HTTP_IDLE_TIMEOUT_S  # about two a second the whole time


# -- cut connections -------------------------------------------------------------------------


async def test_connections_cut_mid_request(raw: Raw, account: Account, tree: Tree) -> None:
    body = json.dumps(sign_up_body()).encode()
    json_head: dict[str, str | bytes] = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
    }
    multipart_headers: dict[str, str | bytes] = {
        "Content-Type": "multipart/form-data; boundary=xyz",
        "Content-Length": str(1024 * 1024),
        **account.auth,
    }
    cuts = [
        raw.head("POST", USERS, json_head)[:20],  # inside the request line
        raw.head("POST", USERS, json_head)[:-2],  # after the headers, before the blank line
        raw.head("POST", USERS, json_head),  # before any body byte
        raw.head("POST", USERS, json_head) + body[: len(body) // 2],  # half the body
        raw.head("PUT", "/api/v1/profile/avatar", multipart_headers)
        + multipart_head()
        + b"\x89PNG\r\n" * 1000,  # half a picture
    ]
    for data in cuts:
        for abort in (False, True):
            _, writer = await raw.open()
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(0.05)
            if abort:
                writer.transport.abort()  # RST instead of FIN
            else:
                writer.close()
    await asyncio.sleep(0.5)
    # The half-sent sign-up never happened.
    login = {"username": json.loads(body)["username"], "password": "long-enough-1"}
    status, _, _ = await raw.request(
        "POST", "/api/v1/login", {"Content-Type": "application/json"}, json.dumps(login).encode()
    )
    assert status == 401
