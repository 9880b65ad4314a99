"""Prometheus metrics for every actor, aggregated so one scrape shows a whole host.

Actors run with ``PROMETHEUS_MULTIPROC_DIR`` set (supervisord.conf does it): each
process writes its samples to memory-mapped files there, and any gateway's
``/metrics`` sums them. Counters and histograms of a dead process stay in the sum
(its requests did happen); live gauges of dead pids are removed at every actor start
so a restarted process is never counted twice; a gateway also removes them at every
scrape, since a killed worker may not have been restarted yet when the scrape comes.

Naming follows Prometheus conventions: base units (seconds), ``_seconds`` histograms,
``_total`` counters, and label values from small fixed sets (route templates, message
type names, stage names, error codes), never ids. docs/observability.md maps each of
the original system's stages to its metric.

Stages follow the ones the original system measured: round trip from the client, get
connection, send message, free connection, DB get user, DB session write, cache
hit, cache miss (cache query plus DB query) and cache write.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Fine enough to read a p99 anywhere between 0.5 ms and 1 s: no two neighbouring
# bounds in that range are more than 1.67x apart.
BUCKETS = (
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075,
    0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 1.5, 2.5, 5.0,
)  # fmt: skip

REQUEST_SECONDS = Histogram(
    "userhub_http_request_seconds",
    "Round trip of an HTTP request inside the gateway, by route.",
    ["route", "status"],
    buckets=BUCKETS,
)
GET_CONNECTION_SECONDS = Histogram(
    "userhub_get_connection_seconds",
    "Time to get a leased connection to a worker of a kind.",
    ["caller", "kind"],
    buckets=BUCKETS,
)
SEND_MESSAGE_SECONDS = Histogram(
    "userhub_send_message_seconds",
    "Time from sending a request to a worker until its reply arrives.",
    ["caller", "kind", "message"],
    buckets=BUCKETS,
)
FREE_CONNECTION_SECONDS = Histogram(
    "userhub_free_connection_seconds",
    "Time to hand a leased connection back after a call.",
    ["caller", "kind"],
    buckets=BUCKETS,
)
MYSQL_ACQUIRE_SECONDS = Histogram(
    "userhub_mysql_acquire_seconds",
    "Time a db_worker waits for a connection of its MySQL pool (opening one included).",
    buckets=BUCKETS,
)
DB_QUERY_SECONDS = Histogram(
    "userhub_db_query_seconds",
    "MySQL work by stage (get_user, session_write, ...), connection acquire included.",
    ["stage"],
    buckets=BUCKETS,
)
CACHE_SECONDS = Histogram(
    "userhub_cache_seconds",
    "Cache stages: hit (Redis only), miss (Redis plus db_worker), write.",
    ["stage"],
    buckets=BUCKETS,
)
CACHE_LOOKUPS = Counter(
    "userhub_cache_lookups_total", "Profile lookups in the cache by result.", ["result"]
)
PASSWORD_HASH_SECONDS = Histogram(
    "userhub_password_hash_seconds",
    "argon2id work per operation (hash or verify), queueing excluded.",
    ["op"],
    buckets=BUCKETS,
)
ERRORS = Counter(
    "userhub_errors_total", "Errors answered, by actor kind and stable code.", ["actor", "code"]
)
AVATAR_SWEEP = Counter(
    "userhub_avatar_sweep_total",
    "Stored pictures the orphan sweeper examined, found referenced, and deleted.",
    ["result"],
)
UPLOADS_REFUSED = Counter(
    "userhub_uploads_refused_total",
    "Picture uploads refused before a byte was read, by code (throttled, busy).",
    ["code"],
)
STARTS = Counter(
    "userhub_process_starts_total",
    "Actor process starts, by kind; every start after a kind's first is a restart.",
    ["actor"],
)
POOL_SIZE = Gauge(
    "userhub_pool_connections",
    "Size of a pool: connections to leased workers it holds, or the MySQL/Redis connections"
    " it may open.",
    ["actor", "pool"],
    multiprocess_mode="livesum",
)
POOL_IN_USE = Gauge(
    "userhub_pool_connections_in_use",
    "Connections of a pool lent out right now.",
    ["actor", "pool"],
    multiprocess_mode="livesum",
)
LEASES_HELD = Gauge(
    "userhub_leases_held",
    "Leases this process holds on workers of a kind.",
    ["actor", "kind"],
    multiprocess_mode="livesum",
)
WAITING_REQUESTS = Gauge(
    "userhub_waiting_requests",
    "Requests waiting for a connection or a worker.",
    ["actor", "pool"],
    multiprocess_mode="livesum",
)
IN_FLIGHT = Gauge(
    "userhub_in_flight_requests",
    "Requests a worker is handling right now.",
    ["actor"],
    multiprocess_mode="livesum",
)
REGISTERED_WORKERS = Gauge(
    "userhub_registered_workers",
    "Workers registered with the pool manager, by kind.",
    ["kind"],
    multiprocess_mode="liveall",
)

_PID_FILE = re.compile(r"_(\d+)\.db$")


def clean_dead_pids(directory: str | None = None) -> list[int]:
    """Drop live-gauge files of processes that no longer exist; return their pids.

    Counter and histogram files stay: what a dead process counted did happen, and a
    restarted process writes a file of its own (its new pid), so nothing is counted
    twice. Only host-local pids are checked, which is all the directory holds.
    """
    directory = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory or not os.path.isdir(directory):
        return []
    dead: set[int] = set()
    for path in Path(directory).glob("gauge_live*_*.db"):
        match = _PID_FILE.search(path.name)
        if match and not pid_alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        try:
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except FileNotFoundError:
            pass  # another process cleaned it first
    return sorted(dead)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (killed, not reaped yet) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True  # no /proc here: trust kill(0)
    # The state follows the parenthesised command name, which may hold spaces.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def started(actor: str) -> None:
    """Record an actor start and tidy up after processes that died before it.

    Call it first thing, before any gauge is touched: a live-gauge file left by an
    earlier process that had this same pid would otherwise seed our gauges.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]
    clean_dead_pids()
    STARTS.labels(actor).inc()


def scrape() -> bytes:
    """The text exposition for this host: every process when multiprocess mode is on."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        clean_dead_pids()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)
