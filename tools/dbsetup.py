"""Database set-up: a private MariaDB data directory, its schema, and its one account.

``python -m tools.dbsetup init`` creates the private data directory (once).
``python -m tools.dbsetup bootstrap`` waits for the private server, then, as its
administrator over the local socket (MariaDB's unix_socket login as the OS user who
owns the server), creates the database, applies the schema and brings the
``userhub`` account to exactly what the actors need: its password from
var/secrets (tools.secrets) and SELECT, INSERT, UPDATE, DELETE on its own database,
nothing else. An account made by an older set-up (a fixed password, every privilege
on the database, PROCESS) is brought to that state too.
``python -m tools.dbsetup schema [--dsn DSN]`` is for a server you run yourself:
it checks through ``USERHUB_MYSQL_DSN`` that the tables are there, and when they are
not, applies the schema through ``--dsn`` (an account allowed to CREATE, whose
password is asked for at the terminal: a command line is visible to every user) or,
without it, through the same DSN.
Every step is idempotent: running it again changes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pymysql

from actors.runtime.env import var_dir
from actors.runtime.stores import MysqlDsn, SecretFiles

SCHEMA = Path(__file__).resolve().parents[1] / "actors" / "db" / "schema.sql"

#: What the actors do with their database: nothing more (no DDL, no FILE, no PROCESS).
SERVICE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
#: Where the account may log in from: the private server listens on loopback only.
ACCOUNT_HOSTS = ("127.0.0.1", "localhost")


def socket_user() -> str:
    """The OS user this process runs as: MariaDB's unix_socket login checks exactly it."""
    return pwd.getpwuid(os.geteuid()).pw_name


def init_datadir(datadir: Path) -> bool:
    """Create a private MariaDB data directory unless one is there. True if created."""
    if (datadir / "mysql").is_dir():
        return False
    installer = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    if installer is None:
        raise SystemExit("MariaDB is missing: apt-get install mariadb-server")
    datadir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            installer,
            "--no-defaults",
            f"--datadir={datadir}",
            f"--user={socket_user()}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return True


def socket_path(environ: Mapping[str, str] | None = None) -> Path:
    """The private server's socket (supervisord.conf puts it there)."""
    return var_dir(environ) / "run" / "mysqld.sock"


def admin_connect(socket: Path, timeout_s: float = 10) -> pymysql.Connection:
    """The private server's administrator, over its socket: no password exists to steal."""
    return pymysql.connect(
        unix_socket=str(socket),
        user=socket_user(),
        connect_timeout=timeout_s,
        read_timeout=60,
        write_timeout=60,
        autocommit=True,
    )


def wait_for_server(socket: Path, timeout_s: float) -> pymysql.Connection:
    """An administrator's connection, once the private server answers on ``socket``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return admin_connect(socket, timeout_s=3)
        except pymysql.err.OperationalError as exc:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"MariaDB did not answer on {socket} within {timeout_s:.0f}s: {exc}"
                ) from None
            time.sleep(0.2)


def _account(conn: pymysql.Connection, user: str, host: str) -> str:
    return f"{conn.escape(user)}@{conn.escape(host)}"


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def privileges(conn: pymysql.Connection, user: str, host: str) -> set[tuple[str, str, str]]:
    """Every privilege ``user@host`` holds, as (level, object, privilege); USAGE
    (the right to log in at all) is left out. WITH GRANT OPTION shows as a GRANT
    OPTION privilege at its level."""
    grantee = f"'{user}'@'{host}'"
    queries = (
        ("global", "SELECT '*', privilege_type, is_grantable FROM information_schema"
                   ".user_privileges WHERE grantee = %s"),
        ("schema", "SELECT table_schema, privilege_type, is_grantable FROM information_schema"
                   ".schema_privileges WHERE grantee = %s"),
        ("table", "SELECT CONCAT(table_schema, '.', table_name), privilege_type, is_grantable"
                  " FROM information_schema.table_privileges WHERE grantee = %s"),
        ("column", "SELECT CONCAT(table_schema, '.', table_name, '.', column_name),"
                   " privilege_type, is_grantable FROM information_schema.column_privileges"
                   " WHERE grantee = %s"),
    )  # fmt: skip
    found: set[tuple[str, str, str]] = set()
    with conn.cursor() as cur:
        for level, sql in queries:
            cur.execute(sql, (grantee,))
            for obj, privilege, grantable in cur.fetchall():
                if privilege != "USAGE":
                    found.add((level, str(obj), str(privilege)))
                if grantable == "YES":
                    found.add((level, str(obj), "GRANT OPTION"))
    return found


def wanted_privileges(database: str) -> set[tuple[str, str, str]]:
    return {("schema", database, privilege) for privilege in SERVICE_PRIVILEGES}


def ensure_account(conn: pymysql.Connection, dsn: MysqlDsn, password: str) -> list[str]:
    """The service account at each of ACCOUNT_HOSTS with ``password`` and exactly
    SERVICE_PRIVILEGES on its database. Returns what had to change, for the log.

    Privileges are rewritten only when they differ, so re-running set-up under a
    live tree never leaves a moment in which the account has none.
    """
    changed: list[str] = []
    with conn.cursor() as cur:
        for host in ACCOUNT_HOSTS:
            account = _account(conn, dsn.user, host)
            cur.execute(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY %s", (password,))
            cur.execute(f"ALTER USER {account} IDENTIFIED BY %s", (password,))
            if privileges(conn, dsn.user, host) != wanted_privileges(dsn.database):
                cur.execute(f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {account}")
                granted = ", ".join(SERVICE_PRIVILEGES)
                cur.execute(f"GRANT {granted} ON {_ident(dsn.database)}.* TO {account}")
                changed.append(f"privileges of {dsn.user}@{host}")
    return changed


def allow_passwords(conn: pymysql.Connection, dsn: MysqlDsn, passwords: tuple[str, ...]) -> None:
    """Let the service account log in with any of ``passwords`` (a rotation's overlap:
    processes started before it and after it both get in)."""
    using = " OR ".join("mysql_native_password USING PASSWORD(%s)" for _ in passwords)
    with conn.cursor() as cur:
        for host in ACCOUNT_HOSTS:
            cur.execute(
                f"ALTER USER {_account(conn, dsn.user, host)} IDENTIFIED VIA {using}", passwords
            )


def bootstrap(socket: Path, dsn: MysqlDsn, password: str, timeout_s: float = 60) -> list[str]:
    """Database, schema and service account on the private server, as its administrator."""
    conn = wait_for_server(socket, timeout_s)
    with conn:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE DATABASE IF NOT EXISTS {_ident(dsn.database)}"
                " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        conn.select_db(dsn.database)
        with conn.cursor() as cur:
            for statement in _statements(SCHEMA.read_text()):
                cur.execute(statement)
        return ensure_account(conn, dsn, password)


def connect(dsn: MysqlDsn, timeout_s: float = 60) -> pymysql.Connection:
    """A connection through ``dsn``, retrying while the server comes up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return pymysql.connect(
                host=dsn.host,
                port=dsn.port,
                user=dsn.user,
                password=dsn.password,
                database=dsn.database,
                connect_timeout=3,
                autocommit=True,
            )
        except pymysql.err.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def apply_schema(dsn: MysqlDsn, timeout_s: float = 60) -> None:
    """Apply schema.sql through ``dsn``, which must be allowed to CREATE."""
    conn = connect(dsn, timeout_s)
    with conn, conn.cursor() as cur:
        for statement in _statements(SCHEMA.read_text()):
            cur.execute(statement)


def missing_tables(dsn: MysqlDsn, timeout_s: float = 60) -> list[str]:
    """The tables of schema.sql that ``dsn``'s database lacks (the account sees the
    tables it holds privileges on, so the service account suffices to ask)."""
    wanted = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA.read_text())
    conn = connect(dsn, timeout_s)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (dsn.database,),
        )
        present = {str(row[0]) for row in cur.fetchall()}
    return [table for table in wanted if table not in present]


def ensure_schema(
    dsn: MysqlDsn, admin: Callable[[], MysqlDsn] | None = None, timeout_s: float = 60
) -> bool:
    """Apply the schema through the DSN ``admin`` gives (else ``dsn``) unless every
    table is there: the service account may not CREATE. True if it was applied."""
    if not missing_tables(dsn, timeout_s):
        return False
    apply_schema(admin() if admin is not None else dsn, timeout_s)
    return True


def ask_password(dsn: MysqlDsn) -> MysqlDsn:
    """``dsn`` with the password typed at the terminal, unless it carries one."""
    if dsn.password:
        return dsn
    typed = getpass.getpass(f"password of {dsn.user}@{dsn.host}:{dsn.port}: ")
    return dataclasses.replace(dsn, password=typed)


def _statements(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.dbsetup")
    parser.add_argument("step", choices=["init", "bootstrap", "schema"])
    parser.add_argument(
        "--dsn",
        default="",
        help="schema: mysql://user@host:port/db of an account allowed to CREATE, used only"
        " if tables are missing; its password is asked for",
    )
    args = parser.parse_args(argv)
    timeout_s = float(os.environ.get("USERHUB_MYSQL_START_TIMEOUT_S", "60"))
    if args.step == "init":
        created = init_datadir(var_dir() / "mysql")
        print("created a private MariaDB data directory" if created else "data directory ok")
    elif args.step == "bootstrap":
        # The password the actors will present: the DSN's own, else the secret file's.
        dsn = MysqlDsn.from_env()
        if not dsn.password:
            raise SystemExit(
                f"no password for {dsn.user}: {SecretFiles.from_env().mysql} is missing;"
                " run `python -m tools.secrets ensure`"
            )
        changed = bootstrap(socket_path(), dsn, dsn.password, timeout_s)
        for what in changed:
            print(f"set {what}")
        print("database, schema and account ready")
    else:
        given = args.dsn

        def admin() -> MysqlDsn:
            return ask_password(MysqlDsn.parse(given))

        applied = ensure_schema(MysqlDsn.from_env(), admin if given else None, timeout_s)
        print("schema applied" if applied else "schema ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
