"""Dependency faults for a chaos run: Redis and MariaDB down, and a bad network.

Each fault is applied under the chaos workload for a bounded time and always undone
(a ``finally`` restarts what was stopped and puts proxies back in ``pass``):

* ``redis_stop``       ``supervisorctl stop redis``, hold, ``start redis`` (the cache is
                       lost: Redis keeps no data);
* ``mysql_restart``    ``supervisorctl restart mysql`` (the window is the restart itself:
                       MariaDB shuts down, starts, and must stay up its ``startsecs``);
* ``mysql_stop``       ``supervisorctl stop mysql``, hold, ``start mysql``;
* ``redis_blackhole``, ``redis_reset``, ``redis_delay``, ``mysql_blackhole``,
  ``mysql_reset``, ``mysql_delay``: the fault proxy between the workers and the server
  (chaos.proxy) in that mode for the hold; needs a tree whose DSNs point at proxies
  (``--private-tree`` sets that up, or ``--proxy redis=HOST:PORT`` names the control
  port of a proxy started with ``python -m chaos.proxy``).

For every fault the report gives the window (from applying it to undoing it), the
error rate of the HTTP attempts inside it (every try, retries included, by status),
their latency, and the recovery time: from undoing the fault until the last failed
attempt that follows it (0 when nothing failed once the fault was undone).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypedDict

from chaos.proxy import Mode
from chaos.workload import Attempt

PROXY_MODES: tuple[Mode, ...] = ("blackhole", "reset", "delay")
PROXY_FAULTS = {f"{dep}_{mode}": (dep, mode) for dep in ("redis", "mysql") for mode in PROXY_MODES}
SUPERVISOR_FAULTS = ("redis_stop", "mysql_restart", "mysql_stop")
ALL = (*SUPERVISOR_FAULTS, *PROXY_FAULTS)
DEFAULT = ("redis_stop", "mysql_restart")
PROXY_DELAY_S = 0.1  # the delay fault's added latency, each way


class ProxyControl(Protocol):
    def set_mode(self, mode: Mode, delay_s: float = 0.0) -> None: ...


class FaultSummary(TypedDict):
    """One fault's entry in the chaos report (the JSON written by chaos.run)."""

    fault: str
    at_s: float
    window_s: float
    attempts: int
    failed: int
    error_rate: float
    statuses: dict[str, int]  # HTTP status (0: no answer) -> attempts
    by_kind: dict[str, dict[str, int]]  # "read"/"write" -> attempts, ok
    latency_p50_s: float
    latency_p99_s: float
    latency_max_s: float
    failed_latency_max_s: float
    recovery_s: float  # inf: still failing when the next fault began
    detail: str


@dataclass
class Window:
    fault: str
    started: float  # monotonic: fault applied
    ended: float  # fault undone
    detail: str = ""


def parse(names: str, proxies: dict[str, ProxyControl]) -> list[str]:
    """``all``, ``default`` or a comma-separated list; proxy faults need their proxy."""
    if names in ("", "none"):
        return []
    if names == "default":
        return list(DEFAULT)
    wanted = list(ALL) if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
    out = []
    for name in wanted:
        if name not in ALL:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(ALL)}")
        if name in PROXY_FAULTS and PROXY_FAULTS[name][0] not in proxies:
            if names == "all":
                continue  # no proxy in this tree: skip what cannot be done
            raise ValueError(f"{name} needs a {PROXY_FAULTS[name][0]} proxy (see --proxy)")
        out.append(name)
    return out


async def apply(
    name: str,
    ctl: Callable[..., str],
    proxies: dict[str, ProxyControl],
    hold_s: float,
) -> Window:
    """Apply one fault for ``hold_s`` (a restart takes as long as it takes), undo it."""
    started = time.monotonic()
    detail = ""
    if name in PROXY_FAULTS:
        dep, mode = PROXY_FAULTS[name]
        proxy = proxies[dep]
        try:
            await asyncio.to_thread(proxy.set_mode, mode, PROXY_DELAY_S)
            await asyncio.sleep(hold_s)
        finally:
            await asyncio.to_thread(proxy.set_mode, "pass")
    elif name == "mysql_restart":
        detail = (await asyncio.to_thread(ctl, "restart", "mysql")).strip()
    else:
        program = name.split("_")[0]
        try:
            detail = (await asyncio.to_thread(ctl, "stop", program)).strip()
            await asyncio.sleep(hold_s)
        finally:
            detail += " / " + (await asyncio.to_thread(ctl, "start", program)).strip()
    return Window(name, started, time.monotonic(), detail)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(window: Window, attempts: list[Attempt], settle_until: float) -> FaultSummary:
    """The window's error rate and latency, and how long errors outlived the fault."""
    inside = [a for a in attempts if window.started <= a.started < window.ended]
    failed = [a for a in inside if a.status != 200 and a.status != 204]
    latencies = [a.ended - a.started for a in inside]
    failed_latencies = [a.ended - a.started for a in failed]
    # Attempts that ended after the fault was undone and before the next one began.
    after = [
        a for a in attempts
        if a.started >= window.started and window.ended <= a.ended < settle_until
    ]  # fmt: skip
    late_failures = [a.ended for a in after if a.status not in (200, 204)]
    recovery = max(late_failures) - window.ended if late_failures else 0.0
    # Still failing at the end of the settling time: not recovered.
    recovered = not late_failures or max(late_failures) < settle_until - 1.0
    by_kind: dict[str, dict[str, int]] = {}
    for kind in ("read", "write"):
        of_kind = [a for a in inside if a.kind == kind]
        by_kind[kind] = {
            "attempts": len(of_kind),
            "ok": sum(1 for a in of_kind if a.status in (200, 204)),
        }
    return {
        "fault": window.fault,
        "at_s": round(window.started, 3),
        "window_s": round(window.ended - window.started, 3),
        "attempts": len(inside),
        "failed": len(failed),
        "error_rate": round(len(failed) / len(inside), 4) if inside else 0.0,
        "statuses": dict(sorted(Counter(str(a.status) for a in inside).items())),
        "by_kind": by_kind,
        "latency_p50_s": round(_percentile(latencies, 0.5), 4),
        "latency_p99_s": round(_percentile(latencies, 0.99), 4),
        "latency_max_s": round(max(latencies, default=0.0), 4),
        "failed_latency_max_s": round(max(failed_latencies, default=0.0), 4),
        "recovery_s": round(recovery, 3) if recovered else float("inf"),
        "detail": window.detail,
    }


async def run_all(
    names: list[str],
    ctl: Callable[..., str],
    proxies: dict[str, ProxyControl],
    attempts: list[Attempt],
    *,
    hold_s: float,
    settle_s: float,
    origin: float,
) -> list[FaultSummary]:
    """Apply each fault in turn under the running workload, ``settle_s`` apart."""
    windows: list[Window] = []
    for name in names:
        windows.append(await apply(name, ctl, proxies, hold_s))
        await asyncio.sleep(settle_s)
    out: list[FaultSummary] = []
    for i, window in enumerate(windows):
        settle_until = windows[i + 1].started if i + 1 < len(windows) else time.monotonic()
        summary = summarise(window, attempts, settle_until)
        summary["at_s"] = round(window.started - origin, 3)
        out.append(summary)
    return out
