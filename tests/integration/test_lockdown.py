"""MariaDB and Redis locked down, tried against a real tree: what each account may not do.

The tree's accounts are tried the way an intruder holding them (or holding
nothing) would: the MySQL service account against other databases, DDL and other
sessions; Redis without a password and as the actors' user against commands and
keys beyond its own; the processes' command lines and environments for the
passwords; a full Redis for stale answers. The rotation test rotates a tree of
its own under load and tries the old passwords afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pymysql
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from actors.cache.profile_cache import BOOT_KEY
from actors.rules.tokens import hash_token
from actors.runtime.stores import MysqlDsn
from tests.integration.conftest import sign_up_and_log_in, unique_name
from tests.integration.tree import PYTHON, ROOT, Tree, running_tree
from tools import dbsetup, redis_acl, secrets
from tools.private_tree import PrivateTree

pytestmark = pytest.mark.integration

DENIED = (pymysql.err.OperationalError, pymysql.err.ProgrammingError)


def service_dsn(tree: Tree) -> MysqlDsn:
    return MysqlDsn.from_env(tree.env)


def mysql_as(tree: Tree, password: str | None = None, user: str = "") -> pymysql.Connection:
    dsn = service_dsn(tree)
    return pymysql.connect(
        host=dsn.host,
        port=tree.config.mysql_port,
        user=user or dsn.user,
        password=dsn.password if password is None else password,
        database=dsn.database if not user else None,
        connect_timeout=5,
        autocommit=True,
    )


def mysql_admin(tree: Tree) -> pymysql.Connection:
    return dbsetup.admin_connect(dbsetup.socket_path(tree.env))


def redis_as(tree: Tree, username: str | None, password: str | None) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=tree.config.redis_port,
        username=username,
        password=password,
        driver_info=None,
        socket_timeout=5,
    )


def redis_admin(tree: Tree) -> redis.Redis:
    target = redis_acl.admin_target(tree.config)
    return redis.Redis.from_url(target.url, username=target.username, password=target.password)


def redis_service(tree: Tree) -> redis.Redis:
    return redis_as(tree, "userhub", secrets.read_secret(tree.config.secrets.redis))


def passwords(tree: Tree) -> list[str]:
    files = tree.config.secrets
    return [secrets.read_secret(p) for p in (files.mysql, files.redis, files.redis_admin)]


def raw_redis(port: int, *commands: bytes) -> list[bytes]:
    """Each command's first reply line, on one plain connection that never authenticates."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        replies = []
        stream = conn.makefile("rb")
        for command in commands:
            conn.sendall(command + b"\r\n")
            replies.append(stream.readline().rstrip())
        return replies


# -- where the passwords are, and where they are not ----------------------------------------


def test_secret_files_are_0600_in_a_0700_directory(tree: Tree) -> None:
    files = tree.config.secrets
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700
    for path in (files.mysql, files.redis, files.redis_admin, files.redis_conf):
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600, path
        assert info.st_uid == os.geteuid()
    # The repository's var/ (where `make run` keeps them) is never committed.
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "var/secrets/mysql-userhub.password"], cwd=ROOT
    )
    assert ignored.returncode == 0


def test_no_password_on_any_command_line_or_in_any_environment(tree: Tree) -> None:
    secret_values = [p.encode() for p in passwords(tree)]
    # The processes carrying the tree's USERHUB_VAR, and every program supervisord
    # runs (redis-server writes its title over its environment, so it is found here).
    programs = {pid for state, pid in tree.status().values() if state == "RUNNING"}
    pids = sorted(set(tree._ours()) | programs)
    commands = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids}
    names = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids}
    assert "redis-server" in names.values() and "mariadbd" in names.values()
    assert len(pids) >= 9  # supervisord, both servers, 7 actors at least
    for pid in pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        for value in secret_values:
            assert value not in commands[pid], (names[pid], commands[pid])
            assert value not in environ, names[pid]
    with redis_admin(tree) as admin:  # its settings and users came from the file
        assert admin.info("server")["config_file"] == str(tree.config.secrets.redis_conf)


# -- MySQL: the service account ---------------------------------------------------------------


def test_the_service_account_holds_four_privileges_on_its_database(tree: Tree) -> None:
    with mysql_as(tree) as conn, conn.cursor() as cur:
        cur.execute("SHOW GRANTS")
        grants = [row[0] for row in cur.fetchall()]
    assert len(grants) == 2, grants
    assert grants[0].startswith("GRANT USAGE ON *.* TO `userhub`@")
    assert grants[1].startswith("GRANT SELECT, INSERT, UPDATE, DELETE ON `userhub`.* TO ")
    assert "WITH GRANT OPTION" not in " ".join(grants)
    with mysql_admin(tree) as admin:
        for host in dbsetup.ACCOUNT_HOSTS:
            assert dbsetup.privileges(admin, "userhub", host) == {
                ("schema", "userhub", p) for p in ("SELECT", "INSERT", "UPDATE", "DELETE")
            }


def test_the_service_account_sees_no_other_session(tree: Tree) -> None:
    with mysql_admin(tree) as admin, admin.cursor() as admin_cur:
        admin_cur.execute("SELECT CONNECTION_ID()")
        (admin_id,) = admin_cur.fetchone()
        with mysql_as(tree) as conn, conn.cursor() as cur:
            cur.execute("SHOW FULL PROCESSLIST")
            rows = cur.fetchall()
            cur.execute("SELECT ID, USER FROM information_schema.PROCESSLIST")
            listed = cur.fetchall()
        assert rows and {row[1] for row in rows} == {"userhub"}
        assert admin_id not in {row[0] for row in rows}
        assert {row[1] for row in listed} == {"userhub"}
        with mysql_as(tree) as conn, conn.cursor() as cur, pytest.raises(DENIED) as refused:
            cur.execute(f"KILL {admin_id}")
        # "Unknown thread": without PROCESS another account's session is not even there.
        assert refused.value.args[0] in (1094, 1095), refused.value.args
        admin_cur.execute("SELECT 1")  # and it was not killed


@pytest.mark.parametrize(
    ("statement", "code"),
    [
        ("SELECT user, host FROM mysql.user", 1142),
        ("SELECT * FROM mysql.global_priv", 1142),
        ("CREATE TABLE userhub.stolen (x INT)", 1142),
        ("DROP TABLE userhub.users", 1142),
        ("ALTER TABLE userhub.users ADD COLUMN x INT", 1142),
        ("CREATE DATABASE other", 1044),
        ("USE mysql", 1044),
        ("GRANT SELECT ON userhub.* TO 'someone'@'%'", 1044),
        ("CREATE USER 'someone'@'%' IDENTIFIED BY 'x'", 1227),
        ("SET GLOBAL max_connections = 1", 1227),
        ("SELECT * FROM userhub.users INTO OUTFILE '/tmp/userhub-stolen.txt'", 1227),
        ("SELECT LOAD_FILE('/etc/passwd') IS NULL", None),  # FILE missing: always NULL
        ("CREATE TEMPORARY TABLE userhub.scratch (x INT)", 1044),
    ],
)
def test_the_service_account_cannot(tree: Tree, statement: str, code: int | None) -> None:
    with mysql_as(tree) as conn, conn.cursor() as cur:
        if code is None:
            cur.execute(statement)
            assert cur.fetchone() == (1,)
            return
        with pytest.raises(DENIED) as refused:
            cur.execute(statement)
    assert refused.value.args[0] == code, refused.value.args
    assert not Path("/tmp/userhub-stolen.txt").exists()


def test_mysql_refuses_a_login_without_the_password(tree: Tree) -> None:
    for password in ("", "userhub", "wrong-" + passwords(tree)[0]):
        with pytest.raises(pymysql.err.OperationalError) as refused:
            mysql_as(tree, password=password)
        assert refused.value.args[0] == 1045, password
    # The administrator exists only over the socket, as the OS user: not over TCP.
    for user in ("root", "mariadb.sys", dbsetup.socket_user()):
        with pytest.raises(pymysql.err.OperationalError) as refused:
            mysql_as(tree, password="", user=user)
        assert refused.value.args[0] == 1045, user


def test_the_private_servers_listen_on_loopback_only(tree: Tree) -> None:
    with redis_admin(tree) as admin:
        assert admin.config_get("bind")["bind"] == "127.0.0.1"
        assert admin.config_get("protected-mode")["protected-mode"] == "yes"
    with mysql_admin(tree) as conn, conn.cursor() as cur:
        cur.execute("SELECT @@bind_address")
        assert cur.fetchone() == ("127.0.0.1",)


def test_bootstrap_brings_an_account_of_the_old_set_up_to_least_privilege(
    tree: Tree, tmp_path: Path
) -> None:
    """The account an older bootstrap made (fixed password, every privilege on the
    database, PROCESS) is what `make run` meets on an existing data directory."""
    user = "legacy" + unique_name("")[:6]
    password_file = tmp_path / "pw"
    new_password = secrets.new_password()
    secrets.write_private(password_file, new_password + "\n")
    env = dict(
        tree.env,
        USERHUB_MYSQL_DSN=f"mysql://{user}@127.0.0.1:{tree.config.mysql_port}/userhub",
        USERHUB_MYSQL_PASSWORD_FILE=str(password_file),
    )
    with mysql_admin(tree) as admin, admin.cursor() as cur:
        for host in dbsetup.ACCOUNT_HOSTS:
            cur.execute(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY 'userhub'")
            cur.execute(f"GRANT ALL PRIVILEGES ON `userhub`.* TO '{user}'@'{host}'")
        cur.execute(f"GRANT PROCESS ON *.* TO '{user}'@'127.0.0.1'")
    try:
        command = [PYTHON, "-m", "tools.dbsetup", "bootstrap"]
        first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=60)
        assert first.returncode == 0, first.stderr.decode()
        assert f"set privileges of {user}@127.0.0.1" in first.stdout.decode()
        again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=60)
        assert again.returncode == 0 and b"set privileges" not in again.stdout  # idempotent
        with mysql_admin(tree) as admin:
            for host in dbsetup.ACCOUNT_HOSTS:
                assert dbsetup.privileges(admin, user, host) == dbsetup.wanted_privileges("userhub")
        with pytest.raises(pymysql.err.OperationalError):
            mysql_as(tree, password="userhub", user=user)
        with mysql_as(tree, password=new_password, user=user) as conn, conn.cursor() as cur:
            cur.execute("SHOW PROCESSLIST")
            assert {row[1] for row in cur.fetchall()} == {user}  # PROCESS is gone
    finally:
        with mysql_admin(tree) as admin, admin.cursor() as cur:
            for host in dbsetup.ACCOUNT_HOSTS:
                cur.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")


# -- Redis ------------------------------------------------------------------------------------


def test_redis_refuses_anyone_who_has_not_authenticated(tree: Tree) -> None:
    port = tree.config.redis_port
    replies = raw_redis(
        port,
        b"PING",
        b"GET uh:u:1",
        b"AUTH anything",  # the default user is off, whatever the password
        b"AUTH default anything",
        b"AUTH userhub wrong",
        b"AUTH admin wrong",
        b"CONFIG GET maxmemory-policy",
    )
    assert replies[0].startswith(b"-NOAUTH"), replies
    assert replies[1].startswith(b"-NOAUTH"), replies
    assert all(r.startswith(b"-WRONGPASS") for r in replies[2:6]), replies
    assert replies[6].startswith(b"-NOAUTH"), replies


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "GET", "*"),
        ("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"),
        ("KEYS", "*"),
        ("KEYS", "uh:*"),
        ("SCAN", "0"),
        ("ACL", "LIST"),
        ("ACL", "SETUSER", "userhub", "+@all"),
        ("INFO",),
        ("SHUTDOWN",),
        ("MONITOR",),
        ("CLIENT", "LIST"),
        ("EVAL", "return 1", "0"),
        ("SCRIPT", "FLUSH"),
        ("PUBLISH", "uh:x", "1"),
        ("SUBSCRIBE", "uh:x"),
        ("MIGRATE", "127.0.0.1", "1", "uh:u:1", "0", "1"),
        ("REPLICAOF", "127.0.0.1", "1"),
        ("EXPIRE", "uh:u:1", "1"),
        ("PERSIST", "uh:u:1"),
    ],
)
def test_the_actors_redis_user_cannot_run(tree: Tree, command: tuple[str, ...]) -> None:
    with redis_service(tree) as client, pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)


def test_the_actors_redis_user_touches_only_uh_keys(tree: Tree) -> None:
    key = f"uh:test:{unique_name()}"
    with redis_service(tree) as client, redis_admin(tree) as admin:
        try:
            touch_only_uh_keys(client, admin, key)
        finally:
            admin.delete("other:secret", key)


def touch_only_uh_keys(client: redis.Redis, admin: redis.Redis, key: str) -> None:
    """``client`` (the actors' user) reads and writes ``key``, nothing outside uh:*."""
    assert client.set(key, b"1", ex=60)
    assert client.get(key) == b"1"
    admin.set("other:secret", b"x", ex=60)
    operations: list[Callable[[], object]] = [
        lambda: client.get("other:secret"),
        lambda: client.set("other:secret", b"mine", ex=60),
        lambda: client.delete("other:secret"),
        lambda: client.getex("other:secret", ex=1),
    ]
    for operation in operations:
        with pytest.raises(redis.exceptions.NoPermissionError):
            operation()
    # Nor through a script: Redis checks what a script touches against the caller.
    sneaky = client.register_script("return redis.call('GET', ARGV[1])")
    with pytest.raises(redis.exceptions.ResponseError, match="can't access"):
        sneaky(keys=[], args=["other:secret"])
    dangerous = client.register_script("return redis.call('FLUSHALL')")
    with pytest.raises(redis.exceptions.ResponseError, match="can't run this command"):
        dangerous(keys=[], args=[])
    assert admin.get("other:secret") == b"x"
    assert admin.dbsize() > 0


def test_redis_never_evicts(tree: Tree) -> None:
    with redis_admin(tree) as admin:
        assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert admin.info("memory")["maxmemory_policy"] == "noeviction"
        assert int(admin.config_get("maxmemory")["maxmemory"]) > 0  # and is bounded


async def test_the_trees_own_traffic_is_never_refused_and_every_key_expires(
    tree: Tree, http: aiohttp.ClientSession
) -> None:
    """Every flow, then ACL LOG: the actors' user was granted all that they sent."""
    with redis_admin(tree) as admin:
        admin.execute_command("ACL", "LOG", "RESET")
        account = await sign_up_and_log_in(http)
        for _ in range(2):  # a miss that fills, then a hit
            async with http.get("/api/v1/profile", headers=account.auth) as r:
                assert r.status == 200
        async with http.put(
            "/api/v1/profile/nickname", json={"nickname": "Locked"}, headers=account.auth
        ) as r:
            assert r.status == 200
        for _ in range(3):  # failed logins are counted in Redis (uh:t:*)
            async with http.post(
                "/api/v1/login", json={"username": account.username, "password": "wrong-pw-1"}
            ) as r:
                assert r.status == 401
        async with http.post(
            "/api/v1/login", json={"username": account.username, "password": account.password}
        ) as r:
            assert r.status == 200  # clears the pair's count
        async with http.post("/api/v1/logout", headers=account.auth) as r:
            assert r.status == 204
        async with http.get("/api/v1/profile", headers=account.auth) as r:
            assert r.status == 401
        refused = [  # a refused command or key; failed AUTHs are other tests' doing
            entry
            for entry in admin.acl_log()
            if entry["username"] == redis_acl.tree_user(tree.config) and entry["reason"] != "auth"
        ]
        assert refused == [], refused
        keys = list(admin.scan_iter(count=1000))
        assert any(k.startswith(b"uh:s:") for k in keys) and any(
            k.startswith(b"uh:th:") for k in keys
        )
        for key in keys:
            assert key.startswith(b"uh:"), key
            if key == BOOT_KEY.encode():
                continue  # this Redis's epoch: one small key, kept for as long as the data
            assert admin.ttl(key) > 0, f"{key!r} has no expiry"


async def test_a_full_redis_serves_nothing_stale(tree: Tree, http: aiohttp.ClientSession) -> None:
    """noeviction: a full Redis refuses writes; a refused profile refresh drops the
    cached copy, so reads come from MySQL and stay right, and a tombstone is written
    regardless."""
    account = await sign_up_and_log_in(http, nickname="Before")
    for _ in range(2):  # cached: session and profile
        async with http.get("/api/v1/profile", headers=account.auth) as r:
            assert (await r.json())["nickname"] == "Before"
    with redis_admin(tree) as admin:
        limit = admin.config_get("maxmemory")["maxmemory"]
        admin.config_set("maxmemory", "1")  # anything more is over it: every SET is refused
        try:
            with redis_service(tree) as client, pytest.raises(redis.exceptions.OutOfMemoryError):
                client.set(f"uh:test:{unique_name()}", b"x", ex=60)
            async with http.put(
                "/api/v1/profile/nickname", json={"nickname": "After"}, headers=account.auth
            ) as r:
                assert r.status == 200
            for _ in range(3):
                async with http.get("/api/v1/profile", headers=account.auth) as r:
                    assert r.status == 200
                    assert (await r.json())["nickname"] == "After"
            other = await sign_up_and_log_in(http)  # logins need no Redis write
            async with http.get("/api/v1/profile", headers=other.auth) as r:
                assert r.status == 200  # a miss whose fill is refused: served from MySQL
            async with http.post("/api/v1/logout", headers=account.auth) as r:
                assert r.status == 204
            # The tombstone is written all the same: its script is exempt (allow-oom).
            token_hash = hash_token(account.token)
            assert admin.get(f"uh:s:{token_hash}") == b"revoked"
            for _ in range(3):
                async with http.get("/api/v1/profile", headers=account.auth) as r:
                    assert r.status == 401
        finally:
            admin.config_set("maxmemory", limit)


# -- rotation ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rotated_tree() -> Iterator[PrivateTree]:
    with running_tree() as t:
        yield t


def fingerprints(tree: Tree) -> dict[str, str]:
    return {
        path.stem: x509.load_pem_x509_certificate(path.read_bytes())
        .fingerprint(hashes.SHA256())
        .hex()
        for path in tree.pki_dir.glob("*.crt")
        if path.name not in ("ca.crt", "ca-current.crt")
    }


async def steady_reads(base_url: str, token: str, stop: asyncio.Event, failures: list[str]) -> int:
    """Profile reads and nickname changes until ``stop``; each retried once on a new
    connection, as a careful client does. Failures after the retry are recorded."""
    done = 0
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        change = done % 5 == 0
        for attempt in (1, 2):
            try:
                async with aiohttp.ClientSession(
                    base_url, timeout=aiohttp.ClientTimeout(total=10)
                ) as http:
                    if change:
                        body = {"nickname": f"n{done}"}
                        async with http.put(
                            "/api/v1/profile/nickname", json=body, headers=headers
                        ) as r:
                            status = r.status
                    else:
                        async with http.get("/api/v1/profile", headers=headers) as r:
                            status = r.status
                if status == 200:
                    break
                failure = f"HTTP {status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = repr(exc)
            if attempt == 2:
                failures.append(failure)
        done += 1
        await asyncio.sleep(0.02)
    return done


async def test_rotation_serves_throughout_and_refuses_the_old_passwords(
    rotated_tree: PrivateTree,
) -> None:
    tree = rotated_tree
    old = passwords(tree)
    old_certs = fingerprints(tree)
    old_pids = {name: pid for name, (state, pid) in tree.status().items() if state == "RUNNING"}
    async with aiohttp.ClientSession(tree.base_url) as http:
        account = await sign_up_and_log_in(http)
    stop = asyncio.Event()
    failures: list[str] = []
    load = asyncio.create_task(steady_reads(tree.base_url, account.token, stop, failures))
    started = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run,
        ["make", "-s", "rotate-credentials"],
        cwd=ROOT,
        env=tree.env,
        capture_output=True,
        timeout=300,
    )
    seconds = time.monotonic() - started
    await asyncio.sleep(1)
    stop.set()
    requests = await load
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert "credentials rotated" in done.stdout.decode()
    assert requests > 50 and failures == [], (requests, failures[:10], seconds)

    new = passwords(tree)
    assert all(a != b for a, b in zip(old, new, strict=True))
    # MySQL: the old password is refused, the new one works.
    with pytest.raises(pymysql.err.OperationalError) as refused:
        mysql_as(tree, password=old[0])
    assert refused.value.args[0] == 1045
    with mysql_as(tree, password=new[0]) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM users")
        assert cur.fetchone()[0] >= 1
    # Redis: likewise, for the actors' user and the admin; and after a Redis restart.
    for user, old_pw, new_pw in (("userhub", old[1], new[1]), ("admin", old[2], new[2])):
        with (
            redis_as(tree, user, old_pw) as client,
            pytest.raises(redis.exceptions.AuthenticationError),
        ):
            client.ping()
        with redis_as(tree, user, new_pw) as client:
            assert client.ping()
    conf = tree.config.secrets.redis_conf.read_text()
    assert redis_acl.password_hash(new[1]) in conf and redis_acl.password_hash(old[1]) not in conf
    # Certificates: every kind's is new; the bundle trusts the new CA and the previous one.
    new_certs = fingerprints(tree)
    assert set(new_certs) == set(old_certs)
    assert all(new_certs[k] != old_certs[k] for k in old_certs)
    bundle = (tree.pki_dir / "ca.crt").read_bytes()
    assert len(re.findall(rb"BEGIN CERTIFICATE", bundle)) == 2
    # Every actor was restarted (twice); the servers were not.
    after = {name: pid for name, (state, pid) in tree.status().items() if state == "RUNNING"}
    for name, pid in old_pids.items():
        if name in ("mysql", "redis") or name.startswith("crash_reporter"):
            assert after[name] == pid, name
        else:
            assert after[name] != pid, name
    # And the tree serves new work on new connections: sign-up and log-in (MySQL),
    # a filled then cached profile (Redis), the pool manager with the new admin cert.
    async with aiohttp.ClientSession(tree.base_url) as http:
        fresh = await sign_up_and_log_in(http)
        for _ in range(2):
            async with http.get("/api/v1/profile", headers=fresh.auth) as r:
                assert r.status == 200
    assert len(tree.workers().workers) == 4
    with redis_as(tree, "admin", new[2]) as admin:
        # Only the old passwords tried above were refused: no command, no key.
        assert {entry["reason"] for entry in admin.acl_log()} <= {"auth"}
