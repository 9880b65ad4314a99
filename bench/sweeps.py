"""Sweeps: the same reads over MySQL pool sizes, worker counts and offered rates.

Pool sizes and worker counts are read when processes start, so each point runs on a
private actors-only tree (tools.private_tree) against the benchmark's own MariaDB and
Redis; the tree `make run` started is left alone. At each point:

* cached reads: a short closed-loop warm-up of the 1,000 cached users (on worker
  points, then a measured closed loop for the maximum), then the open loop at the
  bench rate, with the per-stage p99 read from two scrapes of that tree's /metrics;
* uncached reads: Redis flushed, the open loop at the bench rate (stages again),
  Redis flushed again, then the closed loop for the maximum throughput.

The latency-against-rate series runs open-loop cached reads on the main tree at
several rates. Phases are short (``seconds``, 8 s by default): a sweep shows the
shape of a curve, the scenarios of bench.run give the figures to quote.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pymysql

from actors.runtime.stores import MysqlDsn
from bench import loadgen, stages
from tools.private_tree import PrivateTree, private_tree

# Shapes are (gateways, cache_workers, db_workers).
FULL_POOLS = (50, 200, 500, 1000, 2000, 4000)
FULL_WORKERS = ((1, 1, 1), (2, 2, 2), (2, 1, 1), (1, 2, 2), (3, 2, 2))
FULL_RATES = (250.0, 500.0, 1000.0, 2000.0, 3000.0)
WORKER_SWEEP_POOL = 2048  # the pool manager's default budget, the seed's figure

# Fields of a loadgen summary kept per phase (latencies are summarised already).
_KEEP = ("rate", "achieved_rps", "completed", "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors")


@dataclass(frozen=True)
class Shape:
    """One sweep point's process counts and MySQL pool.

    ``pool`` is the total MySQL pool of the tree, the seed's "pool size": the pool
    manager's budget, split evenly (rounded up) among the db_workers.
    """

    gateways: int
    cache_workers: int
    db_workers: int
    pool: int

    @property
    def pool_per_db_worker(self) -> int:
        return math.ceil(self.pool / self.db_workers)

    def settings(self) -> dict[str, int]:
        return {
            "gateways": self.gateways,
            "cache_workers": self.cache_workers,
            "db_workers": self.db_workers,
            "pool_size": self.pool,
            "mysql_budget": self.pool,
            "db_pool_size": self.pool_per_db_worker,
        }

    def env(self) -> dict[str, str]:
        """The settings of a private tree of this shape."""
        return {
            "USERHUB_GATEWAYS": str(self.gateways),
            "USERHUB_CACHE_WORKERS": str(self.cache_workers),
            "USERHUB_DB_WORKERS": str(self.db_workers),
            "USERHUB_MYSQL_BUDGET": str(self.pool),
            "USERHUB_DB_POOL_SIZE": str(self.pool_per_db_worker),
        }


@dataclass
class SweepConfig:
    seconds: float
    rate: float
    connections: int
    concurrency: int
    processes: int
    pools: tuple[int, ...]
    pool_shape: tuple[int, int, int]
    workers: tuple[tuple[int, int, int], ...]
    worker_pool: int
    rates: tuple[float, ...]
    tokens: str | None = None
    log: Callable[[str], None] = field(default=lambda line: print(line, flush=True))

    @property
    def warm_seconds(self) -> float:
        return max(1.0, min(2.0, self.seconds / 4))


class Phases:
    """The load phases of one point, against one HTTP address."""

    def __init__(self, cfg: SweepConfig, host: str, port: int, flush: Callable[[], None]) -> None:
        self.cfg = cfg
        self.host, self.port = host, port
        self.flush = flush

    def _spec(self, scenario: str, seconds: float, rate: float) -> dict[str, object]:
        spec: dict[str, object] = {
            "scenario": scenario,
            "host": self.host,
            "port": self.port,
            "seconds": seconds,
            "rate": rate,
            "connections": self.cfg.connections,
            "concurrency": self.cfg.concurrency,
        }
        if self.cfg.tokens:
            spec["tokens"] = self.cfg.tokens
        return spec

    def closed(self, scenario: str, seconds: float | None = None) -> dict[str, Any]:
        spec = self._spec(scenario, seconds or self.cfg.seconds, self.cfg.rate)
        return loadgen.run("closed", spec, self.cfg.processes).summary()

    def open(
        self, scenario: str, rate: float | None = None, metrics_url: str | None = None
    ) -> dict[str, Any]:
        spec = self._spec(scenario, self.cfg.seconds, rate or self.cfg.rate)
        before = stages.scrape(metrics_url) if metrics_url else {}
        summary = loadgen.run("open", spec, self.cfg.processes).summary()
        out = {k: summary[k] for k in _KEEP}
        out["errors_by_code"] = summary["errors_by_code"]
        if metrics_url:
            out["stages"] = stages.phase(before, stages.scrape(metrics_url))
        return out


def _mysql_int(dsn: MysqlDsn, sql: str, column: int = 0) -> int:
    conn = pymysql.connect(
        host=dsn.host, port=dsn.port, user=dsn.user, password=dsn.password,
        database=dsn.database, connect_timeout=5,
    )  # fmt: skip
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
            return int(row[column]) if row else -1
    finally:
        conn.close()


def _threads_connected(dsn: MysqlDsn) -> int:
    """Connections MariaDB has open now (every client's, the main tree's included)."""
    # minus the one asking
    return _mysql_int(dsn, "SHOW GLOBAL STATUS LIKE 'Threads_connected'", 1) - 1


def max_connections(dsn: MysqlDsn) -> int:
    return _mysql_int(dsn, "SELECT @@max_connections")


def run_point(
    cfg: SweepConfig,
    shape: Shape,
    dsn: MysqlDsn,
    flush: Callable[[], None],
    *,
    cached_max: bool,
) -> dict[str, Any]:
    """Start a private tree of ``shape``, measure the read phases, stop it."""
    point: dict[str, Any] = {"settings": shape.settings()}
    threads_before = _threads_connected(dsn)
    started = time.monotonic()
    tree: PrivateTree | None = None
    try:
        with private_tree(
            shape.env(),
            own_servers=False,
            prefix="uh-sweep-",
            keep_logs_in="USERHUB_KEEP_SWEEP_LOGS",
        ) as tree:
            granted = tree.workers().mysql_granted
            point.update(ready_s=tree.ready_seconds, mysql_granted=granted)
            threads_ready = _threads_connected(dsn)
            host, port = tree.http
            ph = Phases(cfg, host, port, flush)
            scenarios: dict[str, dict[str, Any]] = {}
            ph.closed("profile_cached", cfg.warm_seconds)  # fill the cache
            closed_cached = ph.closed("profile_cached") if cached_max else None
            cached = ph.open("profile_cached", metrics_url=tree.metrics_url)
            if closed_cached is not None:
                cached["max_rps"] = closed_cached["achieved_rps"]
            scenarios["profile_cached"] = cached
            flush()
            uncached = ph.open("profile_uncached", metrics_url=tree.metrics_url)
            flush()
            uncached["max_rps"] = ph.closed("profile_uncached")["achieved_rps"]
            scenarios["profile_uncached"] = uncached
            point["scenarios"] = scenarios
            threads_after = _threads_connected(dsn)
            # aiomysql opens a pool's connections on demand (minsize 1) and keeps
            # them, so the difference is what this tree's load actually needed.
            point["mysql_connections"] = {
                "at_ready": threads_ready - threads_before,
                "after_load": threads_after - threads_before,
            }
    except Exception as exc:  # a point that fails is reported; the sweep goes on
        point["error"] = f"{type(exc).__name__}: {exc}"
    if tree is not None:
        point["stop_s"] = tree.stop_seconds
    point["seconds"] = round(time.monotonic() - started, 1)
    return point


def _describe(point: dict[str, Any]) -> str:
    if "error" in point:
        return f"failed: {point['error']}"
    s = point["scenarios"]
    c, u = s["profile_cached"], s["profile_uncached"]
    return (
        f"ready in {point['ready_s']} s; cached p99 {c['p99_ms']} ms, "
        f"uncached p99 {u['p99_ms']} ms, uncached max {u['max_rps']} req/s "
        f"({point['seconds']} s)"
    )


def pool_sweep(cfg: SweepConfig, dsn: MysqlDsn, flush: Callable[[], None]) -> list[dict[str, Any]]:
    points = []
    g, c, d = cfg.pool_shape
    for pool in cfg.pools:
        cfg.log(f"-- pool {pool} ({g} gateways, {c} cache_workers, {d} db_workers)")
        point = run_point(cfg, Shape(g, c, d, pool), dsn, flush, cached_max=False)
        cfg.log("   " + _describe(point))
        points.append(point)
    return points


def worker_sweep(
    cfg: SweepConfig, dsn: MysqlDsn, flush: Callable[[], None]
) -> list[dict[str, Any]]:
    points = []
    for g, c, d in cfg.workers:
        cfg.log(f"-- workers {g},{c},{d} (pool {cfg.worker_pool})")
        point = run_point(cfg, Shape(g, c, d, cfg.worker_pool), dsn, flush, cached_max=True)
        cfg.log("   " + _describe(point))
        points.append(point)
    return points


def latency_vs_rate(cfg: SweepConfig, host: str, port: int) -> list[dict[str, Any]]:
    """Open-loop cached reads on the main tree at each rate of ``cfg.rates``."""
    ph = Phases(cfg, host, port, flush=lambda: None)
    ph.closed("profile_cached", cfg.warm_seconds)
    series = []
    for rate in cfg.rates:
        phase = ph.open("profile_cached", rate=rate)
        cfg.log(f"-- {rate:g} req/s: p50 {phase['p50_ms']} ms, p99 {phase['p99_ms']} ms")
        series.append(phase)
    return series


def run(
    cfg: SweepConfig, dsn: MysqlDsn, flush: Callable[[], None], host: str, port: int
) -> dict[str, Any]:
    """Every sweep, in the shape latest.json keeps under ``sweeps``."""
    started = time.monotonic()
    out: dict[str, Any] = {
        "settings": {
            "seconds": cfg.seconds,
            "rate": cfg.rate,
            "connections": cfg.connections,
            "concurrency": cfg.concurrency,
            "pool_shape": list(cfg.pool_shape),
            "worker_pool": cfg.worker_pool,
            "mysql_max_connections": max_connections(dsn),
            "cores": os.cpu_count(),
        }
    }
    cfg.log("== sweep: pool sizes")
    out["pool_size"] = pool_sweep(cfg, dsn, flush)
    cfg.log("== sweep: worker counts")
    out["workers"] = worker_sweep(cfg, dsn, flush)
    cfg.log("== sweep: latency against rate (main tree, cached reads)")
    out["latency_vs_rate"] = latency_vs_rate(cfg, host, port)
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


def parse_shapes(text: str) -> tuple[tuple[int, int, int], ...]:
    """ "1,1,1 2,2,2" -> ((1, 1, 1), (2, 2, 2)): gateways, cache_workers, db_workers."""
    shapes = []
    for item in text.split():
        parts = tuple(int(p) for p in item.split(","))
        if len(parts) != 3 or min(parts) < 1:
            raise ValueError(f"a worker shape is G,C,D with counts >= 1, got {item!r}")
        shapes.append((parts[0], parts[1], parts[2]))
    return tuple(shapes)


def parse_numbers(text: str) -> tuple[float, ...]:
    values = tuple(float(p) for p in text.replace(",", " ").split())
    if not values or min(values) <= 0 or any(math.isnan(v) for v in values):
        raise ValueError(f"expected positive numbers, got {text!r}")
    return values
