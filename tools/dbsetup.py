"""Database set-up: a private MariaDB data directory, its account, and the schema.

``python -m tools.dbsetup init`` creates the private data directory (once).
``python -m tools.dbsetup bootstrap`` waits for the private server, then creates the
database and the ``userhub`` account over the local socket (as the OS user, who owns
the server) and applies the schema. ``python -m tools.dbsetup schema`` applies the
schema through ``USERHUB_MYSQL_DSN`` alone, for a server you run yourself.
Every step is idempotent: running it again changes nothing.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pymysql

from actors.runtime.config import MysqlDsn, mysql_dsn, var_dir

SCHEMA = Path(__file__).resolve().parents[1] / "actors" / "db" / "schema.sql"


def _client() -> str:
    for name in ("mariadb", "mysql"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("the mariadb client is missing: apt-get install mariadb-client")


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
            f"--user={getpass.getuser()}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return True


def wait_for_socket(socket: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if socket.exists():
            probe = subprocess.run(
                [_client(), "--no-defaults", f"--socket={socket}", "-u", getpass.getuser(),
                 "-e", "SELECT 1"],
                capture_output=True,
                timeout=10,
            )  # fmt: skip
            if probe.returncode == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"MariaDB did not answer on {socket} within {timeout_s:.0f}s")


def bootstrap(socket: Path, dsn: MysqlDsn) -> None:
    """Create the database and the service account on the private server."""
    user = dsn.user.replace("'", "''")
    password = dsn.password.replace("'", "''")
    db = dsn.database.replace("`", "``")
    sql = f"""
        CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
        CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1' IDENTIFIED BY '{password}';
        CREATE USER IF NOT EXISTS '{user}'@'localhost' IDENTIFIED BY '{password}';
        GRANT ALL PRIVILEGES ON `{db}`.* TO '{user}'@'127.0.0.1';
        GRANT ALL PRIVILEGES ON `{db}`.* TO '{user}'@'localhost';
        GRANT PROCESS ON *.* TO '{user}'@'127.0.0.1';
    """
    subprocess.run(
        [_client(), "--no-defaults", f"--socket={socket}", "-u", getpass.getuser()],
        input=sql.encode(),
        check=True,
        capture_output=True,
        timeout=30,
    )


def apply_schema(dsn: MysqlDsn, timeout_s: float = 60) -> None:
    """Apply schema.sql through the DSN, retrying while the server comes up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = pymysql.connect(
                host=dsn.host,
                port=dsn.port,
                user=dsn.user,
                password=dsn.password,
                database=dsn.database,
                connect_timeout=3,
                autocommit=True,
            )
            break
        except pymysql.err.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    with conn, conn.cursor() as cur:
        for statement in _statements(SCHEMA.read_text()):
            cur.execute(statement)


def _statements(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.dbsetup")
    parser.add_argument("step", choices=["init", "bootstrap", "schema"])
    args = parser.parse_args(argv)
    var = var_dir()
    dsn = MysqlDsn.parse(mysql_dsn()) if args.step != "init" else None
    if args.step == "init":
        created = init_datadir(var / "mysql")
        print("created a private MariaDB data directory" if created else "data directory ok")
    elif args.step == "bootstrap":
        assert dsn is not None
        socket = var / "run" / "mysqld.sock"
        wait_for_socket(socket, float(os.environ.get("USERHUB_MYSQL_START_TIMEOUT_S", "60")))
        bootstrap(socket, dsn)
        apply_schema(dsn)
        print("database, account and schema ready")
    else:
        assert dsn is not None
        apply_schema(dsn)
        print("schema ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
