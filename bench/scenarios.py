"""What each benchmark scenario sends, built from a small picklable spec.

A spec is a dict: ``scenario`` (hello, floor, profile_cached, profile_uncached,
login, nickname), ``host``, ``port``, ``seconds``, plus ``rate``/``connections`` for
open loop or ``concurrency`` for closed loop, and ``users`` / ``tokens`` where the
scenario needs them. Each load process builds its own request factory from it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from pathlib import Path

from actors.runtime.env import var_dir
from bench.httpclient import build_request

BENCH_PASSWORD = "bench-password-1"
TOKENS_FILE = var_dir() / "bench" / "tokens.txt"
CACHED_USERS = 1000  # the original benchmark read the same 1,000 users


def username_of(i: int) -> str:
    return f"bench_{i:08d}"


def bench_token(seed: int, n: int) -> str:
    raw = hashlib.sha256(f"userhub-bench:{seed}:{n}".encode()).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def load_tokens(path: Path = TOKENS_FILE) -> list[str]:
    return [line for line in path.read_text().splitlines() if line]


def request_factory(spec: dict[str, object], index: int, processes: int):  # type: ignore[no-untyped-def]
    scenario = str(spec["scenario"])
    host = f"{spec['host']}:{spec['port']}"
    if scenario in ("hello", "floor"):
        raw = build_request("GET", "/", host)
        return lambda i: raw
    if scenario == "login":
        users = int(spec["users"])  # type: ignore[call-overload]
        rng = random.Random(index)

        def login(i: int) -> bytes:
            body = json.dumps(
                {"username": username_of(rng.randrange(users)), "password": BENCH_PASSWORD}
            ).encode()
            return build_request(
                "POST", "/api/v1/login", host,
                headers={"Content-Type": "application/json"}, body=body,
            )  # fmt: skip

        return login
    tokens = load_tokens(Path(str(spec.get("tokens", TOKENS_FILE))))
    if scenario == "profile_cached":
        tokens = tokens[:CACHED_USERS]
    # Each process walks its own slice so uncached reads never repeat a user.
    tokens = tokens[index::processes] or tokens
    requests = [
        build_request("GET", "/api/v1/profile", host, headers={"Authorization": f"Bearer {t}"})
        for t in tokens
    ]
    if scenario in ("profile_cached", "profile_uncached"):
        return lambda i: requests[i % len(requests)]
    if scenario == "nickname":

        def nickname(i: int) -> bytes:
            token = tokens[i % len(tokens)]
            body = json.dumps({"nickname": f"nick {index}-{i}"}).encode()
            return build_request(
                "PUT", "/api/v1/profile/nickname", host,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                body=body,
            )  # fmt: skip

        return nickname
    raise ValueError(f"unknown scenario {scenario!r}")
