"""A bounded pass of the frame decoder's fuzzer (fuzz/fuzz_frames.py), part of every test run.

``make fuzz`` runs the same harness for minutes; this keeps every test run at a few
seconds of it, with a corpus and crash files kept under pytest's temporary directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RUNS = 200_000


def test_frame_decoder_fuzz_bounded(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fuzz" / "fuzz_frames.py"),
            f"-runs={RUNS}",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
            str(corpus),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert f"Done {RUNS} runs" in output, output[-4000:]
    assert not list(tmp_path.glob("crash-*")), output[-4000:]
