"""The load a chaos run puts on the tree, recording everything it was told.

Clients behave as a careful HTTP client would: idempotent requests (profile reads)
and writes sent with an Idempotency-Key are retried on a connection failure or a
retriable answer (503, 504, 429 excluded) until their deadline; every attempt
of a write reuses its key, so a retry never applies twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

from chaos.checker import Outcome, Write

RETRIABLE_STATUS = {502, 503, 504}


@dataclass
class Account:
    username: str
    password: str
    token: str = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP attempt: monotonic start and end, status (0: no answer), what it was."""

    started: float
    ended: float
    status: int
    kind: str  # "read" or "write"


@dataclass
class Stats:
    requests: int = 0
    reads_ok: int = 0
    failed_idempotent: int = 0
    failures: list[str] = field(default_factory=list)
    errors_at: list[float] = field(default_factory=list)  # monotonic times of failures
    history: list[Write] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)  # every try, retries included


async def _send(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    deadline: float,
    attempts: list[Attempt] | None = None,
    *,
    json: object = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, object] | None, str]:
    """One logical request, retried while it may be: (status, json, error). Status 0
    means no definite answer arrived before the deadline. Each try is appended to
    ``attempts`` when given."""
    last_error = "deadline passed"
    kind = "read" if method == "GET" else "write"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return 0, None, last_error
        tried = answered = time.monotonic()
        status = 0
        try:
            async with http.request(
                method,
                url,
                timeout=aiohttp.ClientTimeout(total=remaining),
                json=json,
                headers=headers,
            ) as r:
                status = r.status
                body = await r.json(content_type=None) if r.status != 204 else None
                answered = time.monotonic()
                if r.status in RETRIABLE_STATUS:
                    last_error = f"{r.status} {body}"
                    await asyncio.sleep(0.05)
                    continue
                return r.status, body, ""
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            last_error = repr(exc)
            status, answered = 0, time.monotonic()
            await asyncio.sleep(0.05)
        finally:
            if attempts is not None:
                attempts.append(Attempt(tried, answered, status, kind))


async def prepare_accounts(base: str, count: int, http: aiohttp.ClientSession) -> list[Account]:
    """Sign up and log in ``count`` fresh users (with retries, the tree may be busy)."""
    run = uuid.uuid4().hex[:6]
    accounts = [Account(f"chaos_{run}_{i}", f"pw-{uuid.uuid4().hex}") for i in range(count)]

    async def setup(account: Account) -> None:
        deadline = time.monotonic() + 30
        body = {"username": account.username, "password": account.password, "nickname": "start"}
        status, _, error = await _send(http, "POST", f"{base}/api/v1/users", deadline, json=body)
        if status not in (201, 409):
            raise RuntimeError(f"sign up failed: {status} {error}")
        login = {"username": account.username, "password": account.password}
        status, reply, error = await _send(
            http, "POST", f"{base}/api/v1/login", deadline, json=login
        )
        if status != 200 or reply is None:
            raise RuntimeError(f"log in failed: {status} {error}")
        account.token = str(reply["token"])

    sem = asyncio.Semaphore(8)

    async def guarded(account: Account) -> None:
        async with sem:
            await setup(account)

    await asyncio.gather(*(guarded(a) for a in accounts))
    return accounts


async def client_loop(
    base: str,
    http: aiohttp.ClientSession,
    account: Account,
    stats: Stats,
    stop: asyncio.Event,
    timeout_s: float,
) -> None:
    """One user's sequential history: reads, and a unique nickname write every 4th step."""
    seq = 0
    while not stop.is_set():
        seq += 1
        deadline = time.monotonic() + timeout_s
        stats.requests += 1
        if seq % 4 == 0:
            value = f"w{seq}-{uuid.uuid4().hex[:8]}"
            headers = dict(account.auth, **{"Idempotency-Key": uuid.uuid4().hex})
            status, _, error = await _send(
                http, "PUT", f"{base}/api/v1/profile/nickname", deadline, stats.attempts,
                json={"nickname": value}, headers=headers,
            )  # fmt: skip
            outcome: Outcome = (
                "ok" if status == 200 else "indeterminate" if status == 0 else "failed"
            )
            if outcome != "ok":
                stats.errors_at.append(time.monotonic())
                stats.failures.append(f"write {account.username}: {status} {error}")
            stats.history.append(Write(account.username, value, seq, outcome))
        else:
            status, _, error = await _send(
                http, "GET", f"{base}/api/v1/profile", deadline, stats.attempts,
                headers=account.auth,
            )  # fmt: skip
            if status == 200:
                stats.reads_ok += 1
            else:
                stats.failed_idempotent += 1
                stats.errors_at.append(time.monotonic())
                stats.failures.append(f"read {account.username}: {status} {error}")


async def final_values(
    base: str, http: aiohttp.ClientSession, accounts: list[Account]
) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for account in accounts:
        status, body, _ = await _send(
            http, "GET", f"{base}/api/v1/profile", time.monotonic() + 30, headers=account.auth
        )
        out[account.username] = str(body["nickname"]) if status == 200 and body else None
    return out
