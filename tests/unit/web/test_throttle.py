"""actors.web.throttle: keys in the accounts' normal form, counting before judging,
the device-cookie exemption, settling, sign-ups, uploads and the local fallback.

The cache_worker is stood in for by :class:`FakeCache`, which keeps its counters in
a LocalCounters of its own (the same rules as the Redis script) and yields to the
event loop before answering, so concurrent attempts really interleave.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import cast
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from actors.runtime.leasing import WorkerPool
from actors.web.device_cookie import DeviceCookies
from actors.web.throttle import Counters, Policy, Throttles, account_key
from actors.web.throttle_local import LocalCounters
from actors.wire import messages
from actors.wire.errors import NoWorker, Throttled

POLICY = Policy(
    login_per_pair=5,
    login_per_address=100,
    login_per_account=50,
    login_window_s=60,
    login_backoff_cap_s=900,
    signups_per_address=3,
    signup_window_s=600,
    uploads_per_user=4,
    upload_window_s=3600,
    trusted_proxies=(),
)


class FakeCache:
    """Answers throttle requests as a cache_worker would, or fails like a missing one."""

    def __init__(self) -> None:
        self.store = LocalCounters()
        self.down = False
        self.sent: list[messages.Message] = []

    async def call(
        self, message: messages.Message, *, deadline: float, trace_id: str, retry: bool = True
    ) -> messages.Message:
        assert not retry, "a count or a refund is never sent twice"
        self.sent.append(message)
        await asyncio.sleep(0)
        if self.down:
            raise NoWorker("no cache_worker answered")
        match message:
            case messages.ThrottleAttempt(rules=rules):
                wait_s = self.store.attempt(rules)
                return messages.ThrottleAnswer(retry_after_ms=round(wait_s * 1000))
            case messages.ThrottleSettle(forget=forget, refund=refund):
                self.store.settle(forget, refund)
                return messages.Ack()
        raise AssertionError(f"unexpected {message!r}")


DEVICES = DeviceCookies(b"d" * 32, secure=False, max_age_s=86400)


def throttles(cache: FakeCache, policy: Policy = POLICY) -> Throttles:
    return Throttles(policy, Counters(cast(WorkerPool, cache), LocalCounters()), DEVICES)


def request(address: str = "198.51.100.1", device: str | None = None) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (address, 40000) if name == "peername" else default
    )
    headers = {"Cookie": f"userhub_device={device}"} if device else {}
    return make_mocked_request("POST", "/api/v1/login", headers=headers, transport=transport)


async def log_in_fails(t: Throttles, name: str, address: str = "198.51.100.1") -> bool:
    """One wrong password: True if it was let through to be judged, False if throttled."""
    try:
        await t.login_attempt(request(address), name, "t")
    except Throttled:
        return False
    return True


# -- keys: the normal form accounts use -----------------------------------------------------


@pytest.mark.parametrize("spelling", ["alice", "ALICE", " Alice ", "ａｌｉｃｅ", "ＡLiｃe"])
def test_every_spelling_of_a_name_is_one_key(spelling: str) -> None:
    assert account_key(spelling) == "alice"


def test_names_that_are_not_valid_get_keys_too() -> None:
    keys = {account_key(raw) for raw in ("a", "A", "ａ", " a ")}
    assert len(keys) == 1, "folded like valid names"
    (key,) = keys
    assert key.startswith("~") and len(key) == 33, "hashed: bounded, no separators"
    assert account_key("b") != key
    assert account_key("x" * 1000).startswith("~")
    assert account_key("\ud800bad").startswith("~"), "a lone surrogate is no error"
    assert account_key("") != account_key(" "[:0] + "~")


async def test_full_width_and_mixed_spellings_share_the_ascii_count() -> None:
    t = throttles(FakeCache())
    assert [await log_in_fails(t, "alice") for _ in range(5)] == [True] * 5
    for spelling in ("ａｌｉｃｅ", "ALICE", "ａLiCe"):
        assert not await log_in_fails(t, spelling), spelling


# -- counting before judging ----------------------------------------------------------------


async def test_parallel_attempts_get_exactly_the_limit_through() -> None:
    cache = FakeCache()
    t = throttles(cache)
    results = await asyncio.gather(*(log_in_fails(t, "bob") for _ in range(20)))
    assert results.count(True) == 5 and results.count(False) == 15


async def test_without_a_cache_worker_each_gateway_stays_bounded() -> None:
    cache = FakeCache()
    cache.down = True
    gateways = [throttles(cache), throttles(cache)]
    results = await asyncio.gather(*(log_in_fails(gateways[i % 2], "bob") for i in range(40)))
    assert results.count(True) == 10, "the limit once per gateway, never more"


async def test_throttled_answers_say_how_long_and_the_wait_doubles() -> None:
    cache = FakeCache()
    t = throttles(cache)
    for _ in range(5):
        await t.login_attempt(request(), "carol", "t")
    with pytest.raises(Throttled) as caught:
        await t.login_attempt(request(), "carol", "t")
    assert caught.value.retry_after_s == 60 and caught.value.http_status == 429
    # One window later the attacker gets one more guess, then waits twice as long.
    for c in cache.store._counters.values():
        c.blocked_until = 0
    await t.login_attempt(request(), "carol", "t")
    with pytest.raises(Throttled) as caught:
        await t.login_attempt(request(), "carol", "t")
    assert caught.value.retry_after_s == 120


async def test_the_address_key_spans_accounts() -> None:
    t = throttles(FakeCache(), dataclasses.replace(POLICY, login_per_address=3))
    spray = [await log_in_fails(t, f"user{i}", "203.0.113.9") for i in range(4)]
    assert spray == [True, True, True, False]
    assert await log_in_fails(t, "user9", "203.0.113.10")


# -- settling --------------------------------------------------------------------------------


async def test_a_success_clears_the_pair_and_gives_back_its_address_and_account_attempt() -> None:
    cache = FakeCache()
    t = throttles(cache)
    for _ in range(4):
        await t.login_attempt(request(), "dave", "t")
    ok = await t.login_attempt(request(), "dave", "t")  # the fifth: the owner, right password
    await t.succeeded(ok, "t")
    keys = {rule.key for rule in ok.rules}
    assert "p:dave@198.51.100.1" in keys and "a:dave" in keys and "i:198.51.100.1" in keys
    assert "p:dave@198.51.100.1" not in cache.store._counters
    assert cache.store._counters["a:dave"].count == 4
    assert cache.store._counters["i:198.51.100.1"].count == 4
    assert [await log_in_fails(t, "dave") for _ in range(6)] == [True] * 5 + [False]


async def test_an_attempt_the_service_could_not_judge_is_taken_back() -> None:
    cache = FakeCache()
    t = throttles(cache)
    for _ in range(5):
        counted = await t.login_attempt(request(), "erin", "t")
        await t.not_judged(counted, "t")
    assert len(cache.store) == 0 and len(t.counters.local) == 0
    assert await log_in_fails(t, "erin")


async def test_settling_without_a_cache_worker_is_no_error() -> None:
    cache = FakeCache()
    t = throttles(cache)
    counted = await t.login_attempt(request(), "fay", "t")
    cache.down = True
    await t.succeeded(counted, "t")
    assert "p:fay@198.51.100.1" not in t.counters.local._counters


async def test_attempts_admitted_by_the_cache_are_remembered_locally() -> None:
    cache = FakeCache()
    t = throttles(cache)
    for _ in range(5):
        assert await log_in_fails(t, "gus")
    cache.down = True  # Redis goes away mid-attack: no fresh limits for the attacker
    assert not await log_in_fails(t, "gus")


# -- the known-device cookie -----------------------------------------------------------------


async def test_a_known_device_is_exempt_from_the_account_key_only() -> None:
    cache = FakeCache()
    t = throttles(cache)
    for i in range(50):  # a spray from 50 addresses fills the account key
        assert await log_in_fails(t, "hana", f"203.0.113.{i}")
    assert not await log_in_fails(t, "hana", "192.0.2.200"), "a new client is locked out"
    cookie = DEVICES.issue("hana")
    owner = await t.login_attempt(request("192.0.2.1", cookie), "hana", "t")
    assert "a:hana" not in {rule.key for rule in owner.rules}
    await t.succeeded(owner, "t")
    # A cookie for another account, or a forged one, is no exemption.
    for bad in (DEVICES.issue("other"), cookie[:-2] + "xx"):
        with pytest.raises(Throttled):
            await t.login_attempt(request("192.0.2.1", bad), "hana", "t")


async def test_a_stolen_device_cookie_gets_the_pair_limit_from_any_address() -> None:
    t = throttles(FakeCache())
    cookie = DEVICES.issue("ivan")
    results = []
    for i in range(7):
        try:
            await t.login_attempt(request(f"203.0.113.{i}", cookie), "ivan", "t")
            results.append(True)
        except Throttled:
            results.append(False)
    assert results == [True] * 5 + [False] * 2


async def test_remember_device_sets_a_cookie_for_the_account() -> None:
    t = throttles(FakeCache())
    response = web.Response()
    t.remember_device(response, "judy")
    assert DEVICES.nonce_for(response.cookies["userhub_device"].value, "judy") is not None


# -- sign-up and uploads ---------------------------------------------------------------------


async def test_sign_ups_are_counted_per_client_address() -> None:
    cache = FakeCache()
    t = throttles(cache)
    for _ in range(3):
        await t.sign_up_attempt(request("203.0.113.50"), "t")
    with pytest.raises(Throttled) as caught:
        await t.sign_up_attempt(request("203.0.113.50"), "t")
    assert caught.value.retry_after_s == 600
    assert "try again in 600 seconds" in caught.value.message
    await t.sign_up_attempt(request("203.0.113.51"), "t")
    # IPv6 neighbours in one /64 are one client.
    for i in range(3):
        await t.sign_up_attempt(request(f"2001:db8:0:1::{i + 1}"), "t")
    with pytest.raises(Throttled):
        await t.sign_up_attempt(request("2001:db8:0:1::ffff"), "t")


async def test_uploads_are_counted_per_user() -> None:
    cache = FakeCache()
    t = throttles(cache)
    for _ in range(4):
        await t.upload_allowed(7, "t")
    with pytest.raises(Throttled) as caught:
        await t.upload_allowed(7, "t")
    assert caught.value.retry_after_s == 3600
    await t.upload_allowed(8, "t")
    sent = cache.sent[0]
    assert isinstance(sent, messages.ThrottleAttempt)
    assert sent.rules == (
        messages.ThrottleRule(key="u:7", limit=4, window_ms=3_600_000, backoff_cap_ms=0),
    )
