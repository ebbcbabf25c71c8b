"""The in-process benchmarks run end to end and report every runner or piece (smoke tests: no timing is checked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "step_medians.py"


def test_step_medians_reports_each_runner_against_the_plain_loop() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "2", "--samples", "256", "--runners", "plain,pta"],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) == {"runner", "plain", "pta"}
    assert "| +0.0 | 1.000 | 0/2 |" in rows["plain"]


def test_step_pieces_reports_every_piece_against_the_plain_loop() -> None:
    script = SCRIPT.with_name("step_pieces.py")
    done = subprocess.run(
        [sys.executable, str(script), "--calls", "20", "--rounds", "1"],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("|")[1].strip() for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows == ["piece of a step", "next batch", "forward and loss", "running loss sum",
                    "forward, backward, step, zero_grad", "step events (start, end with the NaN check)", "all pieces"]
