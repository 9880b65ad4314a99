"""The benchmark report as markdown: the headline table, the seed-format stages, the sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def write_report(report: dict[str, Any], path: Path) -> None:
    lines = [f"# userhub benchmark, {report['started']}", ""]
    if "load" in report:
        load = report["load"]
        lines += [
            f"Loaded {load['loaded']:,} users in {load['seconds']:.1f} s "
            f"({load['already']:,} already there), {load['sessions']:,} sessions; "
            f"set-up {load['total_seconds']} s.",
            "",
            _row(["table", "rows (estimate)", "data MiB", "index MiB"]),
            _row(["---"] * 4),
        ]
        for table, size in load["sizes"].items():
            lines.append(
                _row(
                    [
                        table,
                        f"{size['rows']:,}",
                        round(size["data_bytes"] / 2**20, 1),
                        round(size["index_bytes"] / 2**20, 1),
                    ]
                )
            )
        lines.append("")
    b = report["baselines"]
    lines += [
        "## Baselines (same run)",
        "",
        f"- bare aiohttp hello-world, closed loop: **{b['hello_max']['achieved_rps']} req/s**",
        f"- load tool floor at {b['load_tool_floor']['rate']} req/s: p50 "
        f"{b['load_tool_floor']['p50_ms']} ms, p99 {b['load_tool_floor']['p99_ms']} ms",
        f"- hello-world at {b['hello_open']['rate']} req/s: p50 {b['hello_open']['p50_ms']} ms, "
        f"p99 {b['hello_open']['p99_ms']} ms",
        f"- argon2id: one verify {b['argon2']['verify_ms']} ms, ceiling "
        f"{b['argon2']['ceiling_per_s']:.1f}/s on {b['argon2']['cores']} cores; measured with "
        f"one hashing thread per core at once: {b['argon2']['parallel_per_s']:.1f}/s",
        "",
        "## Scenarios",
        "",
        _row(["scenario", "rate req/s", "p50 ms", "p99 ms", "errors", "max req/s", "ratio"]),
        _row(["---"] * 7),
    ]
    for name, s in report["scenarios"].items():
        ratio = s.get("ratio_vs_hello", s.get("ratio_vs_ceiling", ""))
        lines.append(
            _row([name, s["rate"], s["p50_ms"], s["p99_ms"], s["errors"], s["max_rps"], ratio])
        )
    lines += ["", "## p99 per stage (ms), seed format, open-loop phases", ""]
    names = list(report["scenarios"])
    stage_names: list[str] = []
    for s in report["scenarios"].values():
        for stage in s.get("stages", {}):
            if stage not in stage_names:
                stage_names.append(stage)
    lines += [_row(["stage", *names]), _row(["---"] * (len(names) + 1))]
    for stage in stage_names:
        cells: list[object] = [stage]
        for name in names:
            st = report["scenarios"][name].get("stages", {}).get(stage)
            cells.append(st["p99_ms"] if st else "")
        lines.append(_row(cells))
    errors = {n: s["errors_by_code"] for n, s in report["scenarios"].items() if s["errors"]}
    if errors:
        lines += ["", "Errors by code: " + ", ".join(f"{n}: {e}" for n, e in errors.items())]
    if "sweeps" in report:
        lines += sweep_lines(report["sweeps"], report.get("plots", []))
    path.write_text("\n".join(lines) + "\n")


_PLOT_TITLES = {
    "latency_vs_rate.png": "Latency against offered rate",
    "throughput_vs_pool.png": "Throughput against pool size",
    "p99_vs_pool.png": "p99 against pool size",
}


def _table(header: list[object], rows: list[list[object]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows), ""]


def _ok(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in points if "error" not in p]


def _stage_table(points: list[dict[str, Any]], scenario: str) -> list[str]:
    """The seed's layout: one row per stage, one column per pool size, p99 in ms."""
    phases = [p["scenarios"][scenario] for p in points]
    names: list[str] = []
    for ph in phases:
        names += [n for n in ph.get("stages", {}) if n not in names]
    rows: list[list[object]] = [["client (load tool)", *(ph["p99_ms"] for ph in phases)]]
    for name in names:
        cells = [ph.get("stages", {}).get(name, {}).get("p99_ms", "") for ph in phases]
        rows.append([name, *cells])
    return _table(["stage", *(f"pool {p['settings']['pool_size']}" for p in points)], rows)


def sweep_lines(sw: dict[str, Any], plots: list[str]) -> list[str]:
    st = sw["settings"]
    g, c, d = st["pool_shape"]
    lines = [
        "",
        "## Sweeps",
        "",
        f"Each point is a private actors-only tree against the same MariaDB and Redis; "
        f"phases of {st['seconds']:g} s, open loop at {st['rate']:g} req/s over "
        f"{st['connections']} connections, closed loop with {st['concurrency']} clients. "
        f"MariaDB max_connections {st['mysql_max_connections']}; the sweeps took "
        f"{sw['seconds']} s. Definitions: docs/benchmarks.md.",
        "",
    ]
    pools = sw.get("pool_size", [])
    ok = _ok(pools)
    if ok:
        for scenario, what in (("profile_cached", "cached"), ("profile_uncached", "uncached")):
            lines += [
                f"### p99 per stage (ms) by MySQL pool size, {what} reads at {st['rate']:g} "
                f"req/s ({g} gateways, {c} cache_workers, {d} db_workers)",
                "",
                *_stage_table(ok, scenario),
            ]
    rows: list[list[object]] = []
    for p in pools:
        s = p["settings"]
        head: list[object] = [s["pool_size"], s["db_pool_size"]]
        if "error" in p:
            rows.append([*head, f"failed: {p['error']}", *[""] * 7])
            continue
        ca, un = p["scenarios"]["profile_cached"], p["scenarios"]["profile_uncached"]
        conns = p["mysql_connections"]
        rows.append(
            [
                *head,
                f"{p['ready_s']} / {p.get('stop_s', '')}",
                f"{conns['at_ready']} / {conns['after_load']}",
                ca["p50_ms"],
                ca["p99_ms"],
                un["p50_ms"],
                un["p99_ms"],
                ca["errors"] + un["errors"],
                un["max_rps"],
            ]
        )
    if rows:
        lines += [
            "### Throughput and latency by MySQL pool size",
            "",
            "MySQL connections: opened by the tree when ready / after the load "
            "(aiomysql opens a pool's connections on demand).",
            "",
            *_table(
                [
                    "pool", "per db_worker", "ready / stop s", "MySQL connections",
                    "cached p50 ms", "cached p99 ms", "uncached p50 ms", "uncached p99 ms",
                    "errors", "uncached max req/s",
                ],
                rows,
            ),
        ]  # fmt: skip
    rows = []
    for p in sw.get("workers", []):
        s = p["settings"]
        head = [s["gateways"], s["cache_workers"], s["db_workers"]]
        if "error" in p:
            rows.append([*head, f"failed: {p['error']}", *[""] * 5])
            continue
        ca, un = p["scenarios"]["profile_cached"], p["scenarios"]["profile_uncached"]
        rows.append(
            [
                *head,
                ca.get("max_rps", ""),
                ca["p99_ms"],
                un["max_rps"],
                un["p99_ms"],
                ca["errors"] + un["errors"],
                f"{p['ready_s']} / {p.get('stop_s', '')}",
            ]
        )
    if rows:
        lines += [
            f"### Worker counts (MySQL pool {st['worker_pool']})",
            "",
            *_table(
                [
                    "gateways", "cache_workers", "db_workers", "cached max req/s",
                    f"cached p99 ms at {st['rate']:g}", "uncached max req/s",
                    f"uncached p99 ms at {st['rate']:g}", "errors", "ready / stop s",
                ],
                rows,
            ),
        ]  # fmt: skip
    lvr = sw.get("latency_vs_rate", [])
    if lvr:
        lines += [
            "### Latency against rate (main tree, cached reads, open loop)",
            "",
            *_table(
                ["offered req/s", "achieved req/s", "p50 ms", "p99 ms", "max ms", "errors"],
                [
                    [p["rate"], p["achieved_rps"], p["p50_ms"], p["p99_ms"], p["max_ms"],
                     p["errors"]]
                    for p in lvr
                ],
            ),
        ]  # fmt: skip
    if plots:
        lines += ["### Plots", ""]
        for name in plots:
            lines += [f"![{_PLOT_TITLES.get(name, name)}]({name})", ""]
    return lines
