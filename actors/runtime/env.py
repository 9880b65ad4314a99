"""Reading settings from the environment, and the defaults more than one setting shares.

Every default userhub has is written in actors/runtime: here the ones several
settings derive from (ports, addresses, the var directory), in actors.runtime.config
each process's own, in actors.runtime.tree_config what supervisord and the scripts
read. Unset and empty both mean the default; a value that does not parse stops the
process at start with the setting's name.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

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


def env_str(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    """``name`` from the environment; unset and empty both mean ``default``."""
    value = (os.environ if environ is None else environ).get(name, "")
    return value if value != "" else default


def env_int(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    value = env_str(name, str(default), environ)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None


def env_float(name: str, default: float) -> float:
    value = env_str(name, str(default))
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """The spellings supervisord accepts; anything else fails loudly, as numbers do."""
    value = env_str(name, "true" if default else "false", environ).lower()
    if value not in TRUE_WORDS + FALSE_WORDS:
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value in TRUE_WORDS


def env_limit(name: str, default: int) -> int:
    """A count a throttle allows: at least 1, or the setting is a mistake."""
    value = env_int(name, default)
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def env_seconds(name: str, default: float) -> float:
    """A throttle's window or cap: positive, at most a week (what a cache_worker accepts)."""
    value = env_float(name, default)
    if not 0.001 <= value <= 7 * 24 * 3600:
        raise ValueError(f"{name} must be between 0.001 and 604800 seconds, got {value}")
    return value


def env_positive(name: str, default: float) -> float:
    value = env_float(name, default)
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
    return Path(env_str("USERHUB_ROOT", str(REPO_ROOT), environ))


def var_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where a tree keeps its data, sockets, logs and metrics."""
    return Path(env_str("USERHUB_VAR", str(repo_root(environ) / "var"), environ))


def pki_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the tree's CA and the actors' certificates are (tools.pki makes them)."""
    return Path(env_str("USERHUB_PKI_DIR", str(var_dir(environ) / "pki"), environ))


def secrets_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where set-up keeps the private servers' passwords (tools.secrets makes them)."""
    return Path(env_str("USERHUB_SECRETS_DIR", str(var_dir(environ) / "secrets"), environ))


def mysql_dsn(environ: Mapping[str, str] | None = None) -> str:
    """USERHUB_MYSQL_DSN, else the private MariaDB on USERHUB_MYSQL_PORT.

    The default names the account but carries no password: that is read from
    USERHUB_MYSQL_PASSWORD_FILE (MysqlDsn.from_env), so it never sits in an
    environment that every child process inherits.
    """
    port = env_int("USERHUB_MYSQL_PORT", DEFAULT_MYSQL_PORT, environ)
    return env_str("USERHUB_MYSQL_DSN", f"mysql://userhub@127.0.0.1:{port}/userhub", environ)


def redis_url(environ: Mapping[str, str] | None = None) -> str:
    """USERHUB_REDIS_URL, else the private Redis on USERHUB_REDIS_PORT (its ACL user
    ``userhub``; the password comes from USERHUB_REDIS_PASSWORD_FILE, RedisTarget)."""
    port = env_int("USERHUB_REDIS_PORT", DEFAULT_REDIS_PORT, environ)
    return env_str("USERHUB_REDIS_URL", f"redis://userhub@127.0.0.1:{port}/0", environ)


def worker_port(environ: Mapping[str, str] | None = None) -> int:
    """Where a worker listens: 0, an ephemeral port, unless USERHUB_WORKER_PORT fixes it
    (supervisord starts N workers of a kind with no port bookkeeping; each tells the
    pool manager the port it got)."""
    return env_int("USERHUB_WORKER_PORT", 0, environ)


def admin_addr(environ: Mapping[str, str] | None = None) -> tuple[str, int]:
    """Where a host's gateways serve /metrics (shared with SO_REUSEPORT, like the public port)."""
    return parse_addr(env_str("USERHUB_ADMIN_ADDR", DEFAULT_ADMIN_ADDR, environ))


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
