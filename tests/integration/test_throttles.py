"""Throttles that hold, tried against real gateways, cache_workers and Redis.

The attacks a throttle must survive: parallel guesses racing the count, spellings
of a name that accounts treat as one, guesses sprayed from many addresses to lock
the owner out, spoofed X-Forwarded-For, sign-ups that each cost a hash, and a
tree whose cache_workers are gone (each gateway's own table then decides).

Two gateways of this module's own trust 127.0.0.1 as a proxy, so each test names
its clients' addresses in X-Forwarded-For (a fresh range per test: no test couples
with another through an address key). They have small account and sign-up limits.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator

import aiohttp
import pytest

from tests.integration.conftest import sign_up_and_log_in, unique_name
from tests.integration.pages import page_token
from tests.integration.tree import Tree, wait_until

pytestmark = pytest.mark.integration

ACCOUNT_LIMIT = 10
SIGNUP_LIMIT = 3
_ranges = itertools.count(1)


def addresses() -> Iterator[str]:
    """Client addresses no other test uses: 10.<n>.x.y."""
    n = next(_ranges)
    return (f"10.{n}.{i // 250}.{i % 250 + 1}" for i in itertools.count())


@pytest.fixture(scope="module")
def proxied(tree: Tree) -> tuple[str, str]:
    """Two more gateway processes behind a "proxy" at 127.0.0.1."""
    settings = {
        "USERHUB_TRUSTED_PROXIES": "127.0.0.1",
        "USERHUB_LOGIN_MAX_FAILURES_ACCOUNT": str(ACCOUNT_LIMIT),
        "USERHUB_LOGIN_MAX_FAILURES_ADDRESS": "100",
        "USERHUB_SIGNUP_MAX_PER_ADDRESS": str(SIGNUP_LIMIT),
    }
    return tree.start_gateway(settings), tree.start_gateway(settings)


def xff(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def login_status(
    url: str, username: str, password: str, headers: dict[str, str] | None = None
) -> int:
    """One log-in on a connection of its own (so the kernel may pick any gateway)."""
    async with (
        aiohttp.ClientSession(base_url=url, connector=aiohttp.TCPConnector(force_close=True)) as s,
        s.post(
            "/api/v1/login", json={"username": username, "password": password}, headers=headers
        ) as r,
    ):
        if r.status == 429:
            assert int(r.headers["Retry-After"]) >= 1
        return r.status


def full_width(name: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in name)


# -- counting before judging, on the accounts' normal form ---------------------------------


async def test_parallel_guesses_in_every_spelling_get_at_most_the_limit_through(
    tree: Tree, http: aiohttp.ClientSession, proxied: tuple[str, str]
) -> None:
    """20 wrong passwords at once, in three spellings, over four gateway processes."""
    account = await sign_up_and_log_in(http)
    name = account.username
    spellings = [name, full_width(name), name.upper()[:3] + full_width(name[3:])]
    urls = [tree.base_url, *proxied]  # the tree's port has 2 processes behind it
    statuses = await asyncio.gather(
        *(login_status(urls[i % 3], spellings[i % 3], f"wrong-{i}") for i in range(20))
    )
    assert sorted(statuses) == [401] * 5 + [429] * 15, statuses
    # No spelling walks past the count, even with the right password.
    for spelling in spellings:
        assert await login_status(tree.base_url, spelling, account.password) == 429


async def test_a_spoofed_forwarded_for_buys_nothing_from_an_untrusted_peer(
    tree: Tree, http: aiohttp.ClientSession
) -> None:
    """The tree's own gateways trust no proxy: each guess naming a new address is
    still counted under the peer's."""
    account = await sign_up_and_log_in(http)
    fresh = addresses()
    statuses = [
        await login_status(tree.base_url, account.username, "guess-123", xff(next(fresh)))
        for _ in range(7)
    ]
    assert statuses == [401] * 5 + [429] * 2, statuses


# -- the owner is never locked out by someone else's failures -------------------------------


async def test_a_spray_from_many_addresses_does_not_lock_out_a_known_device(
    proxied: tuple[str, str],
) -> None:
    a, b = proxied
    owner_address, attackers, strangers = "192.0.2.10", addresses(), addresses()
    name, password = unique_name(), "pw-" + uuid.uuid4().hex
    owner = aiohttp.ClientSession(base_url=a, cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with owner:
        body = {"username": name, "password": password, "nickname": "Owner"}
        async with owner.post("/api/v1/users", json=body, headers=xff(owner_address)) as r:
            assert r.status == 201
        credentials = {"username": name, "password": password}
        async with owner.post("/api/v1/login", json=credentials, headers=xff(owner_address)) as r:
            assert r.status == 200
            assert "userhub_device" in r.cookies, "a known-device cookie"
        # The attacker: one guess from each of many addresses, over both gateways.
        statuses = [
            await login_status((a, b)[i % 2], name, f"guess-{i}", xff(next(attackers)))
            for i in range(ACCOUNT_LIMIT + 5)
        ]
        assert statuses == [401] * ACCOUNT_LIMIT + [429] * 5, statuses
        # Even the right password from a client the account never logged in from waits.
        assert await login_status(b, name, password, xff(next(strangers))) == 429
        # The owner's device, from the owner's address, on either gateway, logs in.
        for url in (a, b):
            async with owner.post(
                f"{url}/api/v1/login", json=credentials, headers=xff(owner_address)
            ) as r:
                assert r.status == 200, await r.text()
        # The same cookie from the attacker's side is the pair limit, not a free pass.
        cookies = {c.key: c.value for c in owner.cookie_jar}
    thief = aiohttp.ClientSession(base_url=b, cookies={"userhub_device": cookies["userhub_device"]})
    async with thief:
        thief_statuses = []
        for i in range(7):
            async with thief.post(
                "/api/v1/login",
                json={"username": name, "password": f"stolen-{i}"},
                headers=xff(next(attackers)),
            ) as r:
                thief_statuses.append(r.status)
    assert thief_statuses == [401] * 5 + [429] * 2, thief_statuses


# -- sign-up --------------------------------------------------------------------------------


async def test_sign_ups_are_counted_per_client_before_the_hash(proxied: tuple[str, str]) -> None:
    a, b = proxied
    fresh = addresses()
    here, elsewhere = next(fresh), next(fresh)

    async def sign_up(url: str, address: str) -> aiohttp.ClientResponse:
        body = {"username": unique_name(), "password": "long-enough-1", "nickname": "N"}
        async with (
            aiohttp.ClientSession(base_url=url) as s,
            s.post("/api/v1/users", json=body, headers=xff(address)) as r,
        ):
            await r.read()
            return r

    # Ten at once from one address, over two gateways: the limit's worth get a hash.
    answers = await asyncio.gather(*(sign_up((a, b)[i % 2], here) for i in range(10)))
    statuses = sorted(r.status for r in answers)
    assert statuses == [201] * SIGNUP_LIMIT + [429] * (10 - SIGNUP_LIMIT), statuses
    refused = next(r for r in answers if r.status == 429)
    assert 1 <= int(refused.headers["Retry-After"]) <= 600
    # Bad input costs no hash and is not counted against anyone: 422 as ever.
    async with (
        aiohttp.ClientSession(base_url=a) as s,
        s.post(
            "/api/v1/users",
            json={"username": "x", "password": "p", "nickname": "N"},
            headers=xff(elsewhere),
        ) as r,
    ):
        assert r.status == 422
    assert (await sign_up(a, elsewhere)).status == 201
    # The page says so too, with Retry-After, and keeps what was typed.
    async with aiohttp.ClientSession(base_url=b, cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        token = await page_token(s, "/signup")
        name = unique_name()
        form = {"csrf_token": token, "username": name, "password": "long-enough-1", "nickname": "N"}
        async with s.post("/signup", data=form, headers=xff(here)) as r:
            assert r.status == 429
            assert int(r.headers["Retry-After"]) >= 1
            html = await r.text()
    assert "Too many sign-ups from this address, try again in" in html
    assert f'value="{name}"' in html


# -- no cache_worker: each gateway's own table ----------------------------------------------


async def test_without_cache_workers_each_gateway_still_holds_its_limit(
    tree: Tree, http: aiohttp.ClientSession, proxied: tuple[str, str]
) -> None:
    """Runs last in this module: it stops the cache_workers and waits for them back."""
    account = await sign_up_and_log_in(http)
    tree.ctl("stop", "cache_worker:*")
    try:
        await asyncio.to_thread(
            wait_until, lambda: not tree.workers("cache_worker").workers, 15, "no cache_worker"
        )
        per_gateway = await asyncio.gather(
            *(
                asyncio.gather(
                    *(login_status(url, account.username, f"wrong-{i}") for i in range(10))
                )
                for url in proxied
            )
        )
    finally:
        tree.ctl("start", "cache_worker:*")
        await asyncio.to_thread(wait_until, tree.all_ready, 60, "the tree ready again")
    for statuses in per_gateway:
        assert sorted(statuses) == [401] * 5 + [429] * 5, per_gateway
