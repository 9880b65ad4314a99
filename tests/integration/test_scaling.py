"""Scaling a kind up and down at run time with supervisorctl, nothing else restarted."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.integration.conftest import sign_up_and_log_in
from tests.integration.tree import Tree, wait_until

pytestmark = pytest.mark.integration


def running(tree: Tree) -> dict[str, int]:
    return {name: pid for name, (state, pid) in tree.status().items() if state == "RUNNING"}


def ready_pids(tree: Tree, kind: str) -> set[int]:
    return {w.pid for w in tree.workers(kind).workers if w.ready}


@pytest.mark.parametrize("kind", ["db_worker", "cache_worker"])
async def test_a_spare_joins_serves_and_leaves_without_restarting_the_rest(
    tree: Tree, http: aiohttp.ClientSession, kind: str
) -> None:
    spare = f"{kind}_spare:{kind}_02"  # numbering goes on after the tree's two
    # Every program but the spares RUNNING (a fresh tree may still be STARTING some).
    await asyncio.to_thread(
        wait_until,
        lambda: all(
            state == "RUNNING"
            for name, (state, _) in tree.status().items()
            if "_spare:" not in name
        ),
        30,
        "the tree to be RUNNING",
    )
    before = running(tree)
    assert spare not in before, "spares are declared but not started"
    pids_before = ready_pids(tree, kind)

    await asyncio.to_thread(tree.ctl, "start", spare)
    spare_pid = await asyncio.to_thread(
        wait_until, lambda: tree.status()[spare][1], 15, f"{spare} to start"
    )
    await asyncio.to_thread(
        wait_until,
        lambda: ready_pids(tree, kind) == pids_before | {spare_pid},
        15,
        f"{spare} to register with the pool manager",
    )
    # The whole flow still works with the spare in the pool.
    account = await sign_up_and_log_in(http, nickname="Scaled")
    for _ in range(20):
        async with http.get("/api/v1/profile", headers=account.auth) as r:
            assert r.status == 200, await r.text()

    await asyncio.to_thread(tree.ctl, "stop", spare)
    await asyncio.to_thread(
        wait_until, lambda: ready_pids(tree, kind) == pids_before, 15, f"{spare} to leave"
    )
    assert running(tree) == before, "no other program was restarted"
    async with http.get("/api/v1/profile", headers=account.auth) as r:
        assert r.status == 200, await r.text()
