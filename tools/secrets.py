"""The private MariaDB's and Redis's passwords: made at set-up, kept under var/secrets.

    python -m tools.secrets ensure    make what is missing, tighten modes, write the
                                      private Redis's config file (what `make run` does)
    python -m tools.secrets show      each file and its mode (never a value)

Each password is 32 random bytes, URL-safe base64 (no character needs quoting in a
DSN, in SQL or in a Redis ACL rule). The directory is 0700 and every file 0600,
written to a temporary name opened with that mode and renamed into place, so no
moment exists at which another user could read one. A tree started again keeps
its passwords; only tools.rotate replaces them.

Only the servers the tree starts itself get passwords from here: with a DSN or URL
of one's own (USERHUB_START_MYSQL / _REDIS false) nothing is made for that server,
and a password file put there by hand is never overwritten.
"""

from __future__ import annotations

import argparse
import os
import secrets as random_source
import stat
import sys
from pathlib import Path

from actors.runtime.stores import SecretFiles, read_password
from actors.runtime.tree_config import TreeConfig
from tools import redis_acl

PASSWORD_BYTES = 32


def new_password() -> str:
    return random_source.token_urlsafe(PASSWORD_BYTES)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 from the first byte."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)  # whatever the umask took away, nothing more is granted
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def secure_directory(directory: Path) -> None:
    """``directory``, created if missing, mode 0700 whatever it was."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)


def read_secret(path: Path) -> str:
    """The password in ``path``; a missing file is an error that names the fix."""
    value = read_password(path)
    if not value:
        raise FileNotFoundError(f"{path} is missing or empty: run `python -m tools.secrets ensure`")
    return value


def _ensure_file(path: Path) -> bool:
    """Make ``path`` with a new password unless it holds one; tighten its mode. True if made."""
    if read_password(path):
        if stat.S_IMODE(path.stat().st_mode) != 0o600:
            os.chmod(path, 0o600)
        return False
    write_private(path, new_password() + "\n")
    return True


def ensure(tree: TreeConfig) -> list[str]:
    """The passwords of the servers this tree starts, and the private Redis's config
    file made from them. Returns the names of the passwords made just now."""
    files = tree.secrets
    made: list[str] = []
    wanted: list[tuple[str, Path]] = []
    if tree.start_mysql:
        wanted.append(("mysql", files.mysql))
    if tree.start_redis:
        wanted += [("redis", files.redis), ("redis-admin", files.redis_admin)]
    if not wanted:
        return made
    secure_directory(files.directory)
    for name, path in wanted:
        # A file named by its own setting may sit in a directory shared with other
        # things (/run/secrets, /etc/...): made 0700 if missing, never re-moded.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if _ensure_file(path):
            made.append(name)
    if tree.start_redis:
        write_redis_conf(tree)
    return made


def write_redis_conf(
    tree: TreeConfig,
    user_passwords: tuple[str, ...] = (),
    admin_passwords: tuple[str, ...] = (),
) -> None:
    """The private Redis's config file, from the tree's settings and its passwords
    (those in the files unless given: a rotation gives two of each for a while).

    Remade at every start so a changed setting (port, maxmemory) takes effect when
    Redis next starts; it holds only SHA-256 hashes of the passwords, but stays
    0600 all the same.
    """
    files = tree.secrets
    text = redis_acl.render_conf(
        port=tree.redis_port,
        directory=tree.var_dir / "redis",
        maxmemory=tree.redis_maxmemory,
        user=redis_acl.tree_user(tree),
        user_passwords=user_passwords or (read_secret(files.redis),),
        admin_passwords=admin_passwords or (read_secret(files.redis_admin),),
    )
    write_private(files.redis_conf, text)


def describe(files: SecretFiles) -> list[str]:
    lines = []
    for path in (files.directory, files.mysql, files.redis, files.redis_admin, files.redis_conf):
        try:
            mode = f"{stat.S_IMODE(path.stat().st_mode):04o}"
        except FileNotFoundError:
            mode = "missing"
        lines.append(f"{mode:8} {path}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.secrets", description=__doc__)
    parser.add_argument("command", choices=("ensure", "show"))
    args = parser.parse_args(argv)
    tree = TreeConfig.from_env()
    if args.command == "ensure":
        made = ensure(tree)
        if made:
            print(f"made passwords for {', '.join(made)} in {tree.secrets.directory}")
    else:
        print("\n".join(describe(tree.secrets)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
