"""Kill actors under load and report what, if anything, was lost.

    python -m chaos.run [--duration 60] [--interval 5] [--users 20] [--json]

Against a tree started with `make run` (same environment: scripts/env.sh), it signs
up users, runs a mixed read/write load with unique nickname writes, and every
``interval`` seconds kill -9s a random actor (db_worker, cache_worker, gateway,
pool_manager; each kind at least once when the run is long enough). Afterwards it
checks every acknowledged write (chaos.checker), counts MySQL and Redis connections
against the count before the run, measures each killed actor's time until it
serves again, and writes chaos/results/latest.json. Loopback only, bounded in time,
and it leaves the tree as it found it: supervisord restarts every killed process.

With ``--faults`` (chaos.faults), after the kills and under the same load, it also
stops Redis, restarts MariaDB and, when the tree reaches them through fault proxies,
black-holes, resets or delays those links, one fault at a time; the report adds each
fault's error rate, latency and recovery time. ``--private-tree`` runs all of it on
a throwaway tree (free ports, a temporary directory, Redis and MariaDB behind
proxies) instead of the one `make run` started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NotRequired, TypedDict

import aiohttp
import pymysql
import redis

from actors.runtime.config import CacheWorkerConfig
from actors.runtime.env import format_addr, parse_addr
from actors.runtime.stores import MysqlDsn, RedisTarget
from actors.runtime.tree_config import TreeConfig
from chaos import checker, faults, workload
from chaos.proxied_tree import proxied_tree
from chaos.proxy import RemoteProxy
from tools import admin, redis_acl
from tools.ports import listening
from tools.supervisorctl import Supervisorctl, parse_status

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "chaos" / "results" / "latest.json"
KINDS = ("db_worker", "cache_worker", "gateway", "pool_manager")
WARM_UP_S = 3.0


class Kill(TypedDict):
    """One kill -9 of the run."""

    program: str
    pid: int
    at_s: float  # since the kills began
    recovery_s: NotRequired[float]  # until the replacement served (inf: never); set at the end


class Report(TypedDict):
    """What a run found: printed, and written as JSON to chaos/results/latest.json."""

    duration_s: float
    users: int
    kills: int
    killed: list[Kill]
    kinds_killed: list[str]
    requests: int
    failed_idempotent: int
    acknowledged_writes: int
    lost_writes: int
    lost_detail: list[str]
    indeterminate_writes: int
    failed_writes: int
    errors_in_fault_windows: list[int]
    max_recovery_s: float
    mysql_connections_before: int
    mysql_connections_after: int
    mysql_connections_allowed: int
    leaked_mysql_connections: int
    redis_connections_before: int
    redis_connections_after: int
    redis_connections_allowed: int
    leaked_redis_connections: int
    failures_sample: list[str]
    faults: list[faults.FaultSummary]
    max_fault_recovery_s: float


@dataclass
class Target:
    """Where the tree is and how to reach its supervisor."""

    base_url: str
    ctl: Callable[..., str]
    manager_addr: tuple[str, int]
    pki_dir: Path
    mysql: MysqlDsn  # the tree's own account: counting connections needs no privilege
    redis: RedisTarget  # an account allowed INFO (the private Redis's admin)
    # "redis" / "mysql" -> the fault proxy between the workers and that server, if any
    proxies: dict[str, faults.ProxyControl] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Target:
        """The tree this process's environment describes (`make run`'s, after env.sh)."""
        tree = TreeConfig.from_env()
        return cls(
            base_url=f"http://{format_addr(tree.http_addr)}",
            ctl=Supervisorctl.from_env().ctl,
            manager_addr=tree.manager_addr,
            pki_dir=tree.pki_dir,
            mysql=MysqlDsn.from_env(),
            redis=redis_acl.admin_target(tree),
        )

    def processes(self) -> dict[str, tuple[str, int]]:
        return parse_status(self.ctl("status"))


def mysql_connections(d: MysqlDsn) -> int:
    conn = pymysql.connect(
        host=d.host, port=d.port, user=d.user, password=d.password, connect_timeout=3
    )
    with conn, conn.cursor() as cur:
        cur.execute("SHOW STATUS LIKE 'Threads_connected'")
        row = cur.fetchone()
    return int(row[1]) - 1 if row else -1  # not counting this probe


def redis_connections(target: RedisTarget) -> int:
    client = redis.Redis.from_url(
        target.url, username=target.username, password=target.password, socket_timeout=3
    )
    try:
        return int(client.info("clients")["connected_clients"]) - 1
    finally:
        client.close()


def kind_of(program: str) -> str:
    """The actor kind of a supervisord program name: spares (``db_worker_spare:...``,
    started on demand) count as their kind."""
    return program.split(":")[0].removesuffix("_spare")


async def serving_again(target: Target, program: str, old_pid: int, killed_at: float) -> float:
    """Seconds from the kill until the replacement serves: a worker registered and ready
    with the pool manager, a gateway listening on the HTTP port, the pool manager
    answering. (supervisord's RUNNING state comes ``startsecs`` later still.)"""
    kind = kind_of(program)
    deadline = killed_at + 60
    while time.monotonic() < deadline:
        out = await asyncio.to_thread(target.ctl, "pid", program)
        pid = int(out.strip()) if out.strip().isdigit() else 0
        if pid not in (0, old_pid):
            if kind in ("db_worker", "cache_worker"):
                serving = await _registered_ready(target, pid)
            elif kind == "gateway":
                serving = listening(pid, int(target.base_url.rsplit(":", 1)[1]))
            else:
                serving = await _manager_answers(target)
            if serving:
                return time.monotonic() - killed_at
        await asyncio.sleep(0.02)
    return float("inf")


async def _registered_ready(target: Target, pid: int) -> bool:
    try:
        reply = await admin.list_workers(target.manager_addr, target.pki_dir, timeout=1)
    except Exception:
        return False
    return any(w.pid == pid and w.ready for w in reply.workers)


async def allowances(target: Target) -> tuple[int, int]:
    """Connections the live tree may hold: the MySQL budget granted to live db_workers,
    and each live cache_worker's Redis pool bound."""
    reply = await admin.list_workers(target.manager_addr, target.pki_dir)
    redis_pool = CacheWorkerConfig.from_env().redis_pool_size
    caches = sum(1 for w in reply.workers if w.kind == "cache_worker")
    return reply.mysql_granted, caches * redis_pool


async def _manager_answers(target: Target) -> bool:
    try:
        conn = await admin.open_manager(target.manager_addr, target.pki_dir, timeout=1)
        conn.close()
        return True
    except Exception:
        return False


async def run(
    target: Target,
    duration: float,
    interval: float,
    users: int,
    seed: int | None = None,
    fault_names: list[str] | None = None,
    fault_hold_s: float = 5.0,
    fault_settle_s: float = 6.0,
) -> Report:
    rng = random.Random(seed)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        accounts = await workload.prepare_accounts(target.base_url, users, http)
        stats = workload.Stats()
        stop = asyncio.Event()
        clients = [
            asyncio.create_task(workload.client_loop(target.base_url, http, a, stats, stop, 10.0))
            for a in accounts
        ]
        kills: list[Kill] = []
        recoveries: list[asyncio.Task[float]] = []
        # Connections are counted under the same load before and after the faults, once
        # every pool has grown to its working size; what remains above is a leak.
        await asyncio.sleep(WARM_UP_S)
        before_mysql = await asyncio.to_thread(mysql_connections, target.mysql)
        before_redis = await asyncio.to_thread(redis_connections, target.redis)
        started = time.monotonic()
        order = list(KINDS)
        rng.shuffle(order)
        while time.monotonic() - started + interval < duration:
            await asyncio.sleep(interval)
            kind = order[len(kills) % len(order)] if len(kills) < len(order) else rng.choice(KINDS)
            running = {
                name: pid
                for name, (state, pid) in (await asyncio.to_thread(target.processes)).items()
                if kind_of(name) == kind and state == "RUNNING"
            }
            if not running:
                continue
            program = rng.choice(sorted(running))
            os.kill(running[program], signal.SIGKILL)
            at = time.monotonic()
            kills.append({"program": program, "pid": running[program], "at_s": at - started})
            recoveries.append(
                asyncio.create_task(serving_again(target, program, running[program], at))
            )
        await asyncio.sleep(max(0.0, duration - (time.monotonic() - started)))
        recovery_times = await asyncio.gather(*recoveries)
        fault_report = await faults.run_all(
            fault_names or [],
            target.ctl,
            target.proxies,
            stats.attempts,
            hold_s=fault_hold_s,
            settle_s=fault_settle_s,
            origin=started,
        )
        await asyncio.sleep(WARM_UP_S)
        after_mysql = await asyncio.to_thread(mysql_connections, target.mysql)
        after_redis = await asyncio.to_thread(redis_connections, target.redis)
        allowed_mysql, allowed_redis = await allowances(target)
        stop.set()
        await asyncio.gather(*clients)
        for kill, seconds in zip(kills, recovery_times, strict=True):
            kill["recovery_s"] = round(seconds, 3)
        final = await workload.final_values(target.base_url, http, accounts)
    verdict = checker.check(stats.history, final)
    window_errors = [
        sum(1 for t in stats.errors_at if 0 <= t - (started + k["at_s"]) < 3) for k in kills
    ]
    return {
        "duration_s": duration,
        "users": users,
        "kills": len(kills),
        "killed": kills,
        "kinds_killed": sorted({kind_of(k["program"]) for k in kills}),
        "requests": stats.requests,
        "failed_idempotent": stats.failed_idempotent,
        "acknowledged_writes": verdict.acknowledged,
        "lost_writes": len(verdict.lost),
        "lost_detail": verdict.lost[:20],
        "indeterminate_writes": verdict.indeterminate,
        "failed_writes": verdict.failed,
        "errors_in_fault_windows": window_errors,
        "max_recovery_s": max((k["recovery_s"] for k in kills), default=0.0),
        "mysql_connections_before": before_mysql,
        "mysql_connections_after": after_mysql,
        # Connections beyond what live workers may hold: a dead worker's connections
        # must be gone and no pool may grow past its grant.
        "mysql_connections_allowed": allowed_mysql,
        "leaked_mysql_connections": max(0, after_mysql - allowed_mysql),
        "redis_connections_before": before_redis,
        "redis_connections_after": after_redis,
        "redis_connections_allowed": allowed_redis,
        "leaked_redis_connections": max(0, after_redis - allowed_redis),
        "failures_sample": stats.failures[:10],
        "faults": fault_report,
        "max_fault_recovery_s": max((f["recovery_s"] for f in fault_report), default=0.0),
    }


def print_table(report: Report) -> None:
    keys = [
        "kills", "kinds_killed", "requests", "failed_idempotent", "acknowledged_writes",
        "lost_writes", "indeterminate_writes", "failed_writes", "errors_in_fault_windows",
        "max_recovery_s", "leaked_mysql_connections", "leaked_redis_connections",
    ]  # fmt: skip
    width = max(len(k) for k in keys)
    fields: Mapping[str, object] = report
    for key in keys:
        print(f"{key:<{width}}  {fields[key]}")
    for kill in report["killed"]:
        print(
            f"  killed {kill['program']:<32} at {kill['at_s']:6.1f}s  back in {kill['recovery_s']}s"
        )
    for f in report.get("faults", []):
        print(
            f"  fault {f['fault']:<16} at {f['at_s']:6.1f}s for {f['window_s']:5.1f}s: "
            f"{f['failed']}/{f['attempts']} attempts failed ({f['error_rate']:.1%}) "
            f"{f['statuses']}, p99 {f['latency_p99_s']}s, max {f['latency_max_s']}s, "
            f"recovered {f['recovery_s']}s after"
        )


@contextmanager
def private_target() -> Iterator[Target]:
    """A throwaway tree with Redis and MariaDB behind fault proxies."""
    with proxied_tree() as proxied:
        tree = proxied.tree
        yield Target(
            base_url=tree.base_url,
            ctl=tree.ctl,
            manager_addr=tree.manager_addr,
            pki_dir=tree.pki_dir,
            mysql=MysqlDsn.from_env(tree.env),
            redis=redis_acl.admin_target(tree.config),
            proxies={"redis": proxied.redis, "mysql": proxied.mysql},
        )


def _proxy_arg(text: str) -> tuple[str, RemoteProxy]:
    dep, _, addr = text.partition("=")
    if dep not in ("redis", "mysql") or not addr:
        raise argparse.ArgumentTypeError("use redis=HOST:PORT or mysql=HOST:PORT")
    return dep, RemoteProxy(parse_addr(addr))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (max 600)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between kills")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--faults", default="",
        help="dependency faults after the kills: default, all, none or a comma list of "
        + ", ".join(faults.ALL),
    )  # fmt: skip
    parser.add_argument("--fault-hold", type=float, default=5.0, help="seconds each fault lasts")
    parser.add_argument("--fault-settle", type=float, default=6.0, help="seconds between faults")
    parser.add_argument(
        "--proxy", type=_proxy_arg, action="append", default=[],
        help="redis=HOST:PORT or mysql=HOST:PORT: control port of a chaos.proxy program",
    )  # fmt: skip
    parser.add_argument(
        "--private-tree", action="store_true",
        help="run on a throwaway tree with Redis and MariaDB behind fault proxies",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON report goes")
    args = parser.parse_args(argv)
    duration = min(args.duration, 600.0)
    hold = min(args.fault_hold, 60.0)

    def go(target: Target) -> Report:
        target.proxies.update(dict(args.proxy))
        names = faults.parse(args.faults, target.proxies)
        return asyncio.run(
            run(target, duration, args.interval, args.users, args.seed,
                names, hold, args.fault_settle)
        )  # fmt: skip

    if args.private_tree:
        with private_target() as target:
            report = go(target)
    else:
        report = go(Target.from_env())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
        print(f"report written to {args.out}")
    recovered = report["max_fault_recovery_s"] != float("inf")
    ok = report["lost_writes"] == 0 and report["failed_idempotent"] == 0 and recovered
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
