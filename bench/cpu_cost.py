"""CPU time per request, per process of the tree, at a fixed open-loop rate.

    python -m bench.cpu_cost profile_cached [--rate 1000] [--seconds 10] [--connections 1000]

A sampling profile of one actor says where its time goes but not what a request
costs the machine: on two cores, time waiting for the CPU looks like time spent.
This reads each running program's user+system CPU seconds from /proc before and
after an open-loop phase (bench.loadgen) and divides by the requests completed, so
the figures add up to what one request costs the whole host, load tool included.
Run it against the tree `make run` started (scripts/env.sh's environment); for
profile_uncached flush Redis first, as its admin user (docs/security.md, Credentials):
``REDISCLI_AUTH="$(cat var/secrets/redis-admin.password)" redis-cli -p 6380 --user admin flushdb``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from actors.runtime.tree_config import TreeConfig
from bench import loadgen
from tools.supervisorctl import Supervisorctl


def running_programs() -> dict[str, int]:
    """The RUNNING programs of this environment's tree and their pids."""
    status = Supervisorctl.from_env().status()
    return {name: pid for name, (state, pid) in status.items() if state == "RUNNING" and pid}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(scenario: str, rate: float, seconds: float, connections: int) -> dict[str, object]:
    host, port = TreeConfig.from_env().http_addr
    pids = running_programs()
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    own = time.process_time()
    spec = {
        "scenario": scenario, "host": host, "port": port, "seconds": seconds,
        "users": 10_000_000, "rate": rate, "connections": connections, "concurrency": 64,
    }  # fmt: skip
    result = loadgen.run("open", spec, 1)
    load_tool = time.process_time() - own
    summary = result.summary()
    done = max(1, result.completed)
    per_process: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            spent = cpu_seconds(pid) - before[name]
        except OSError:
            continue  # it exited meanwhile
        if spent > 0:
            per_process[name] = round(spent / done * 1e6, 1)
    per_process["load tool"] = round(load_tool / done * 1e6, 1)
    return {
        "scenario": scenario,
        "rate": rate,
        "achieved_rps": summary["achieved_rps"],
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "errors": summary["errors"],
        "cpu_us_per_request": per_process,
        "tree_cpu_us_per_request": round(sum(per_process.values()) - per_process["load tool"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_cost", description=__doc__.split("\n")[0])
    p.add_argument("scenario", choices=["profile_cached", "profile_uncached", "login", "nickname"])
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=1000)
    args = p.parse_args(argv)
    out = measure(args.scenario, args.rate, min(args.seconds, 120.0), args.connections)
    print(
        f"{out['scenario']} at {out['rate']} req/s: achieved {out['achieved_rps']}, "
        f"p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms, errors {out['errors']}"
    )
    costs = out["cpu_us_per_request"]
    assert isinstance(costs, dict)
    for name, micros in sorted(costs.items(), key=lambda kv: -kv[1]):
        print(f"  {name:34s} {micros:9.1f} us of CPU per request")
    print(f"  {'the tree (load tool excluded)':34s} {out['tree_cpu_us_per_request']:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
