"""The benchmarks run end to end and report every runner or piece (smoke tests: no timing is checked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *args: str) -> str:
    """The script's standard output; it must exit 0 within 5 minutes."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_step_medians_reports_each_runner_against_the_plain_loop() -> None:
    stdout = run_benchmark("step_medians.py", "--rounds", "2", "--samples", "256", "--runners", "plain,pta")
    rows = {line.split("|")[1].strip(): line for line in stdout.splitlines() if line.startswith("| ")}
    assert set(rows) == {"runner", "plain", "pta"}
    assert "| +0.0 | 1.000 | 0/2 |" in rows["plain"]


def test_step_pieces_reports_every_piece_against_the_plain_loop() -> None:
    stdout = run_benchmark("step_pieces.py", "--calls", "20", "--rounds", "1")
    rows = [line.split("|")[1].strip() for line in stdout.splitlines() if line.startswith("| ")]
    assert rows == ["piece of a step", "next batch", "forward and loss", "running loss sum",
                    "forward, backward, step, zero_grad", "step events (start, end with the NaN check)", "all pieces"]


def test_overhead_says_how_idle_the_machine_was() -> None:
    stdout = run_benchmark("overhead.py", "--rounds", "2", "--runners", "plain:samples=256,pta:samples=256")
    use = re.search(r"^CPU steal (\d+\.\d)%, other processes (\d+\.\d)% of all cores during the runs$", stdout,
                    re.MULTILINE)
    assert use is not None or not Path("/proc/stat").exists(), stdout
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in stdout.splitlines()
            if line.startswith("| ")}
    assert set(rows) == {"runner", "plain:samples=256", "pta:samples=256"}
    assert rows["pta:samples=256"][5].strip() == "0"  # the same final weights as the plain loop


def test_steadiness_prints_a_median_step_per_second_and_their_spread() -> None:
    stdout = run_benchmark("steadiness.py", "--seconds", "2")
    seconds = re.findall(r"^second +(\d+): median step +(\d+\.\d) µs$", stdout, re.MULTILINE)
    assert [index for index, _ in seconds] == ["1", "2"]
    spread = re.search(r"^per-second medians: min ([\d.]+), median ([\d.]+), max ([\d.]+) µs \(max/min ([\d.]+)\)$",
                       stdout, re.MULTILINE)
    assert spread is not None, stdout
    assert float(spread[1]) == min(float(median) for _, median in seconds)
