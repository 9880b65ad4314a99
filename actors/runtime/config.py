"""One typed config object per process, read from the environment in one place.

Every address is host:port, so nothing assumes one machine: the embedded MariaDB and
Redis are only the default DSNs, and workers may run on other hosts as long as they
can reach the pool manager and advertise an address the clients can reach. Each
setting's default is written where it is read, here; the defaults several settings
share are in actors.runtime.env.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from actors.runtime.env import (
    DEFAULT_HTTP_ADDR,
    DEFAULT_MANAGER_ADDR,
    IpNetwork,
    admin_addr,
    env_float,
    env_int,
    env_limit,
    env_positive,
    env_seconds,
    env_str,
    parse_addr,
    pki_dir,
    trusted_proxies,
    var_dir,
)
from actors.runtime.stores import MysqlDsn, RedisTarget


@dataclass(frozen=True, slots=True)
class CommonConfig:
    """Settings every actor shares."""

    manager_addr: tuple[str, int]
    bind_host: str
    advertise_host: str
    request_timeout_s: float
    max_frame: int
    var_dir: Path
    log_level: str
    pki_dir: Path  # the tree's CA and certificates (tools.pki)

    @classmethod
    def from_env(cls) -> CommonConfig:
        bind_host = env_str("USERHUB_BIND_HOST", "127.0.0.1")
        var = var_dir()
        return cls(
            manager_addr=parse_addr(env_str("USERHUB_MANAGER_ADDR", DEFAULT_MANAGER_ADDR)),
            bind_host=bind_host,
            advertise_host=env_str("USERHUB_ADVERTISE_HOST", bind_host),
            request_timeout_s=env_float("USERHUB_REQUEST_TIMEOUT_S", 5.0),
            max_frame=env_int("USERHUB_MAX_FRAME_BYTES", 1 << 20),
            var_dir=var,
            log_level=env_str("USERHUB_LOG_LEVEL", "info"),
            pki_dir=pki_dir(),
        )


@dataclass(frozen=True, slots=True)
class WorkerLimits:
    """Bounds on what one worker accepts; beyond them callers get "busy"."""

    max_connections: int
    max_in_flight: int
    drain_timeout_s: float

    @classmethod
    def from_env(cls) -> WorkerLimits:
        return cls(
            max_connections=env_int("USERHUB_WORKER_MAX_CONNECTIONS", 1024),
            max_in_flight=env_int("USERHUB_WORKER_MAX_IN_FLIGHT", 2048),
            drain_timeout_s=env_float("USERHUB_DRAIN_TIMEOUT_S", 5.0),
        )


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle_timeout_s: float
    absolute_timeout_s: float
    touch_interval_s: float  # how stale MySQL's last_seen may get while Redis serves hits

    @classmethod
    def from_env(cls) -> SessionPolicy:
        return cls(
            idle_timeout_s=env_float("USERHUB_SESSION_IDLE_S", 30 * 60),
            absolute_timeout_s=env_float("USERHUB_SESSION_ABSOLUTE_S", 12 * 3600),
            touch_interval_s=env_float("USERHUB_SESSION_TOUCH_S", 60),
        )


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    common: CommonConfig
    mysql_budget: int
    heartbeat_interval_s: float
    lease_ttl_s: float

    @classmethod
    def from_env(cls) -> ManagerConfig:
        return cls(
            common=CommonConfig.from_env(),
            mysql_budget=env_int("USERHUB_MYSQL_BUDGET", 2048),
            heartbeat_interval_s=env_float("USERHUB_HEARTBEAT_S", 1.0),
            lease_ttl_s=env_float("USERHUB_LEASE_TTL_S", 30.0),
        )


@dataclass(frozen=True, slots=True)
class DbWorkerConfig:
    common: CommonConfig
    limits: WorkerLimits
    mysql: MysqlDsn
    pool_wanted: int
    hash_threads: int
    hash_queue: int
    sessions: SessionPolicy
    # Longest one MySQL operation (acquire, query, commit) may take before the request
    # fails with database_unavailable: a server that is gone or cut off costs a caller
    # this, never the whole request deadline.
    mysql_op_timeout_s: float = 1.5

    @classmethod
    def from_env(cls) -> DbWorkerConfig:
        return cls(
            common=CommonConfig.from_env(),
            limits=WorkerLimits.from_env(),
            mysql=MysqlDsn.from_env(),
            pool_wanted=env_int("USERHUB_DB_POOL_SIZE", 128),
            # One hashing thread per core across the host's db_workers: more only
            # makes the hashes fight over caches and memory bandwidth.
            hash_threads=env_int(
                "USERHUB_HASH_THREADS",
                max(1, (os.cpu_count() or 2) // max(1, env_int("USERHUB_DB_WORKERS", 1))),
            ),
            hash_queue=env_int("USERHUB_HASH_QUEUE", 256),
            sessions=SessionPolicy.from_env(),
            mysql_op_timeout_s=env_float("USERHUB_MYSQL_OP_TIMEOUT_S", 1.5),
        )


@dataclass(frozen=True, slots=True)
class CacheWorkerConfig:
    common: CommonConfig
    limits: WorkerLimits
    redis_url: str
    redis_pool_size: int
    profile_ttl_s: int
    db_leases: int
    sessions: SessionPolicy
    # AUTH's user and password when the URL carries none (RedisTarget.from_env).
    redis_username: str | None = None
    redis_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> CacheWorkerConfig:
        redis = RedisTarget.from_env()
        return cls(
            common=CommonConfig.from_env(),
            limits=WorkerLimits.from_env(),
            redis_url=redis.url,
            redis_pool_size=env_int("USERHUB_REDIS_POOL_SIZE", 64),
            profile_ttl_s=env_int("USERHUB_PROFILE_TTL_S", 24 * 3600),
            db_leases=env_int("USERHUB_DB_LEASES", 4),
            sessions=SessionPolicy.from_env(),
            redis_username=redis.username,
            redis_password=redis.password,
        )


@dataclass(frozen=True, slots=True)
class UploadPolicy:
    """Bounds on picture uploads and on the pictures kept, per gateway process.

    ``concurrent`` uploads at once per gateway, the next one is answered 503 at
    once rather than queued; an upload must arrive whole within ``timeout_s``. (How
    many uploads an account may make is a throttle: uploads_per_user.) A stored picture that
    no account references is deleted ``orphan_grace_s`` after it was last stored,
    by a sweep every ``sweep_every_s`` that examines at most ``sweep_examine``
    pictures and deletes at most ``sweep_delete``.
    """

    concurrent: int
    timeout_s: float
    orphan_grace_s: float
    sweep_every_s: float
    sweep_examine: int
    sweep_delete: int

    @classmethod
    def from_env(cls) -> UploadPolicy:
        return cls(
            concurrent=env_int("USERHUB_UPLOADS_CONCURRENT", 8),
            timeout_s=env_float("USERHUB_UPLOAD_TIMEOUT_S", 60.0),
            orphan_grace_s=env_float("USERHUB_AVATAR_GRACE_S", 3600.0),
            sweep_every_s=env_float("USERHUB_AVATAR_SWEEP_S", 300.0),
            sweep_examine=env_int("USERHUB_AVATAR_SWEEP_EXAMINE", 1000),
            sweep_delete=env_int("USERHUB_AVATAR_SWEEP_DELETE", 200),
        )


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    common: CommonConfig
    http_addr: tuple[str, int]
    image_dir: Path
    db_leases: int
    cache_leases: int
    secure_cookies: bool
    sessions: SessionPolicy
    login_failures_per_pair: int
    login_failures_per_address: int
    login_failures_per_account: int
    login_window_s: float
    # Past a login limit each admitted attempt doubles the wait, up to this.
    login_backoff_cap_s: float
    signups_per_address: int
    signup_window_s: float
    uploads_per_user: int
    upload_window_s: float
    # Peers whose X-Forwarded-For names the client (actors/web/client_address.py).
    trusted_proxies: tuple[IpNetwork, ...]
    # How long a browser that logged in stays a "known device" (actors/web/device_cookie.py).
    device_cookie_max_age_s: float
    uploads: UploadPolicy
    admin_addr: tuple[str, int]  # /metrics, apart from the public http_addr
    csrf_secret: str = ""  # empty: the shared key file <USERHUB_VAR>/csrf.key (actors/web/csrf.py)

    @classmethod
    def from_env(cls) -> GatewayConfig:
        common = CommonConfig.from_env()
        return cls(
            common=common,
            http_addr=parse_addr(env_str("USERHUB_HTTP_ADDR", DEFAULT_HTTP_ADDR)),
            image_dir=Path(env_str("USERHUB_IMAGE_DIR", str(common.var_dir / "avatars"))),
            db_leases=env_int("USERHUB_DB_LEASES", 4),
            cache_leases=env_int("USERHUB_CACHE_LEASES", 4),
            secure_cookies=env_str("USERHUB_TLS", "0").lower() in ("1", "true", "yes", "on"),
            sessions=SessionPolicy.from_env(),
            login_failures_per_pair=env_limit("USERHUB_LOGIN_MAX_FAILURES_PAIR", 5),
            login_failures_per_address=env_limit("USERHUB_LOGIN_MAX_FAILURES_ADDRESS", 100),
            login_failures_per_account=env_limit("USERHUB_LOGIN_MAX_FAILURES_ACCOUNT", 50),
            login_window_s=env_seconds("USERHUB_LOGIN_WINDOW_S", 60.0),
            login_backoff_cap_s=env_seconds("USERHUB_LOGIN_BACKOFF_CAP_S", 15 * 60.0),
            signups_per_address=env_limit("USERHUB_SIGNUP_MAX_PER_ADDRESS", 10),
            signup_window_s=env_seconds("USERHUB_SIGNUP_WINDOW_S", 10 * 60.0),
            uploads_per_user=env_limit("USERHUB_UPLOAD_MAX_PER_USER", 20),
            upload_window_s=env_seconds("USERHUB_UPLOAD_WINDOW_S", 3600.0),
            trusted_proxies=trusted_proxies(env_str("USERHUB_TRUSTED_PROXIES", "")),
            device_cookie_max_age_s=env_positive("USERHUB_DEVICE_COOKIE_MAX_AGE_S", 30 * 86400.0),
            uploads=UploadPolicy.from_env(),
            admin_addr=admin_addr(),
            csrf_secret=env_str("USERHUB_CSRF_SECRET", ""),
        )
