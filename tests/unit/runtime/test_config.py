"""actors.runtime.config: addresses, DSNs and the defaults every process starts from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors.runtime import env, stores, tree_config
from actors.runtime.config import (
    CacheWorkerConfig,
    CommonConfig,
    DbWorkerConfig,
    GatewayConfig,
    ManagerConfig,
)
from actors.runtime.env import parse_addr
from actors.runtime.stores import MysqlDsn, RedisTarget, SecretFiles


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("USERHUB_"):
            monkeypatch.delenv(name)
    return monkeypatch


# -- parse_addr -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7400", ("127.0.0.1", 7400)),
        ("localhost:80", ("localhost", 80)),
        ("db.example.com:3306", ("db.example.com", 3306)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:80", ("::1", 80)),
        ("[::]:8080", ("::", 8080)),
        ("[fe80::1%eth0]:7400", ("fe80::1%eth0", 7400)),
        (":9000", ("127.0.0.1", 9000)),
    ],
)
def test_parse_addr(text: str, expected: tuple[str, int]) -> None:
    assert parse_addr(text) == expected


@pytest.mark.parametrize("text", ["", "localhost", "host:", "host:http", "host:-1", "[::1]", ":"])
def test_parse_addr_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_addr(text)


# -- MysqlDsn -------------------------------------------------------------------------------


def test_mysql_dsn_full() -> None:
    dsn = MysqlDsn.parse("mysql://app:secret@db.internal:3310/accounts")
    assert dsn == MysqlDsn("db.internal", 3310, "app", "secret", "accounts")


def test_mysql_dsn_url_encoded_password_and_user() -> None:
    dsn = MysqlDsn.parse("mysql://us%40er:p%40ss%3Aw%2Fo%25rd%20x@10.0.0.5:3307/userhub")
    assert dsn.user == "us@er"
    assert dsn.password == "p@ss:w/o%rd x"
    assert (dsn.host, dsn.port, dsn.database) == ("10.0.0.5", 3307, "userhub")


def test_mysql_dsn_defaults() -> None:
    assert MysqlDsn.parse("mysql://") == MysqlDsn("127.0.0.1", 3306, "root", "", "userhub")
    assert MysqlDsn.parse("mysql://bob@dbhost") == MysqlDsn("dbhost", 3306, "bob", "", "userhub")


def test_mysql_dsn_mariadb_scheme_and_ipv6_host() -> None:
    dsn = MysqlDsn.parse("mariadb://u:p@[::1]:3307/db")
    assert (dsn.host, dsn.port, dsn.user, dsn.password, dsn.database) == (
        "::1",
        3307,
        "u",
        "p",
        "db",
    )


@pytest.mark.parametrize("text", ["postgres://u:p@h/db", "u:p@h:3306/db", "", "http://h/db"])
def test_mysql_dsn_rejects_other_schemes(text: str) -> None:
    with pytest.raises(ValueError, match="mysql://"):
        MysqlDsn.parse(text)


# -- passwords from files ---------------------------------------------------------------------


def test_a_dsn_without_a_password_takes_the_files(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-from-file\n")  # as `echo` writes it: the newline is not part of it
    dsn = MysqlDsn.parse("mysql://userhub@127.0.0.1:3307/userhub", secret)
    assert dsn == MysqlDsn("127.0.0.1", 3307, "userhub", "s3cret-from-file", "userhub")


def test_a_dsn_with_a_password_of_its_own_ignores_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file")
    assert MysqlDsn.parse("mysql://svc:own@db:3306/users", secret).password == "own"
    # An empty password written in the DSN is still the DSN's own.
    assert MysqlDsn.parse("mysql://svc:@db:3306/users", secret).password == ""


def test_a_missing_password_file_means_no_password(tmp_path: Path) -> None:
    assert MysqlDsn.parse("mysql://svc@db/users", tmp_path / "absent").password == ""
    assert stores.read_password(tmp_path / "absent") is None


def test_the_password_never_shows_in_a_repr(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("do-not-log-me")
    dsn = MysqlDsn.parse("mysql://svc@db/users", secret)
    target = RedisTarget.parse("redis://userhub@r:6379/0", secret)
    assert dsn.password == target.password == "do-not-log-me"
    assert "do-not-log-me" not in repr(dsn) + repr(target)


def test_a_redis_url_without_a_password_takes_the_files(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("r-pass\n")
    target = RedisTarget.parse("redis://userhub@127.0.0.1:6380/0", secret)
    assert (target.username, target.password) == ("userhub", "r-pass")
    assert target.url == "redis://userhub@127.0.0.1:6380/0"
    own = RedisTarget.parse("redis://ops:their%40pw@cache:6379/1", secret)
    assert (own.username, own.password) == ("ops", "their@pw")
    bare = RedisTarget.parse("redis://cache:6379/0", tmp_path / "absent")
    assert (bare.username, bare.password) == (None, None)


def test_the_password_files_follow_the_var_dir_and_their_settings(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("USERHUB_VAR", str(tmp_path))
    files = SecretFiles.from_env()
    assert files.directory == tmp_path / "secrets"
    assert files.mysql == tmp_path / "secrets" / "mysql-userhub.password"
    assert files.redis == tmp_path / "secrets" / "redis-userhub.password"
    assert files.redis_admin == tmp_path / "secrets" / "redis-admin.password"
    assert files.redis_conf == tmp_path / "secrets" / "redis.conf"
    clean_env.setenv("USERHUB_SECRETS_DIR", str(tmp_path / "elsewhere"))
    clean_env.setenv("USERHUB_MYSQL_PASSWORD_FILE", "/run/keys/mysql")
    files = SecretFiles.from_env()
    assert files.redis == tmp_path / "elsewhere" / "redis-userhub.password"
    assert files.mysql == Path("/run/keys/mysql")


def test_workers_read_their_passwords_from_the_files(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("USERHUB_VAR", str(tmp_path))
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mysql-userhub.password").write_text("m-pw\n")
    (tmp_path / "secrets" / "redis-userhub.password").write_text("r-pw\n")
    assert DbWorkerConfig.from_env().mysql.password == "m-pw"
    cache = CacheWorkerConfig.from_env()
    assert (cache.redis_username, cache.redis_password) == ("userhub", "r-pw")
    assert "r-pw" not in repr(cache)
    # Neither is in the environment the tree exports.
    assert "m-pw" not in str(tree_config.TreeConfig.from_env().exports())


# -- defaults from the environment ----------------------------------------------------------


def test_common_defaults(clean_env: pytest.MonkeyPatch) -> None:
    common = CommonConfig.from_env()
    assert common.manager_addr == ("127.0.0.1", 7400)
    assert common.bind_host == "127.0.0.1"
    assert common.advertise_host == "127.0.0.1"
    assert common.request_timeout_s == 5.0
    assert common.max_frame == 1 << 20
    assert common.var_dir == env.REPO_ROOT / "var"
    assert common.log_level == "info"


def test_common_from_env(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("USERHUB_MANAGER_ADDR", "[::1]:7500")
    clean_env.setenv("USERHUB_BIND_HOST", "0.0.0.0")
    clean_env.setenv("USERHUB_REQUEST_TIMEOUT_S", "2.5")
    clean_env.setenv("USERHUB_MAX_FRAME_BYTES", "4096")
    clean_env.setenv("USERHUB_VAR", str(tmp_path))
    clean_env.setenv("USERHUB_LOG_LEVEL", "debug")
    common = CommonConfig.from_env()
    assert common.manager_addr == ("::1", 7500)
    assert common.bind_host == "0.0.0.0"
    assert common.advertise_host == "0.0.0.0"  # follows the bind host unless told
    assert common.request_timeout_s == 2.5
    assert common.max_frame == 4096
    assert common.var_dir == tmp_path
    assert common.log_level == "debug"
    clean_env.setenv("USERHUB_ADVERTISE_HOST", "worker7.internal")
    assert CommonConfig.from_env().advertise_host == "worker7.internal"


def test_empty_variables_mean_the_default(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("USERHUB_MANAGER_ADDR", "")
    clean_env.setenv("USERHUB_MYSQL_BUDGET", "")
    clean_env.setenv("USERHUB_HEARTBEAT_S", "")
    manager = ManagerConfig.from_env()
    assert manager.common.manager_addr == ("127.0.0.1", 7400)
    assert manager.mysql_budget == 2048
    assert manager.heartbeat_interval_s == 1.0


def test_manager_defaults_and_overrides(clean_env: pytest.MonkeyPatch) -> None:
    manager = ManagerConfig.from_env()
    assert (manager.mysql_budget, manager.heartbeat_interval_s, manager.lease_ttl_s) == (
        2048,
        1.0,
        30.0,
    )
    clean_env.setenv("USERHUB_MYSQL_BUDGET", "300")
    clean_env.setenv("USERHUB_HEARTBEAT_S", "0.25")
    clean_env.setenv("USERHUB_LEASE_TTL_S", "9")
    manager = ManagerConfig.from_env()
    assert (manager.mysql_budget, manager.heartbeat_interval_s, manager.lease_ttl_s) == (
        300,
        0.25,
        9.0,
    )


def test_db_worker_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("USERHUB_VAR", str(tmp_path))  # no password file there
    db = DbWorkerConfig.from_env()
    assert db.mysql == MysqlDsn("127.0.0.1", 3307, "userhub", "", "userhub")
    assert db.pool_wanted == 128
    assert db.hash_threads >= 1
    assert db.hash_queue == 256
    assert (db.limits.max_connections, db.limits.max_in_flight) == (1024, 2048)
    assert db.limits.drain_timeout_s == 5.0
    assert db.sessions.idle_timeout_s == 30 * 60
    assert db.sessions.absolute_timeout_s == 12 * 3600
    assert db.sessions.touch_interval_s == 60


def test_db_worker_dsn_from_env(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("USERHUB_MYSQL_DSN", "mysql://svc:pa%23ss@mysql.prod:3306/users")
    db = DbWorkerConfig.from_env()
    assert db.mysql == MysqlDsn("mysql.prod", 3306, "svc", "pa#ss", "users")


def test_cache_worker_defaults(clean_env: pytest.MonkeyPatch) -> None:
    cache = CacheWorkerConfig.from_env()
    assert cache.redis_url == "redis://userhub@127.0.0.1:6380/0"
    assert cache.redis_pool_size == 64
    assert cache.profile_ttl_s == 24 * 3600
    assert cache.db_leases == 4


def test_gateway_defaults(clean_env: pytest.MonkeyPatch) -> None:
    gw = GatewayConfig.from_env()
    assert gw.http_addr == ("127.0.0.1", 8080)
    assert gw.image_dir == gw.common.var_dir / "avatars"
    assert (gw.db_leases, gw.cache_leases) == (4, 4)
    assert gw.secure_cookies is False
    assert (
        gw.login_failures_per_pair,
        gw.login_failures_per_address,
        gw.login_failures_per_account,
        gw.login_window_s,
    ) == (5, 100, 50, 60.0)
    assert gw.login_backoff_cap_s == 900
    assert (gw.signups_per_address, gw.signup_window_s) == (10, 600)
    assert (gw.uploads_per_user, gw.upload_window_s) == (20, 3600)
    assert gw.trusted_proxies == ()
    assert gw.device_cookie_max_age_s == 30 * 86400
    assert gw.admin_addr == ("127.0.0.1", 9180)
    up = gw.uploads
    assert (up.concurrent, up.timeout_s) == (8, 60.0)
    assert (up.orphan_grace_s, up.sweep_every_s) == (3600.0, 300.0)
    assert (up.sweep_examine, up.sweep_delete) == (1000, 200)


def test_gateway_upload_and_admin_settings(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in {
        "USERHUB_ADMIN_ADDR": "127.0.0.1:9999",
        "USERHUB_UPLOADS_CONCURRENT": "1",
        "USERHUB_UPLOAD_TIMEOUT_S": "4.5",
        "USERHUB_AVATAR_GRACE_S": "60",
        "USERHUB_AVATAR_SWEEP_S": "0.5",
    }.items():
        clean_env.setenv(name, value)
    gw = GatewayConfig.from_env()
    assert gw.admin_addr == ("127.0.0.1", 9999)
    assert (gw.uploads.concurrent, gw.uploads.timeout_s) == (1, 4.5)
    assert (gw.uploads.orphan_grace_s, gw.uploads.sweep_every_s) == (60.0, 0.5)


def test_trusted_proxies_from_env(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("USERHUB_TRUSTED_PROXIES", "10.0.0.1, 10.1.0.0/16 fd00::/8")
    assert [str(n) for n in GatewayConfig.from_env().trusted_proxies] == [
        "10.0.0.1/32",
        "10.1.0.0/16",
        "fd00::/8",
    ]
    clean_env.setenv("USERHUB_TRUSTED_PROXIES", "10.0.0.1,lb.internal")
    with pytest.raises(ValueError, match=r"lb\.internal"):
        GatewayConfig.from_env()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("USERHUB_LOGIN_MAX_FAILURES_PAIR", "0"),
        ("USERHUB_SIGNUP_MAX_PER_ADDRESS", "-1"),
        ("USERHUB_UPLOAD_WINDOW_S", "0"),
        ("USERHUB_LOGIN_BACKOFF_CAP_S", "1e9"),
        ("USERHUB_DEVICE_COOKIE_MAX_AGE_S", "-5"),
    ],
)
def test_throttle_settings_out_of_range_fail_loudly(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        GatewayConfig.from_env()


@pytest.mark.parametrize(
    ("value", "secure"),
    [("1", True), ("true", True), ("yes", True), ("0", False), ("no", False)],
)
def test_gateway_tls_flag(clean_env: pytest.MonkeyPatch, value: str, secure: bool) -> None:
    clean_env.setenv("USERHUB_TLS", value)
    assert GatewayConfig.from_env().secure_cookies is secure


def test_image_dir_follows_var_dir(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("USERHUB_VAR", str(tmp_path))
    assert GatewayConfig.from_env().image_dir == tmp_path / "avatars"


def test_bad_numbers_fail_loudly(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("USERHUB_MYSQL_BUDGET", "lots")
    with pytest.raises(ValueError):
        ManagerConfig.from_env()
