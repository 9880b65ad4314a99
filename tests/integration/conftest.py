"""Integration fixtures: one real tree per test session, plus HTTP helpers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests.integration.tree import Tree, running_tree

pytestmark = pytest.mark.integration

#: Every answer to an /api/v1 request made through the ``http`` fixture in this session:
#: (method, path, status, headers, body). tests/integration/test_openapi.py checks that
#: each one is described by the OpenAPI document.
API_ANSWERS: list[tuple[str, str, int, dict[str, str], bytes]] = []


async def record_api_answers(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    response = await handler(request)
    if request.url.path.startswith("/api/v1/"):
        body = await response.read()  # kept by the response: the test reads it again
        headers = {k.lower(): v for k, v in response.headers.items()}
        API_ANSWERS.append((request.method, request.url.path, response.status, headers, body))
    return response


@pytest.fixture(scope="session")
def tree() -> Iterator[Tree]:
    with running_tree() as t:
        yield t


@pytest.fixture
async def http(tree: Tree) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        base_url=tree.base_url,
        timeout=aiohttp.ClientTimeout(total=15),
        cookie_jar=aiohttp.CookieJar(unsafe=True),  # keep cookies for 127.0.0.1
        middlewares=(record_api_answers,),
    ) as session:
        yield session


@dataclass
class Account:
    username: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


async def sign_up_and_log_in(http: aiohttp.ClientSession, nickname: str = "Tester") -> Account:
    username = unique_name()
    password = "pw-" + uuid.uuid4().hex
    async with http.post(
        "/api/v1/users", json={"username": username, "password": password, "nickname": nickname}
    ) as r:
        assert r.status == 201, await r.text()
    async with http.post("/api/v1/login", json={"username": username, "password": password}) as r:
        assert r.status == 200, await r.text()
        token = (await r.json())["token"]
    return Account(username, password, token)


@pytest.fixture
async def account(http: aiohttp.ClientSession) -> Account:
    return await sign_up_and_log_in(http)
