"""The quick benchmark still runs end to end (it reports figures; nothing is timed here)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.tree import PYTHON, ROOT, Tree

pytestmark = pytest.mark.integration


def test_bench_quick_writes_a_complete_report(tree: Tree, tmp_path: Path) -> None:
    done = subprocess.run(
        [PYTHON, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=tree.env,
        capture_output=True,
        timeout=180,
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
    assert (tmp_path / "latest.md").read_text().startswith("# userhub benchmark")
