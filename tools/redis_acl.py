"""Who may do what on the private Redis: its ACL users and the config file that sets them.

Three users:

* ``default`` is off: a connection that has not authenticated gets ``NOAUTH``;
* ``userhub`` (the user the tree's URL names) runs only the commands the cache
  workers send, directly or from their Lua scripts (USERHUB_COMMANDS), and only on
  keys under ``uh:``; no pub/sub channels;
* ``admin`` may do anything: set-up, the rotation, benchmarks (FLUSHDB) and tests.
  No actor knows its password.

The config file is what supervisord starts redis-server with: the settings that
used to be its command line plus the ``user`` lines, so no password (not even a
hash) appears in any process's command line. Passwords are given to Redis as
their SHA-256 (``#<hex>``), so the file holds no password itself.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from actors.runtime.stores import RedisTarget, read_password
from actors.runtime.tree_config import TreeConfig

ADMIN_USER = "admin"
DEFAULT_USER = "userhub"  # when the tree's URL names none
KEY_PATTERN = "uh:*"

#: Every command a cache worker sends to Redis, directly or from a script (Redis
#: checks commands run by EVALSHA against the caller's ACL too). A command added
#: to actors/cache/ must be added here; tests/integration/test_lockdown.py fails on
#: any command the tree's own traffic gets refused (ACL LOG).
USERHUB_COMMANDS = (
    "get",  # profiles (redis_fast, profile_cache), the boot epoch (Lua)
    "getex",  # a session read slides its idle expiry
    "set",  # fills (NX), tombstones, set-if-newer, the boot epoch (Lua)
    "del",  # repair after a cut, settled throttle counts (Lua)
    "exists",  # throttle counts (Lua)
    "hget",  # throttle counts: a hash per key, count and blocked-until (Lua)
    "hset",
    "hincrby",
    "hdel",
    "pexpire",  # the throttle window starts with the first failure (Lua)
    "pttl",  # how long until a throttle lifts (Lua)
    "time",  # Redis's clock, for session fills and throttles (Lua)
    "evalsha",  # every script runs by its hash
    "script|load",  # redis-py loads a script Redis does not know yet
    "script|exists",  # ... and asks first, before a pipeline
    "ping",  # the breaker's probe and redis-py's health check
    "select",  # a URL naming another database than 0
)


def password_hash(password: str) -> str:
    """How an ACL rule names a password without containing it: ``#<sha256 hex>``."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def userhub_rule(password_hashes: tuple[str, ...]) -> str:
    """The ACL rule of the user the actors connect as (after ``user <name>``)."""
    commands = " ".join(f"+{c}" for c in USERHUB_COMMANDS)
    secrets = " ".join(password_hashes)
    return f"on resetpass {secrets} resetchannels resetkeys ~{KEY_PATTERN} -@all {commands}"


def admin_rule(password_hashes: tuple[str, ...]) -> str:
    return f"on resetpass {' '.join(password_hashes)} ~* &* +@all"


def render_conf(
    *,
    port: int,
    directory: Path,
    maxmemory: str,
    user: str,
    user_passwords: tuple[str, ...],
    admin_passwords: tuple[str, ...],
) -> str:
    """redis.conf for the private Redis.

    ``maxmemory-policy noeviction``: a full Redis refuses new writes rather than
    dropping keys, because the keys it would drop include logout tombstones and
    failed-login counters. Every key userhub writes has a TTL, so memory is bounded
    by what is live; docs/security.md says what a full cache means.

    Each user accepts any of its passwords: two only while a rotation is under way.
    """
    admin_hashes = tuple(password_hash(p) for p in admin_passwords)
    user_hashes = tuple(password_hash(p) for p in user_passwords)
    return "\n".join(
        [
            "# Made by tools.secrets from the tree's settings and passwords; remade at",
            "# every start: edit the settings (USERHUB_REDIS_*), not this file.",
            f"port {port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            'save ""',
            "appendonly no",
            f'dir "{directory}"',
            f"maxmemory {maxmemory}",
            "maxmemory-policy noeviction",
            "maxclients 10000",
            "daemonize no",
            "user default off resetpass resetkeys resetchannels -@all",
            f"user {ADMIN_USER} {admin_rule(admin_hashes)}",
            f"user {user} {userhub_rule(user_hashes)}",
            "",
        ]
    )


def tree_user(tree: TreeConfig) -> str:
    """The ACL user the tree's actors connect as: the one their URL names."""
    return RedisTarget.parse(tree.redis_url).username or DEFAULT_USER


def admin_target(tree: TreeConfig) -> RedisTarget:
    """How tools reach Redis with every right: the private server as ``admin``.

    Against a Redis of one's own (no admin password file), the tree's own URL and
    credentials, which then need whatever the tool asks (FLUSHDB for the benchmark,
    INFO for chaos runs).
    """
    password = read_password(tree.secrets.redis_admin)
    if not tree.start_redis or password is None:
        return RedisTarget.parse(tree.redis_url, tree.secrets.redis)
    return RedisTarget(
        url=f"redis://127.0.0.1:{tree.redis_port}/0", username=ADMIN_USER, password=password
    )
