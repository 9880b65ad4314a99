"""tools.redis_acl: the private Redis's users, and that they cover what the cache side sends."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from actors.runtime.env import REPO_ROOT
from actors.runtime.tree_config import TreeConfig
from tools import redis_acl

CACHE_SIDE = sorted((REPO_ROOT / "actors" / "cache").glob("*.py"))

# redis-py methods the cache side calls -> the Redis command each sends. A method
# missing here fails the test below: add it, and its command to USERHUB_COMMANDS.
REDIS_PY_METHODS = {
    "set": ("set",),
    "get": ("get",),
    "getex": ("getex",),
    "delete": ("del",),
    "ping": ("ping",),
    # A script runs by its hash; redis-py loads it first when Redis lacks it
    # (pipelines ask SCRIPT EXISTS before).
    "register_script": ("evalsha", "script|load", "script|exists"),
    "pipeline": (),
    "execute": (),
    "execute_command": (),  # the lean path's fallback: its commands are listed below
    "aclose": (),
    "call": (),  # Lua's redis.call: its commands are read from the script above
}


def commands_in(source: str) -> tuple[set[str], set[str]]:
    """The Redis commands ``source`` sends, and redis-py methods with no known command."""
    found: set[str] = set()
    unknown: set[str] = set()
    found |= {c.lower() for c in re.findall(r"redis\.call\('(\w+)'", source)}  # Lua
    found |= {c.lower() for c in re.findall(r"(?:execute|_read)\(\s*\"(\w+)\"", source)}
    for method in re.findall(r"(?:\bredis|_redis|\bpipe)\.(\w+)\(", source):
        if method in REDIS_PY_METHODS:
            found |= set(REDIS_PY_METHODS[method])
        else:
            unknown.add(method)
    return found, unknown


def test_the_scan_sees_each_kind_of_call() -> None:
    source = """
        redis.call('INCR', KEYS[1])
        self._fast.execute("EVALSHA", sha)
        self._read("GETEX", key)
        pipe.delete(key)
        self._redis.register_script(X)
        self._redis.hgetall(key)
    """
    found, unknown = commands_in(source)
    assert {"incr", "evalsha", "getex", "del", "script|load"} <= found
    assert unknown == {"hgetall"}


def test_every_command_the_cache_side_sends_is_granted() -> None:
    granted = set(redis_acl.USERHUB_COMMANDS)
    for path in CACHE_SIDE:
        found, unknown = commands_in(path.read_text())
        assert not unknown, f"{path.name} calls redis-py methods of unknown command: {unknown}"
        assert found <= granted, f"{path.name} sends {found - granted}, not in USERHUB_COMMANDS"


def test_nothing_dangerous_is_granted() -> None:
    granted = set(redis_acl.USERHUB_COMMANDS)
    for command in ("flushall", "flushdb", "config", "keys", "scan", "eval", "debug", "acl"):
        assert command not in granted
    assert not any(c.startswith(("script|flush", "script|kill", "client")) for c in granted)


def test_a_rule_names_passwords_only_by_their_hash() -> None:
    hashed = redis_acl.password_hash("pw-1")
    assert hashed == "#" + hashlib.sha256(b"pw-1").hexdigest()
    rule = redis_acl.userhub_rule((hashed,))
    assert "pw-1" not in rule
    assert rule.startswith("on resetpass ")
    assert "~uh:*" in rule.split() and "-@all" in rule.split()
    assert "resetchannels" in rule.split()  # no pub/sub at all


def test_the_conf_turns_eviction_off_and_the_default_user_away(tmp_path: Path) -> None:
    conf = redis_acl.render_conf(
        port=6399,
        directory=tmp_path,
        maxmemory="64mb",
        user="userhub",
        user_passwords=("user-old", "user-new"),
        admin_passwords=("admin-pw",),
    )
    lines = conf.splitlines()
    assert "maxmemory-policy noeviction" in lines
    assert "bind 127.0.0.1" in lines and "port 6399" in lines and "maxmemory 64mb" in lines
    assert "user default off resetpass resetkeys resetchannels -@all" in lines
    userhub = next(line for line in lines if line.startswith("user userhub "))
    assert redis_acl.password_hash("user-old") in userhub  # both, during a rotation
    assert redis_acl.password_hash("user-new") in userhub
    admin = next(line for line in lines if line.startswith("user admin "))
    assert redis_acl.password_hash("admin-pw") in admin and "+@all" in admin
    for secret in ("user-old", "user-new", "admin-pw"):
        assert secret not in conf


def test_the_acl_user_is_the_one_the_url_names() -> None:
    assert redis_acl.tree_user(TreeConfig.from_env({"USERHUB_REDIS_PORT": "6390"})) == "userhub"
    own = TreeConfig.from_env({"USERHUB_REDIS_URL": "redis://cachesvc@10.0.0.9:6379/0"})
    assert redis_acl.tree_user(own) == "cachesvc"


def test_tools_reach_the_private_redis_as_admin(tmp_path: Path) -> None:
    env = {"USERHUB_VAR": str(tmp_path), "USERHUB_REDIS_PORT": "6391"}
    tree = TreeConfig.from_env(env)
    tree.secrets.directory.mkdir()
    tree.secrets.redis_admin.write_text("adm\n")
    target = redis_acl.admin_target(tree)
    assert (target.url, target.username, target.password) == (
        "redis://127.0.0.1:6391/0",
        "admin",
        "adm",
    )
    # With a Redis of one's own there is no admin password here: the tree's own account.
    tree.secrets.redis.write_text("svc\n")
    own = TreeConfig.from_env({**env, "USERHUB_REDIS_URL": "redis://svc@cache:6379/0"})
    target = redis_acl.admin_target(own)
    assert (target.url, target.username, target.password) == (
        "redis://svc@cache:6379/0",
        "svc",
        "svc",
    )


def test_the_docs_give_the_rule_the_private_redis_uses() -> None:
    """docs/security.md tells operators of their own Redis the exact ACL line."""
    doc = (REPO_ROOT / "docs" / "security.md").read_text()
    rule = redis_acl.userhub_rule(("#SHA256_OF_THE_PASSWORD",))
    assert f"ACL SETUSER userhub {rule}" in doc
