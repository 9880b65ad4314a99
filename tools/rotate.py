"""Rotate a running tree's credentials: server passwords and actor certificates.

    python -m tools.rotate          (what `make rotate-credentials` runs)

With the private MariaDB and Redis, each password is replaced without a moment in
which an actor cannot connect, and so are the tree's certificates:

1. The servers accept the old and a new password at once (MariaDB: ``IDENTIFIED VIA
   ... OR ...`` over the administrator's socket; Redis: ``ACL SETUSER`` with both
   hashes, and the config file says the same in case Redis restarts meanwhile). The
   new passwords are written to var/secrets. A new CA joins the trusted bundle.
2. Every running actor is restarted, one process at a time, each waited for until
   it serves again: they now hold the new passwords and trust both CAs.
3. The servers forget the old passwords; new certificates are issued by the new CA.
4. Every actor is restarted once more, one at a time, to present them.

Each of the K processes of a kind keeps serving while another restarts, so a kind
with two or more processes never stops answering. Against servers of one's own
(USERHUB_START_MYSQL / _REDIS false) only the certificates rotate here: the
operator changes those passwords (docs/security.md, Credentials).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import redis

from actors.runtime.stores import MysqlDsn
from actors.runtime.tree_config import TreeConfig
from tools import admin, dbsetup, pki, redis_acl, secrets
from tools.ports import listening
from tools.supervisorctl import Supervisorctl, wait_until

#: Restarted in this order: the pool manager first, so workers and gateways
#: register and lease again once, then the servers' clients, then the gateways.
KIND_ORDER = ("pool_manager", "db_worker", "cache_worker", "gateway")


@dataclass
class Rotation:
    """What one rotation did, for the operator and the tests."""

    mysql: bool = False
    redis: bool = False
    restarted: list[str] = field(default_factory=list)
    seconds: float = 0.0


def kind_of(program: str) -> str:
    """``db_worker_spare:db_worker_02`` -> ``db_worker``."""
    return program.split(":")[0].removesuffix("_spare")


class Restarter:
    """Restart a tree's actors one at a time, each until it serves again."""

    def __init__(self, tree: TreeConfig, ctl: Supervisorctl, timeout_s: float = 60) -> None:
        self.tree = tree
        self.ctl = ctl
        self.timeout_s = timeout_s

    def actors(self) -> list[str]:
        """The running actors, in restart order (spares that were started included)."""
        running = [n for n, (state, _) in self.ctl.status().items() if state == "RUNNING"]
        ours = [n for n in running if kind_of(n) in KIND_ORDER]
        return sorted(ours, key=lambda n: (KIND_ORDER.index(kind_of(n)), n))

    def restart_all(self, log: Callable[[str], None]) -> list[str]:
        done = []
        for program in self.actors():
            self.restart(program)
            log(f"  restarted {program}")
            done.append(program)
        return done

    def restart(self, program: str) -> None:
        old_pid = self.ctl.pid(program)
        ready_before = self._ready_workers()
        self.ctl.ctl("restart", program, timeout=self.timeout_s)
        pid = self.ctl.wait_restarted(program, old_pid, self.timeout_s)
        kind = kind_of(program)
        if kind == "gateway":
            port = self.tree.http_addr[1]
            wait_until(lambda: listening(pid, port), self.timeout_s, f"{program} to listen")
        elif kind == "pool_manager":
            # Every worker registered again with the new pool manager.
            wait_until(
                lambda: self._ready_workers() >= ready_before,
                self.timeout_s,
                "the workers to register again",
            )
        else:
            wait_until(lambda: self._is_ready(pid), self.timeout_s, f"{program} to be ready")

    def _workers(self) -> list[tuple[int, bool]]:
        reply = asyncio.run(admin.list_workers(self.tree.manager_addr, self.tree.pki_dir))
        return [(w.pid, w.ready) for w in reply.workers]

    def _ready_workers(self) -> int:
        return sum(1 for _, ready in self._workers() if ready)

    def _is_ready(self, pid: int) -> bool:
        return (pid, True) in self._workers()


def _redis_admin(tree: TreeConfig) -> redis.Redis:
    target = redis_acl.admin_target(tree)
    return redis.Redis.from_url(
        target.url, username=target.username, password=target.password, socket_timeout=5
    )


def _set_redis_users(
    tree: TreeConfig, users: tuple[str, ...], admins: tuple[str, ...], client: redis.Redis
) -> None:
    """Redis, now and after a restart, accepts exactly these passwords."""
    user = redis_acl.tree_user(tree)
    hashes = tuple(redis_acl.password_hash(p) for p in users)
    admin_hashes = tuple(redis_acl.password_hash(p) for p in admins)
    rules = {
        user: redis_acl.userhub_rule(hashes),
        redis_acl.ADMIN_USER: redis_acl.admin_rule(admin_hashes),
    }
    for name, rule in rules.items():
        client.execute_command("ACL", "SETUSER", name, *rule.split())  # type: ignore[no-untyped-call]
    secrets.write_redis_conf(tree, users, admins)


def rotate(tree: TreeConfig, ctl: Supervisorctl, log: Callable[[str], None] = print) -> Rotation:
    """Rotate everything the tree in ``ctl``'s environment owns (see the module's docstring)."""
    started = time.monotonic()
    # A password written in the DSN or URL is the operator's to change: one from a
    # file there would go unused, and the old one stop working.
    done = Rotation(
        mysql=tree.start_mysql and urlsplit(tree.mysql_dsn).password is None,
        redis=tree.start_redis and urlsplit(tree.redis_url).password is None,
    )
    files = tree.secrets
    restarter = Restarter(tree, ctl)
    dsn = MysqlDsn.from_env(ctl.env)
    socket = dbsetup.socket_path(ctl.env)
    new_mysql, new_user, new_admin = (secrets.new_password() for _ in range(3))

    if done.mysql:
        old_mysql = secrets.read_secret(files.mysql)
        with dbsetup.admin_connect(socket) as conn:
            dbsetup.allow_passwords(conn, dsn, (old_mysql, new_mysql))
        secrets.write_private(files.mysql, new_mysql + "\n")
        log("MariaDB: the new password is accepted beside the old one")
    if done.redis:
        old_user, old_admin = (
            secrets.read_secret(files.redis),
            secrets.read_secret(files.redis_admin),
        )
        with _redis_admin(tree) as client:
            _set_redis_users(tree, (old_user, new_user), (old_admin, new_admin), client)
        secrets.write_private(files.redis, new_user + "\n")
        secrets.write_private(files.redis_admin, new_admin + "\n")
        log("Redis: the new passwords are accepted beside the old ones")
    # A CA staged by a rotation that stopped before reissuing is used, not replaced:
    # replacing it would drop the CA the running certificates come from.
    if not pki.staged(tree.pki_dir):
        pki.stage(tree.pki_dir)
    log("a new CA is trusted beside the old one; restarting every actor")
    done.restarted += restarter.restart_all(log)

    if done.mysql:
        with dbsetup.admin_connect(socket) as conn:
            dbsetup.ensure_account(conn, dsn, new_mysql)
        log("MariaDB: the old password is refused from now on")
    if done.redis:
        with _redis_admin(tree) as client:
            _set_redis_users(tree, (new_user,), (new_admin,), client)
        log("Redis: the old passwords are refused from now on")
    pki.reissue(tree.pki_dir)
    log("new certificates from the new CA; restarting every actor")
    done.restarted += restarter.restart_all(log)
    done.seconds = round(time.monotonic() - started, 1)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.rotate", description=__doc__)
    parser.parse_args(argv)
    tree = TreeConfig.from_env()
    ctl = Supervisorctl.from_env()
    if not ctl.status():
        print("no tree is running here (supervisorctl status is empty)", file=sys.stderr)
        return 1
    done = rotate(tree, ctl)
    if not (done.mysql and done.redis):
        print(
            "servers of your own, or passwords written in USERHUB_MYSQL_DSN /"
            " USERHUB_REDIS_URL, were left alone: change those on the servers and where"
            " the actors read them, then `supervisorctl restart` the actors one at a"
            " time (docs/security.md, Credentials)"
        )
    print(f"credentials rotated in {done.seconds} s ({len(done.restarted)} restarts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
