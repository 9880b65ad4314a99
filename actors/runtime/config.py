"""One typed config object per process, read from the environment in one place.

Every address is host:port, so nothing assumes one machine: the embedded MariaDB and
Redis are only the default DSNs, and workers may run on other hosts as long as they
can reach the pool manager and advertise an address the clients can reach.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "")
    return value if value != "" else default


def _env_int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


def _env_float(name: str, default: float) -> float:
    return float(_env(name, str(default)))


def parse_addr(addr: str) -> tuple[str, int]:
    """Split "host:port" (IPv6 as "[::1]:port")."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address must be host:port, got {addr!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass(frozen=True, slots=True)
class MysqlDsn:
    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def parse(cls, dsn: str) -> MysqlDsn:
        parts = urlsplit(dsn)
        if parts.scheme not in ("mysql", "mariadb"):
            raise ValueError("USERHUB_MYSQL_DSN must look like mysql://user:pass@host:port/db")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=parts.path.lstrip("/") or "userhub",
        )


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
        bind_host = _env("USERHUB_BIND_HOST", "127.0.0.1")
        var_dir = Path(_env("USERHUB_VAR", str(REPO_ROOT / "var")))
        return cls(
            manager_addr=parse_addr(_env("USERHUB_MANAGER_ADDR", "127.0.0.1:7400")),
            bind_host=bind_host,
            advertise_host=_env("USERHUB_ADVERTISE_HOST", bind_host),
            request_timeout_s=_env_float("USERHUB_REQUEST_TIMEOUT_S", 5.0),
            max_frame=_env_int("USERHUB_MAX_FRAME_BYTES", 1 << 20),
            var_dir=var_dir,
            log_level=_env("USERHUB_LOG_LEVEL", "info"),
            pki_dir=Path(_env("USERHUB_PKI_DIR", str(var_dir / "pki"))),
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
            max_connections=_env_int("USERHUB_WORKER_MAX_CONNECTIONS", 1024),
            max_in_flight=_env_int("USERHUB_WORKER_MAX_IN_FLIGHT", 2048),
            drain_timeout_s=_env_float("USERHUB_DRAIN_TIMEOUT_S", 5.0),
        )


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle_timeout_s: float
    absolute_timeout_s: float
    touch_interval_s: float  # how stale MySQL's last_seen may get while Redis serves hits

    @classmethod
    def from_env(cls) -> SessionPolicy:
        return cls(
            idle_timeout_s=_env_float("USERHUB_SESSION_IDLE_S", 30 * 60),
            absolute_timeout_s=_env_float("USERHUB_SESSION_ABSOLUTE_S", 12 * 3600),
            touch_interval_s=_env_float("USERHUB_SESSION_TOUCH_S", 60),
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
            mysql_budget=_env_int("USERHUB_MYSQL_BUDGET", 2048),
            heartbeat_interval_s=_env_float("USERHUB_HEARTBEAT_S", 1.0),
            lease_ttl_s=_env_float("USERHUB_LEASE_TTL_S", 30.0),
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
            mysql=MysqlDsn.parse(
                _env("USERHUB_MYSQL_DSN", "mysql://userhub:userhub@127.0.0.1:3307/userhub")
            ),
            pool_wanted=_env_int("USERHUB_DB_POOL_SIZE", 128),
            # One hashing thread per core across the host's db_workers: more only
            # makes the hashes fight over caches and memory bandwidth.
            hash_threads=_env_int(
                "USERHUB_HASH_THREADS",
                max(1, (os.cpu_count() or 2) // max(1, _env_int("USERHUB_DB_WORKERS", 1))),
            ),
            hash_queue=_env_int("USERHUB_HASH_QUEUE", 256),
            sessions=SessionPolicy.from_env(),
            mysql_op_timeout_s=_env_float("USERHUB_MYSQL_OP_TIMEOUT_S", 1.5),
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

    @classmethod
    def from_env(cls) -> CacheWorkerConfig:
        return cls(
            common=CommonConfig.from_env(),
            limits=WorkerLimits.from_env(),
            redis_url=_env("USERHUB_REDIS_URL", "redis://127.0.0.1:6380/0"),
            redis_pool_size=_env_int("USERHUB_REDIS_POOL_SIZE", 64),
            profile_ttl_s=_env_int("USERHUB_PROFILE_TTL_S", 24 * 3600),
            db_leases=_env_int("USERHUB_DB_LEASES", 4),
            sessions=SessionPolicy.from_env(),
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
    csrf_secret: str = ""  # empty: the shared key file <USERHUB_VAR>/csrf.key (actors/web/csrf.py)

    @classmethod
    def from_env(cls) -> GatewayConfig:
        common = CommonConfig.from_env()
        return cls(
            common=common,
            http_addr=parse_addr(_env("USERHUB_HTTP_ADDR", "127.0.0.1:8080")),
            image_dir=Path(_env("USERHUB_IMAGE_DIR", str(common.var_dir / "avatars"))),
            db_leases=_env_int("USERHUB_DB_LEASES", 4),
            cache_leases=_env_int("USERHUB_CACHE_LEASES", 4),
            secure_cookies=_env("USERHUB_TLS", "0").lower() in ("1", "true", "yes", "on"),
            sessions=SessionPolicy.from_env(),
            login_failures_per_pair=_env_int("USERHUB_LOGIN_MAX_FAILURES_PAIR", 5),
            login_failures_per_address=_env_int("USERHUB_LOGIN_MAX_FAILURES_ADDRESS", 100),
            login_failures_per_account=_env_int("USERHUB_LOGIN_MAX_FAILURES_ACCOUNT", 50),
            login_window_s=_env_float("USERHUB_LOGIN_WINDOW_S", 60.0),
            csrf_secret=_env("USERHUB_CSRF_SECRET", ""),
        )
