"""The benchmark: load users, measure baselines and scenarios in one run, write a report.

    python -m bench.run [--users 10000000] [--seconds 20] [--rate 1000] [--quick]
                        [--no-sweeps] [--sweep-seconds 8] [--sweep-pools "50 200 ..."]

Run it against a tree started with `make run` (same environment, scripts/env.sh);
`make bench` does both. It loads the synthetic users (bench.load_users; resumable,
skipped when they are there), then in one run measures the baselines (bare aiohttp
hello-world, the load tool's own floor, the argon2id ceiling) and each scenario: the
maximum throughput in closed loop, then latency in open loop at a fixed rate, with
the per-stage percentiles read from the tree's own metrics. The report goes to
bench/results/latest.json and latest.md. It asserts nothing: figures, not verdicts.

Then the sweeps (bench.sweeps; ``--no-sweeps`` skips them): MySQL pool sizes and
worker counts, each on a private actors-only tree against the same MariaDB and
Redis, and cached-read latency against offered rate on the main tree. They add the
``sweeps`` section of latest.json, the per-pool tables of latest.md and PNG charts
next to them (bench.plots). docs/benchmarks.md says what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from actors.runtime.stores import MysqlDsn
from actors.runtime.tree_config import TreeConfig
from bench import baselines, load_users, loadgen, plots, stages, sweeps
from bench.report import write_report
from tools import redis_acl
from tools.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def start_baseline(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.baselines", kind, str(port)], cwd=ROOT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{kind} baseline did not start")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tree = TreeConfig.from_env()
        self.host, self.port = self.tree.http_addr
        admin_host, admin_port = self.tree.admin_addr
        self.metrics_url = f"http://{admin_host}:{admin_port}/metrics"
        # FLUSHDB between phases is an administrator's command: the actors' Redis
        # user may not run it (tools.redis_acl).
        admin = redis_acl.admin_target(self.tree)
        self.redis = redis.Redis.from_url(
            admin.url, username=admin.username, password=admin.password
        )

    def spec(self, scenario: str, port: int | None = None, **extra: object) -> dict[str, object]:
        return {
            "scenario": scenario,
            "host": self.host,
            "port": port or self.port,
            "seconds": self.args.seconds,
            "users": self.args.users,
            "rate": self.args.rate,
            "connections": self.args.connections,
            "concurrency": self.args.concurrency,
            **extra,
        }

    def closed(self, scenario: str, port: int | None = None, **extra: object) -> dict[str, Any]:
        result = loadgen.run("closed", self.spec(scenario, port, **extra), self.args.processes)
        return result.summary()

    def open(self, scenario: str, port: int | None = None, **extra: object) -> dict[str, Any]:
        before = stages.scrape(self.metrics_url) if port is None else {}
        result = loadgen.run("open", self.spec(scenario, port, **extra), self.args.processes)
        summary = result.summary()
        if port is None:
            summary["stages"] = stages.phase(before, stages.scrape(self.metrics_url))
        return summary

    def run(self) -> dict[str, Any]:
        a = self.args
        report: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        report["settings"] = {k: v for k, v in vars(a).items() if k != "out"}
        report["machine"] = {"cores": os.cpu_count()}
        dsn = MysqlDsn.from_env()
        if not a.skip_load:
            started = time.monotonic()
            loaded = load_users.load_users(dsn, a.users, a.chunk)
            sessions = load_users.load_sessions(dsn, a.users, a.sessions)
            report["load"] = {
                **loaded,
                "sessions": sessions,
                "total_seconds": round(time.monotonic() - started, 1),
                "sizes": load_users.size_report(dsn),
            }
        print("== baselines", flush=True)
        floor_proc, floor_port = start_baseline("floor")
        hello_proc, hello_port = start_baseline("hello")
        try:
            floor = self.open("floor", floor_port)
            hello = self.closed("hello", hello_port)
            hello_open = self.open("hello", hello_port)
        finally:
            floor_proc.kill()
            hello_proc.kill()
        ceiling = baselines.argon2_ceiling()
        report["baselines"] = {
            "load_tool_floor": floor,
            "hello_max": hello,
            "hello_open": hello_open,
            "argon2": ceiling,
        }
        scenarios: dict[str, dict[str, object]] = {}

        print("== profile_cached", flush=True)
        self.closed("profile_cached")  # warm the cache
        cached_max = self.closed("profile_cached")
        cached = self.open("profile_cached")
        cached.update(
            max_rps=cached_max["achieved_rps"],
            hello_max_rps=hello["achieved_rps"],
            ratio_vs_hello=round(
                float(cached_max["achieved_rps"]) / max(float(hello["achieved_rps"]), 1e-9), 3
            ),
            closed_loop=cached_max,
        )
        scenarios["profile_cached"] = cached

        print("== profile_uncached", flush=True)
        self.redis.flushdb()
        uncached_max = self.closed("profile_uncached")
        self.redis.flushdb()
        uncached = self.open("profile_uncached")
        uncached.update(max_rps=uncached_max["achieved_rps"], closed_loop=uncached_max)
        scenarios["profile_uncached"] = uncached

        print("== login", flush=True)
        login_max = self.closed("login", concurrency=max(4, 4 * (os.cpu_count() or 1)))
        login_rate = max(1.0, round(0.5 * ceiling["ceiling_per_s"]))
        login = self.open("login", rate=login_rate, connections=min(a.connections, 200))
        login.update(
            max_rps=login_max["achieved_rps"],
            ceiling_per_s=round(ceiling["ceiling_per_s"], 1),
            parallel_hashing_per_s=round(ceiling["parallel_per_s"], 1),
            ratio_vs_parallel_hashing=round(
                float(login_max["achieved_rps"]) / ceiling["parallel_per_s"], 3
            ),
            ratio_vs_ceiling=round(float(login_max["achieved_rps"]) / ceiling["ceiling_per_s"], 3),
            closed_loop=login_max,
        )
        scenarios["login"] = login

        print("== nickname", flush=True)
        nick_max = self.closed("nickname")
        nickname = self.open("nickname", rate=a.rate / 2)
        nickname.update(max_rps=nick_max["achieved_rps"], closed_loop=nick_max)
        scenarios["nickname"] = nickname

        report["scenarios"] = scenarios
        if not a.no_sweeps:
            report["sweeps"] = sweeps.run(
                self.sweep_config(), dsn, self.flush, self.host, self.port
            )
        return report

    def flush(self) -> None:
        self.redis.flushdb()

    def sweep_config(self) -> sweeps.SweepConfig:
        a = self.args
        return sweeps.SweepConfig(
            seconds=a.sweep_seconds,
            rate=a.rate,
            connections=a.connections,
            concurrency=a.concurrency,
            processes=a.processes,
            pools=tuple(int(p) for p in sweeps.parse_numbers(a.sweep_pools)),
            pool_shape=sweeps.parse_shapes(a.sweep_pool_workers)[0],
            workers=sweeps.parse_shapes(a.sweep_workers),
            worker_pool=a.sweep_worker_pool,
            rates=sweeps.parse_numbers(a.sweep_rates),
        )


def _sweep_defaults(args: argparse.Namespace) -> None:
    """Fill the sweep options left unset: the full sweep, or a tiny one with --quick."""
    quick = {
        "sweep_seconds": 2.0,
        "sweep_pools": "8 32",
        "sweep_pool_workers": "1,1,1",
        "sweep_workers": "1,1,1 2,2,2",
        "sweep_rates": f"{args.rate / 2:g} {args.rate:g}",
    }
    full = {
        "sweep_seconds": 8.0,
        "sweep_pools": " ".join(str(p) for p in sweeps.FULL_POOLS),
        "sweep_pool_workers": "2,2,2",
        "sweep_workers": " ".join(",".join(map(str, w)) for w in sweeps.FULL_WORKERS),
        "sweep_rates": " ".join(f"{r:g}" for r in sweeps.FULL_RATES),
    }
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sweep_seconds = min(args.sweep_seconds, 60.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=10_000_000)
    p.add_argument("--sessions", type=int, default=200_000)
    p.add_argument("--chunk", type=int, default=500_000)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--skip-load", action="store_true")
    p.add_argument("--quick", action="store_true", help="small data, short phases")
    p.add_argument("--out", type=Path, default=RESULTS)
    s = p.add_argument_group("sweeps (see docs/benchmarks.md); quick mode makes them tiny")
    s.add_argument("--no-sweeps", action="store_true", help="skip the sweeps")
    s.add_argument("--sweep-seconds", type=float, help="seconds per phase (8; quick 2)")
    s.add_argument("--sweep-pools", help='total MySQL pool sizes, "50 200 500 1000 2000 4000"')
    s.add_argument(
        "--sweep-pool-workers", help='gateways,cache_workers,db_workers of the pool sweep, "2,2,2"'
    )
    s.add_argument("--sweep-workers", help='worker shapes G,C,D, "1,1,1 2,2,2 2,1,1 1,2,2 3,2,2"')
    s.add_argument(
        "--sweep-worker-pool", type=int, default=sweeps.WORKER_SWEEP_POOL,
        help="total MySQL pool of the worker sweep (2048)",
    )  # fmt: skip
    s.add_argument("--sweep-rates", help='main-tree rates, "250 500 1000 2000 3000"')
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.sessions, args.chunk = 20_000, 5_000, 10_000
        args.seconds, args.rate, args.connections, args.concurrency = 2.0, 200.0, 50, 16
    args.seconds = min(args.seconds, 120.0)
    _sweep_defaults(args)
    report = Bench(args).run()
    args.out.mkdir(parents=True, exist_ok=True)
    if "sweeps" in report:
        report["plots"] = plots.write_plots(report["sweeps"], args.out)
    (args.out / "latest.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    write_report(report, args.out / "latest.md")
    print((args.out / "latest.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
