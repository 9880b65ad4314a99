"""The short chaos run: every kind of actor is killed under load; nothing is lost."""

from __future__ import annotations

import pytest

from actors.runtime.stores import MysqlDsn
from chaos import run as chaos_run
from tests.integration.tree import Tree
from tools import redis_acl

pytestmark = pytest.mark.integration


async def test_short_chaos_run_loses_nothing(tree: Tree) -> None:
    target = chaos_run.Target(
        base_url=tree.base_url,
        ctl=tree.ctl,
        manager_addr=tree.manager_addr,
        pki_dir=tree.pki_dir,
        mysql=MysqlDsn.from_env(tree.env),
        redis=redis_acl.admin_target(tree.config),
    )
    report = await chaos_run.run(target, duration=22, interval=4, users=8, seed=7)
    assert report["kinds_killed"] == sorted(chaos_run.KINDS), report["killed"]
    assert report["lost_writes"] == 0, report["lost_detail"]
    assert report["failed_idempotent"] == 0, report["failures_sample"]
    assert report["acknowledged_writes"] > 100
    assert report["leaked_mysql_connections"] == 0
    assert report["leaked_redis_connections"] == 0
    # Every killed actor came back (supervisord restarted it and it serves again).
    assert all(k["recovery_s"] != float("inf") for k in report["killed"])
