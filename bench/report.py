"""The benchmark report as markdown: the headline table and the seed-format stages."""

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
    path.write_text("\n".join(lines) + "\n")
