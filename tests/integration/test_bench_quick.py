"""The quick benchmark still runs end to end (it reports figures; nothing is timed here)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.integration.tree import PYTHON, ROOT, Tree

pytestmark = pytest.mark.integration


@pytest.mark.timeout(420)  # the tiny sweep starts four private trees
def test_bench_quick_writes_a_complete_report(tree: Tree, tmp_path: Path) -> None:
    trees_before = set(Path("/tmp").glob("uh-sweep-*"))
    done = subprocess.run(
        [PYTHON, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=tree.env,
        capture_output=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    scenarios = report["scenarios"]
    for name in ("profile_cached", "profile_uncached", "login", "nickname"):
        for key in ("rate", "p50_ms", "p99_ms", "errors", "max_rps"):
            assert key in scenarios[name], (name, key)
        assert scenarios[name]["errors"] == 0, scenarios[name]["errors_by_code"]
        assert scenarios[name]["completed"] > 0
    assert {"hello_max_rps", "ratio_vs_hello"} <= set(scenarios["profile_cached"])
    assert {"ceiling_per_s", "ratio_vs_ceiling"} <= set(scenarios["login"])
    assert report["load"]["loaded"] + report["load"]["already"] == 20_000
    assert "DB get user" in scenarios["profile_uncached"]["stages"]
    assert "cache hit" in scenarios["profile_cached"]["stages"]
    markdown = (tmp_path / "latest.md").read_text()
    assert markdown.startswith("# userhub benchmark")
    check_sweeps(report, markdown, tmp_path)
    assert set(Path("/tmp").glob("uh-sweep-*")) <= trees_before, "a sweep tree was left behind"


def check_sweeps(report: dict[str, Any], markdown: str, out: Path) -> None:
    """The tiny sweep ran every point to the end and reported it in full."""
    sweeps = report["sweeps"]
    assert sweeps["settings"]["mysql_max_connections"] > 0
    pools = sweeps["pool_size"]
    assert [p["settings"]["pool_size"] for p in pools] == [8, 32]
    assert len(sweeps["workers"]) == 2
    for point in pools + sweeps["workers"]:
        assert "error" not in point, point.get("error")
        settings = point["settings"]
        assert settings["mysql_budget"] == settings["pool_size"]
        assert point["mysql_granted"] == settings["pool_size"]
        assert {"ready_s", "stop_s", "mysql_connections"} <= set(point)
        for name in ("profile_cached", "profile_uncached"):
            phase = point["scenarios"][name]
            for key in ("rate", "p50_ms", "p99_ms", "errors", "stages"):
                assert key in phase, (name, key)
            assert phase["completed"] > 0
        assert "cache hit" in point["scenarios"]["profile_cached"]["stages"]
        assert "DB get user" in point["scenarios"]["profile_uncached"]["stages"]
        assert point["scenarios"]["profile_uncached"]["max_rps"] > 0
    for point in sweeps["workers"]:
        assert point["scenarios"]["profile_cached"]["max_rps"] > 0
    assert len(sweeps["latency_vs_rate"]) == 2
    assert all(p["completed"] > 0 for p in sweeps["latency_vs_rate"])
    for heading in ("## Sweeps", "p99 per stage (ms) by MySQL pool size", "### Worker counts"):
        assert heading in markdown, heading
    assert "| DB get user |" in markdown
    assert report["plots"] == ["latency_vs_rate.png", "throughput_vs_pool.png", "p99_vs_pool.png"]
    for name in report["plots"]:
        assert f"]({name})" in markdown
        with Image.open(out / name) as img:
            img.verify()
            assert img.format == "PNG"
