"""What the tree as a whole is started with, printed for the shell.

supervisord.conf reads these settings as ``%(ENV_...)s`` and the scripts as shell
variables, so they must be in the environment before supervisord starts:
scripts/env.sh exports what ``python -m actors.runtime.tree_config --shell`` prints.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from actors.runtime.env import (
    DEFAULT_HTTP_ADDR,
    DEFAULT_MANAGER_ADDR,
    DEFAULT_MYSQL_PORT,
    DEFAULT_REDIS_PORT,
    admin_addr,
    env_bool,
    env_int,
    env_str,
    format_addr,
    mysql_dsn,
    parse_addr,
    pki_dir,
    redis_url,
    repo_root,
    var_dir,
)
from actors.runtime.stores import SecretFiles


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
    scripts/env.sh exports what ``python -m actors.runtime.tree_config --shell`` prints.
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
            python=Path(env_str("USERHUB_PYTHON", str(root / ".venv" / "bin" / "python"), env)),
            os_user=env_str("USERHUB_OS_USER", _os_user(), env),
            mysql_port=env_int("USERHUB_MYSQL_PORT", DEFAULT_MYSQL_PORT, env),
            redis_port=env_int("USERHUB_REDIS_PORT", DEFAULT_REDIS_PORT, env),
            mysql_dsn=mysql_dsn(env),
            redis_url=redis_url(env),
            start_mysql=env_bool("USERHUB_START_MYSQL", not env.get("USERHUB_MYSQL_DSN"), env),
            start_redis=env_bool("USERHUB_START_REDIS", not env.get("USERHUB_REDIS_URL"), env),
            redis_maxmemory=env_str("USERHUB_REDIS_MAXMEMORY", "2gb", env),
            innodb_buffer_pool=env_str("USERHUB_INNODB_BUFFER_POOL", "4G", env),
            manager_addr=parse_addr(env_str("USERHUB_MANAGER_ADDR", DEFAULT_MANAGER_ADDR, env)),
            http_addr=parse_addr(env_str("USERHUB_HTTP_ADDR", DEFAULT_HTTP_ADDR, env)),
            admin_addr=admin_addr(env),
            db_workers=env_int("USERHUB_DB_WORKERS", 2, env),
            cache_workers=env_int("USERHUB_CACHE_WORKERS", 2, env),
            gateways=env_int("USERHUB_GATEWAYS", 2, env),
            spare_workers=env_int("USERHUB_SPARE_WORKERS", 2, env),
            metrics_dir=Path(env_str("PROMETHEUS_MULTIPROC_DIR", str(var / "metrics"), env)),
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
        prog="python -m actors.runtime.tree_config",
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
