"""One typed config object per process, read from the environment in one place.

Every address is host:port, so nothing assumes one machine: the embedded MariaDB and
Redis are only the default DSNs, and workers may run on other hosts as long as they
can reach the pool manager and advertise an address the clients can reach.

Every default is written in this module and nowhere else: TreeConfig holds what
supervisord.conf and the scripts read, and scripts/env.sh exports what
``python -m actors.runtime.config --shell`` prints.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import pwd
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]

# The defaults more than one setting derives from; every other default is written
# where its setting is read, below.
DEFAULT_MYSQL_PORT = 3307  # the private MariaDB, off the standard port
DEFAULT_REDIS_PORT = 6380  # the private Redis, likewise
DEFAULT_MANAGER_ADDR = "127.0.0.1:7400"
DEFAULT_HTTP_ADDR = "127.0.0.1:8080"
# The admin listener (/metrics): loopback, apart from the public port, so the host's
# internals are for whoever runs it and Prometheus, not for every client of the API.
DEFAULT_ADMIN_ADDR = "127.0.0.1:9180"


def _env(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    """``name`` from the environment; unset and empty both mean ``default``."""
    value = (os.environ if environ is None else environ).get(name, "")
    return value if value != "" else default


def _env_int(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    value = _env(name, str(default), environ)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None


def _env_float(name: str, default: float) -> float:
    value = _env(name, str(default))
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """The spellings supervisord accepts; anything else fails loudly, as numbers do."""
    value = _env(name, "true" if default else "false", environ).lower()
    if value not in _TRUE + _FALSE:
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value in _TRUE


def _env_limit(name: str, default: int) -> int:
    """A count a throttle allows: at least 1, or the setting is a mistake."""
    value = _env_int(name, default)
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def _env_seconds(name: str, default: float) -> float:
    """A throttle's window or cap: positive, at most a week (what a cache_worker accepts)."""
    value = _env_float(name, default)
    if not 0.001 <= value <= 7 * 24 * 3600:
        raise ValueError(f"{name} must be between 0.001 and 604800 seconds, got {value}")
    return value


def _env_positive(name: str, default: float) -> float:
    value = _env_float(name, default)
    if not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value}")
    return value


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_proxies(raw: str) -> tuple[IpNetwork, ...]:
    """USERHUB_TRUSTED_PROXIES: addresses or CIDRs, separated by commas or spaces."""
    networks = []
    for item in raw.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"USERHUB_TRUSTED_PROXIES: {item!r} is not an IP address or CIDR"
            ) from None
    return tuple(networks)


def repo_root(environ: Mapping[str, str] | None = None) -> Path:
    return Path(_env("USERHUB_ROOT", str(REPO_ROOT), environ))


def var_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where a tree keeps its data, sockets, logs and metrics."""
    return Path(_env("USERHUB_VAR", str(repo_root(environ) / "var"), environ))


def pki_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the tree's CA and the actors' certificates are (tools.pki makes them)."""
    return Path(_env("USERHUB_PKI_DIR", str(var_dir(environ) / "pki"), environ))


def secrets_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where set-up keeps the private servers' passwords (tools.secrets makes them)."""
    return Path(_env("USERHUB_SECRETS_DIR", str(var_dir(environ) / "secrets"), environ))


def mysql_dsn(environ: Mapping[str, str] | None = None) -> str:
    """USERHUB_MYSQL_DSN, else the private MariaDB on USERHUB_MYSQL_PORT.

    The default names the account but carries no password: that is read from
    USERHUB_MYSQL_PASSWORD_FILE (MysqlDsn.from_env), so it never sits in an
    environment that every child process inherits.
    """
    port = _env_int("USERHUB_MYSQL_PORT", DEFAULT_MYSQL_PORT, environ)
    return _env("USERHUB_MYSQL_DSN", f"mysql://userhub@127.0.0.1:{port}/userhub", environ)


def redis_url(environ: Mapping[str, str] | None = None) -> str:
    """USERHUB_REDIS_URL, else the private Redis on USERHUB_REDIS_PORT (its ACL user
    ``userhub``; the password comes from USERHUB_REDIS_PASSWORD_FILE, RedisTarget)."""
    port = _env_int("USERHUB_REDIS_PORT", DEFAULT_REDIS_PORT, environ)
    return _env("USERHUB_REDIS_URL", f"redis://userhub@127.0.0.1:{port}/0", environ)


# The file names set-up gives the secrets it makes under secrets_dir().
MYSQL_PASSWORD_NAME = "mysql-userhub.password"
REDIS_PASSWORD_NAME = "redis-userhub.password"
REDIS_ADMIN_PASSWORD_NAME = "redis-admin.password"
REDIS_CONF_NAME = "redis.conf"  # supervisord.conf names it too


@dataclass(frozen=True, slots=True)
class SecretFiles:
    """Where the passwords of the private MariaDB and Redis are kept.

    ``mysql`` and ``redis`` are what the actors read when their DSN or URL carries
    no password; ``redis_admin`` (the Redis user that may do anything) and the
    Redis config file made from these (``redis_conf``) are for set-up and tools.
    """

    directory: Path
    mysql: Path
    redis: Path
    redis_admin: Path
    redis_conf: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SecretFiles:
        directory = secrets_dir(environ)
        return cls(
            directory=directory,
            mysql=Path(
                _env("USERHUB_MYSQL_PASSWORD_FILE", str(directory / MYSQL_PASSWORD_NAME), environ)
            ),
            redis=Path(
                _env("USERHUB_REDIS_PASSWORD_FILE", str(directory / REDIS_PASSWORD_NAME), environ)
            ),
            redis_admin=directory / REDIS_ADMIN_PASSWORD_NAME,
            redis_conf=directory / REDIS_CONF_NAME,
        )


def read_password(path: Path) -> str | None:
    """The password kept in ``path`` (surrounding white space dropped); None if there
    is no such file. A server that needs a password then refuses the connection,
    which says more than a guess here could."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return text.strip()


def worker_port(environ: Mapping[str, str] | None = None) -> int:
    """Where a worker listens: 0, an ephemeral port, unless USERHUB_WORKER_PORT fixes it
    (supervisord starts N workers of a kind with no port bookkeeping; each tells the
    pool manager the port it got)."""
    return _env_int("USERHUB_WORKER_PORT", 0, environ)


def admin_addr(environ: Mapping[str, str] | None = None) -> tuple[str, int]:
    """Where a host's gateways serve /metrics (shared with SO_REUSEPORT, like the public port)."""
    return parse_addr(_env("USERHUB_ADMIN_ADDR", DEFAULT_ADMIN_ADDR, environ))


def parse_addr(addr: str) -> tuple[str, int]:
    """Split "host:port" (IPv6 as "[::1]:port")."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address must be host:port, got {addr!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def format_addr(addr: tuple[str, int]) -> str:
    """The inverse of parse_addr: IPv6 hosts get their brackets back."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class MysqlDsn:
    host: str
    port: int
    user: str
    password: str = field(repr=False)  # kept out of any log line that prints the config
    database: str

    @classmethod
    def parse(cls, dsn: str, password_file: Path | None = None) -> MysqlDsn:
        """``dsn`` split up. A DSN with a password of its own (a server you run
        yourself) is used as it is; one without takes it from ``password_file``."""
        parts = urlsplit(dsn)
        if parts.scheme not in ("mysql", "mariadb"):
            raise ValueError("USERHUB_MYSQL_DSN must look like mysql://user:pass@host:port/db")
        password = unquote(parts.password) if parts.password is not None else None
        if password is None and password_file is not None:
            password = read_password(password_file)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=password or "",
            database=parts.path.lstrip("/") or "userhub",
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MysqlDsn:
        """The DSN this environment names, with its password (USERHUB_MYSQL_PASSWORD_FILE)."""
        return cls.parse(mysql_dsn(environ), SecretFiles.from_env(environ).mysql)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A Redis URL and the credentials to present there (AUTH user password).

    As with MysqlDsn, a URL with a password of its own is used as it is; one without
    takes it from a file (USERHUB_REDIS_PASSWORD_FILE). The user is the URL's
    (``redis://userhub@host:port/0``); without one, AUTH names Redis's ``default``.
    """

    url: str
    username: str | None
    password: str | None = field(repr=False)

    @classmethod
    def parse(cls, url: str, password_file: Path | None = None) -> RedisTarget:
        parts = urlsplit(url)
        password = unquote(parts.password) if parts.password is not None else None
        if password is None and password_file is not None:
            password = read_password(password_file)
        username = unquote(parts.username) if parts.username else None
        return cls(url=url, username=username, password=password)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RedisTarget:
        """The URL this environment names, with its password (USERHUB_REDIS_PASSWORD_FILE)."""
        return cls.parse(redis_url(environ), SecretFiles.from_env(environ).redis)


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
        var = var_dir()
        return cls(
            manager_addr=parse_addr(_env("USERHUB_MANAGER_ADDR", DEFAULT_MANAGER_ADDR)),
            bind_host=bind_host,
            advertise_host=_env("USERHUB_ADVERTISE_HOST", bind_host),
            request_timeout_s=_env_float("USERHUB_REQUEST_TIMEOUT_S", 5.0),
            max_frame=_env_int("USERHUB_MAX_FRAME_BYTES", 1 << 20),
            var_dir=var,
            log_level=_env("USERHUB_LOG_LEVEL", "info"),
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
            mysql=MysqlDsn.from_env(),
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
            redis_pool_size=_env_int("USERHUB_REDIS_POOL_SIZE", 64),
            profile_ttl_s=_env_int("USERHUB_PROFILE_TTL_S", 24 * 3600),
            db_leases=_env_int("USERHUB_DB_LEASES", 4),
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
            concurrent=_env_int("USERHUB_UPLOADS_CONCURRENT", 8),
            timeout_s=_env_float("USERHUB_UPLOAD_TIMEOUT_S", 60.0),
            orphan_grace_s=_env_float("USERHUB_AVATAR_GRACE_S", 3600.0),
            sweep_every_s=_env_float("USERHUB_AVATAR_SWEEP_S", 300.0),
            sweep_examine=_env_int("USERHUB_AVATAR_SWEEP_EXAMINE", 1000),
            sweep_delete=_env_int("USERHUB_AVATAR_SWEEP_DELETE", 200),
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
            http_addr=parse_addr(_env("USERHUB_HTTP_ADDR", DEFAULT_HTTP_ADDR)),
            image_dir=Path(_env("USERHUB_IMAGE_DIR", str(common.var_dir / "avatars"))),
            db_leases=_env_int("USERHUB_DB_LEASES", 4),
            cache_leases=_env_int("USERHUB_CACHE_LEASES", 4),
            secure_cookies=_env("USERHUB_TLS", "0").lower() in ("1", "true", "yes", "on"),
            sessions=SessionPolicy.from_env(),
            login_failures_per_pair=_env_limit("USERHUB_LOGIN_MAX_FAILURES_PAIR", 5),
            login_failures_per_address=_env_limit("USERHUB_LOGIN_MAX_FAILURES_ADDRESS", 100),
            login_failures_per_account=_env_limit("USERHUB_LOGIN_MAX_FAILURES_ACCOUNT", 50),
            login_window_s=_env_seconds("USERHUB_LOGIN_WINDOW_S", 60.0),
            login_backoff_cap_s=_env_seconds("USERHUB_LOGIN_BACKOFF_CAP_S", 15 * 60.0),
            signups_per_address=_env_limit("USERHUB_SIGNUP_MAX_PER_ADDRESS", 10),
            signup_window_s=_env_seconds("USERHUB_SIGNUP_WINDOW_S", 10 * 60.0),
            uploads_per_user=_env_limit("USERHUB_UPLOAD_MAX_PER_USER", 20),
            upload_window_s=_env_seconds("USERHUB_UPLOAD_WINDOW_S", 3600.0),
            trusted_proxies=trusted_proxies(_env("USERHUB_TRUSTED_PROXIES", "")),
            device_cookie_max_age_s=_env_positive("USERHUB_DEVICE_COOKIE_MAX_AGE_S", 30 * 86400.0),
            uploads=UploadPolicy.from_env(),
            admin_addr=admin_addr(),
            csrf_secret=_env("USERHUB_CSRF_SECRET", ""),
        )


def _os_user() -> str:
    """The effective user, as `id -un` names it; MariaDB runs as this user."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry (some containers)
        return str(os.geteuid())


@dataclass(frozen=True, slots=True)
class TreeConfig:
    """What the tree as a whole is started with, rather than what one actor reads.

    supervisord.conf reads these as ``%(ENV_...)s`` and the scripts as shell
    variables, so they must be in the environment before supervisord starts:
    scripts/env.sh exports what ``python -m actors.runtime.config --shell`` prints.
    The actors read the settings they share with it (DSN, URL, addresses, var dir)
    through the same functions, so every default is written once, here.
    """

    root: Path
    var_dir: Path
    pki_dir: Path
    secrets: SecretFiles  # the private servers' passwords (tools.secrets)
    python: Path  # the interpreter supervisord starts the actors with
    os_user: str
    mysql_port: int  # the private MariaDB's, whichever DSN the workers use
    redis_port: int
    mysql_dsn: str
    redis_url: str
    # The private servers start unless a DSN or URL of one's own is given.
    start_mysql: bool
    start_redis: bool
    redis_maxmemory: str  # passed as is to redis-server (e.g. 2gb)
    innodb_buffer_pool: str  # passed as is to mariadbd (e.g. 4G)
    manager_addr: tuple[str, int]
    http_addr: tuple[str, int]
    admin_addr: tuple[str, int]  # the gateways' /metrics: what Prometheus scrapes per host
    db_workers: int
    cache_workers: int
    gateways: int
    spare_workers: int  # per kind, declared but started only on demand
    metrics_dir: Path  # PROMETHEUS_MULTIPROC_DIR: one scrape shows every process
    pythonpath: str  # the root first, so `python -m actors.<kind>` works from anywhere

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TreeConfig:
        env = os.environ if environ is None else environ
        root = repo_root(env)
        var = var_dir(env)
        inherited = env.get("PYTHONPATH", "")
        return cls(
            root=root,
            var_dir=var,
            pki_dir=pki_dir(env),
            secrets=SecretFiles.from_env(env),
            python=Path(_env("USERHUB_PYTHON", str(root / ".venv" / "bin" / "python"), env)),
            os_user=_env("USERHUB_OS_USER", _os_user(), env),
            mysql_port=_env_int("USERHUB_MYSQL_PORT", DEFAULT_MYSQL_PORT, env),
            redis_port=_env_int("USERHUB_REDIS_PORT", DEFAULT_REDIS_PORT, env),
            mysql_dsn=mysql_dsn(env),
            redis_url=redis_url(env),
            start_mysql=_env_bool("USERHUB_START_MYSQL", not env.get("USERHUB_MYSQL_DSN"), env),
            start_redis=_env_bool("USERHUB_START_REDIS", not env.get("USERHUB_REDIS_URL"), env),
            redis_maxmemory=_env("USERHUB_REDIS_MAXMEMORY", "2gb", env),
            innodb_buffer_pool=_env("USERHUB_INNODB_BUFFER_POOL", "4G", env),
            manager_addr=parse_addr(_env("USERHUB_MANAGER_ADDR", DEFAULT_MANAGER_ADDR, env)),
            http_addr=parse_addr(_env("USERHUB_HTTP_ADDR", DEFAULT_HTTP_ADDR, env)),
            admin_addr=admin_addr(env),
            db_workers=_env_int("USERHUB_DB_WORKERS", 2, env),
            cache_workers=_env_int("USERHUB_CACHE_WORKERS", 2, env),
            gateways=_env_int("USERHUB_GATEWAYS", 2, env),
            spare_workers=_env_int("USERHUB_SPARE_WORKERS", 2, env),
            metrics_dir=Path(_env("PROMETHEUS_MULTIPROC_DIR", str(var / "metrics"), env)),
            pythonpath=f"{root}:{inherited}" if inherited else str(root),
        )

    def exports(self) -> dict[str, str]:
        """Every variable scripts/env.sh exports, as the environment spells it."""
        return {
            "USERHUB_ROOT": str(self.root),
            "USERHUB_VAR": str(self.var_dir),
            "USERHUB_PKI_DIR": str(self.pki_dir),
            # Where the passwords are, never what they are: an actors-only tree in
            # another var dir still finds them.
            "USERHUB_SECRETS_DIR": str(self.secrets.directory),
            "USERHUB_MYSQL_PASSWORD_FILE": str(self.secrets.mysql),
            "USERHUB_REDIS_PASSWORD_FILE": str(self.secrets.redis),
            "USERHUB_PYTHON": str(self.python),
            "USERHUB_OS_USER": self.os_user,
            "USERHUB_MYSQL_PORT": str(self.mysql_port),
            "USERHUB_REDIS_PORT": str(self.redis_port),
            "USERHUB_MYSQL_DSN": self.mysql_dsn,
            "USERHUB_START_MYSQL": "true" if self.start_mysql else "false",
            "USERHUB_REDIS_URL": self.redis_url,
            "USERHUB_START_REDIS": "true" if self.start_redis else "false",
            "USERHUB_REDIS_MAXMEMORY": self.redis_maxmemory,
            "USERHUB_INNODB_BUFFER_POOL": self.innodb_buffer_pool,
            "USERHUB_MANAGER_ADDR": format_addr(self.manager_addr),
            "USERHUB_HTTP_ADDR": format_addr(self.http_addr),
            "USERHUB_ADMIN_ADDR": format_addr(self.admin_addr),
            "USERHUB_DB_WORKERS": str(self.db_workers),
            "USERHUB_CACHE_WORKERS": str(self.cache_workers),
            "USERHUB_GATEWAYS": str(self.gateways),
            "USERHUB_SPARE_WORKERS": str(self.spare_workers),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "PYTHONPATH": self.pythonpath,
        }

    def shell(self) -> str:
        """``export NAME=value`` lines that a POSIX shell may eval, values quoted."""
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.exports().items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m actors.runtime.config",
        description="The tree's settings from the environment and the defaults, for a shell.",
    )
    parser.add_argument("--shell", action="store_true", required=True, help="export lines")
    parser.parse_args(argv)
    try:
        sys.stdout.write(TreeConfig.from_env().shell())
    except ValueError as exc:
        print(f"userhub configuration: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
