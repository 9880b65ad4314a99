"""Where MariaDB and Redis are, and how an actor logs in to them.

The DSN and URL a tree exports name the account but no password; the password is
read from a 0600 file under the secrets directory (tools.secrets makes them), so it
never sits in an environment every child process inherits or on a command line. A
DSN or URL that carries a password of its own (a server you run yourself) is used
as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from actors.runtime.env import env_str, mysql_dsn, redis_url, secrets_dir

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
            mysql=_file("USERHUB_MYSQL_PASSWORD_FILE", directory / MYSQL_PASSWORD_NAME, environ),
            redis=_file("USERHUB_REDIS_PASSWORD_FILE", directory / REDIS_PASSWORD_NAME, environ),
            redis_admin=directory / REDIS_ADMIN_PASSWORD_NAME,
            redis_conf=directory / REDIS_CONF_NAME,
        )


def _file(name: str, default: Path, environ: Mapping[str, str] | None) -> Path:
    return Path(env_str(name, str(default), environ))


def read_password(path: Path) -> str | None:
    """The password kept in ``path`` (surrounding white space dropped); None if there
    is no such file. A server that needs a password then refuses the connection,
    which says more than a guess here could."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return text.strip()


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
