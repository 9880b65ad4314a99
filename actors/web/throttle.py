"""Throttles: log-in, sign-up and picture uploads, counted before they are judged.

Every throttled attempt is counted *before* the expensive part (the argon2 hash,
the image work), in one step that also decides whether it may go ahead: N
attempts sent at once, to any number of gateways, can never get more than a
limit's worth through (and so no more than a limit's worth of one key's attempts
are ever being judged at once, right or wrong). The counters live in Redis behind a cache_worker
(actors/cache/throttle_store.py, which explains how a key counts, blocks and
backs off), so K gateways behind one port give an attacker the limits once.
While no cache_worker answers within ``timeout_s``, each gateway's own table
decides (actors/web/throttle_local.py): then, and only then, an attacker gets up
to K times the limits.

Log-in
    Keys are made of the name's normal form, the one accounts are matched by
    (validation.normalize_username), so ``ALICE``, full-width ``ａｌｉｃｅ`` and
    ``Alice`` are one count. A name that is not valid gets a key all the same
    (its NFKC casefold, hashed): garbage names are throttled alike, and the
    answer says nothing about the rules. Each attempt counts under the (account,
    client address) pair, the address, and the account; the pair's limit is
    tight, the account's generous. Past a limit each further admitted attempt
    doubles the wait, up to ``USERHUB_LOGIN_BACKOFF_CAP_S`` (OWASP: exponential
    back-off rather than a permanent lock), and a quiet window forgets it all.
    A success forgets the pair (and a known device's key, below) and takes its
    attempt back from the address and the account, so a busy office behind one
    address is judged by its failures.
    An attempt the service could not judge (a worker or MySQL down) is taken
    back entirely: it told the client nothing.

    The account-wide key must not let anyone lock the real user out: a client
    holding a valid known-device cookie for the account (actors/web/device_cookie.py,
    issued at each successful log-in) is judged by its own nonce, with the pair's
    limit, instead of the account key. An attacker spraying from many addresses
    locks out only clients the account has never logged in from.

Sign-up
    Each sign-up that passed validation costs a hash: counted per client address
    (10 per 10 minutes by default), fixed windows, before the db_worker is asked.

Uploads
    :meth:`Throttles.upload_allowed` (and the module-level :func:`upload_allowed`
    for this process's throttles) counts picture uploads per account, fixed
    windows (20 per hour by default).

Client addresses come from actors/web/client_address.py: the socket peer, or what
a trusted proxy's ``X-Forwarded-For`` says.
"""

from __future__ import annotations

import hashlib
import math
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import structlog
from aiohttp import web

from actors.rules import validation
from actors.runtime.config import GatewayConfig
from actors.runtime.env import IpNetwork
from actors.runtime.leasing import WorkerPool
from actors.web import csrf
from actors.web.client_address import client_address, throttle_key
from actors.web.device_cookie import DeviceCookies
from actors.web.throttle_local import LocalCounters
from actors.wire import messages
from actors.wire.errors import InvalidInput, Throttled, UserhubError
from actors.wire.messages import R, Request, ThrottleRule

log = structlog.get_logger("throttle")

#: How long a throttle round trip may take before this gateway's own table decides.
SHARED_TIMEOUT_S: Final = 0.5


def account_key(raw: str) -> str:
    """The name an account is throttled under: its canonical name, valid or not."""
    try:
        return validation.normalize_username(raw)
    except InvalidInput:
        folded = unicodedata.normalize("NFKC", raw).strip().casefold()
        digest = hashlib.sha256(folded.encode("utf-8", "surrogatepass")).hexdigest()
        return "~" + digest[:32]  # "~" starts no valid name: no collision with one


def retry_after_s(wait_ms: float) -> int:
    """Whole seconds to wait, rounded up, at least 1."""
    return max(1, math.ceil(wait_ms / 1000))


@dataclass(frozen=True, slots=True)
class Counted:
    """An attempt counted under ``rules``, and what its success gives back."""

    rules: tuple[ThrottleRule, ...]
    forget_on_success: tuple[str, ...] = ()
    refund_on_success: tuple[ThrottleRule, ...] = ()


class Counters:
    """The shared counters (a cache_worker, Redis), with this gateway's table as fallback.

    Attempts the shared counters admitted are recorded in the local table too, so a
    Redis that goes away mid-attack does not hand the attacker fresh limits.
    """

    def __init__(
        self, cache: WorkerPool, local: LocalCounters, timeout_s: float = SHARED_TIMEOUT_S
    ) -> None:
        self._cache = cache
        self.local = local
        self._timeout_s = timeout_s

    async def attempt(self, rules: Sequence[ThrottleRule], trace_id: str) -> int:
        """Seconds to wait (nothing counted), or 0: counted under every key."""
        try:
            answer = await self._call(messages.ThrottleAttempt(rules=tuple(rules)), trace_id)
        except UserhubError as exc:
            log.warning("throttle_local_only", error=exc.code)
            wait_s = self.local.attempt(rules)
            return retry_after_s(wait_s * 1000) if wait_s > 0 else 0
        if answer.retry_after_ms > 0:
            return retry_after_s(answer.retry_after_ms)
        self.local.record(rules)
        return 0

    async def settle(
        self, forget: Sequence[str], refund: Sequence[ThrottleRule], trace_id: str
    ) -> None:
        if not forget and not refund:
            return
        self.local.settle(forget, refund)
        settle = messages.ThrottleSettle(forget=tuple(forget), refund=tuple(refund))
        try:
            await self._call(settle, trace_id)
        except UserhubError as exc:
            log.warning("throttle_not_settled", error=exc.code)

    async def _call(self, message: Request[R], trace_id: str) -> R:
        # Not idempotent (a count, a refund): never sent twice; a failure falls back.
        return await self._cache.call(
            message, deadline=time.time() + self._timeout_s, trace_id=trace_id, retry=False
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """The limits, from GatewayConfig (whose from_env holds every default)."""

    login_per_pair: int
    login_per_address: int
    login_per_account: int
    login_window_s: float
    login_backoff_cap_s: float
    signups_per_address: int
    signup_window_s: float
    uploads_per_user: int
    upload_window_s: float
    trusted_proxies: tuple[IpNetwork, ...]

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Policy:
        return cls(
            login_per_pair=config.login_failures_per_pair,
            login_per_address=config.login_failures_per_address,
            login_per_account=config.login_failures_per_account,
            login_window_s=config.login_window_s,
            login_backoff_cap_s=config.login_backoff_cap_s,
            signups_per_address=config.signups_per_address,
            signup_window_s=config.signup_window_s,
            uploads_per_user=config.uploads_per_user,
            upload_window_s=config.upload_window_s,
            trusted_proxies=config.trusted_proxies,
        )

    def login_rule(self, key: str, limit: int) -> ThrottleRule:
        return ThrottleRule(
            key=key,
            limit=limit,
            window_ms=_ms(self.login_window_s),
            backoff_cap_ms=_ms(self.login_backoff_cap_s),
        )


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class Throttles:
    """Every throttle of one gateway process; Services.throttle."""

    def __init__(self, policy: Policy, counters: Counters, devices: DeviceCookies) -> None:
        self.policy = policy
        self.counters = counters
        self.devices = devices

    @classmethod
    def from_config(cls, config: GatewayConfig, cache: WorkerPool) -> Throttles:
        secret = csrf.load_secret(config.common.var_dir, config.csrf_secret)
        devices = DeviceCookies(
            secret, secure=config.secure_cookies, max_age_s=config.device_cookie_max_age_s
        )
        return cls(Policy.from_config(config), Counters(cache, LocalCounters()), devices)

    def client(self, request: web.BaseRequest) -> str:
        """The client address every throttle keys on (actors/web/client_address.py)."""
        return throttle_key(client_address(request, self.policy.trusted_proxies))

    async def _count(self, counted: Counted, trace_id: str, what: str, message: str) -> Counted:
        wait_s = await self.counters.attempt(counted.rules, trace_id)
        if wait_s > 0:
            log.info("throttled", what=what, retry_after_s=wait_s)
            raise Throttled(message.format(seconds=wait_s), retry_after_s=wait_s)
        return counted

    # -- log-in -------------------------------------------------------------------------

    async def login_attempt(
        self, request: web.BaseRequest, username: str, trace_id: str
    ) -> Counted:
        """Count a log-in before its password is verified, or raise Throttled."""
        policy = self.policy
        account = account_key(username)
        address = self.client(request)
        pair = policy.login_rule(f"p:{account}@{address}", policy.login_per_pair)
        per_address = policy.login_rule(f"i:{address}", policy.login_per_address)
        nonce = self.devices.read(request, account)
        if nonce is None:
            wide = policy.login_rule(f"a:{account}", policy.login_per_account)
            forget: tuple[str, ...] = (pair.key,)
            refund: tuple[ThrottleRule, ...] = (per_address, wide)
        else:
            wide = policy.login_rule(f"d:{nonce}", policy.login_per_pair)
            forget, refund = (pair.key, wide.key), (per_address,)
        counted = Counted((pair, per_address, wide), forget, refund)
        return await self._count(
            counted, trace_id, "login", "too many failed logins, try again later"
        )

    def remember_device(self, response: web.StreamResponse, account: str) -> None:
        """After a successful log-in: the client is a known device of ``account``."""
        self.devices.set_cookie(response, account)

    # -- sign-up and uploads --------------------------------------------------------------

    async def sign_up_attempt(self, request: web.BaseRequest, trace_id: str) -> Counted:
        """Count a sign-up before its password is hashed, or raise Throttled."""
        policy = self.policy
        rule = ThrottleRule(
            key=f"s:{self.client(request)}",
            limit=policy.signups_per_address,
            window_ms=_ms(policy.signup_window_s),
        )
        return await self._count(
            Counted((rule,)),
            trace_id,
            "sign_up",
            "too many sign-ups from this address, try again in {seconds} seconds",
        )

    async def upload_allowed(self, user_id: int, trace_id: str) -> None:
        """Count a picture upload for ``user_id``, or raise Throttled."""
        policy = self.policy
        rule = ThrottleRule(
            key=f"u:{user_id}", limit=policy.uploads_per_user, window_ms=_ms(policy.upload_window_s)
        )
        await self._count(
            Counted((rule,)),
            trace_id,
            "upload",
            "too many picture uploads, try again in {seconds} seconds",
        )

    # -- settling -------------------------------------------------------------------------

    async def succeeded(self, counted: Counted, trace_id: str) -> None:
        await self.counters.settle(counted.forget_on_success, counted.refund_on_success, trace_id)

    async def not_judged(self, counted: Counted, trace_id: str) -> None:
        """The service failed to answer: the attempt is taken back under every key."""
        await self.counters.settle((), counted.rules, trace_id)
