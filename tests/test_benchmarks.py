"""The benchmarks run end to end and report every runner or piece (smoke tests: no timing is checked)."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *args: str) -> str:
    """The script's standard output; it must exit 0 within 5 minutes."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def run_short(script: str, runners: str, tmp_path: Path) -> dict[str, str]:
    """The table rows (by runner) of ``script`` run for 2 rounds of 16 steps, 2 epochs, with the ``pta``
    runner's callbacks replaced by the defaults and a CSV logger that tracks every step."""
    tracked = tmp_path / "metrics.csv"
    spec = f'pta=defaults;pta.callbacks:CSVLoggerCallback:{{"path": "{tracked}", "log_every_n_updates": 1}}'
    stdout = run_benchmark(script, "--rounds", "2", "--samples", "256", "--epochs", "2",
                           "--runners", runners, "--callbacks", spec)
    assert "samples=256 epochs=2 steps/run=16 rounds=2" in stdout
    assert len((tmp_path / "metrics_steps.csv").read_text().splitlines()) > 16  # the callbacks given tracked each step
    return {line.split("|")[1].strip(): line for line in stdout.splitlines() if line.startswith("| ")}


def test_step_medians_reports_each_runner_against_the_plain_loop(tmp_path: Path) -> None:
    rows = run_short("step_medians.py", "plain,pta", tmp_path)
    assert set(rows) == {"runner", "plain", "pta"}
    assert re.search(r"\| ratio at full speed \(\d rounds\) \| ratio of mean steps \|$", rows["runner"])
    assert re.search(r"\| \+0\.0 \| 1\.000 \| 0/2 \| (1\.000|–) \| 1\.000 \|$", rows["plain"])


def benchmark_module(script: str) -> ModuleType:
    """The script imported into this process (the benchmark directory is not a package)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(script.removesuffix(".py"))
    finally:
        sys.path.remove(str(BENCHMARKS))


def refusal(script: str, *args: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """What the script's ``main()`` says on standard error as it exits with status 2 (argparse's usage
    error). In this process, not a new one: the refusal comes before any run, importing torch is the cost."""
    main: Callable[[], None] = benchmark_module(script).main
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("pair", ["pta", "ptb=defaults"])  # no runner named; a runner that does not exist
@pytest.mark.parametrize("script", ["overhead.py", "profile_step.py", "step_medians.py", "step_pairs.py"])
def test_callbacks_of_no_pta_runner_are_refused_before_any_run(
        script: str, pair: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    stderr = refusal(script, "--callbacks", pair, monkeypatch=monkeypatch, capsys=capsys)
    assert f"--callbacks: expected RUNNER=SPEC with RUNNER one of pta-bare, pta, pta-defaults, got {pair!r}" in stderr


@pytest.mark.parametrize("script", ["event_costs.py", "step_medians.py", "step_pairs.py"])
def test_a_run_of_no_epochs_is_refused_before_any_run(
        script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    stderr = refusal(script, "--epochs", "0", monkeypatch=monkeypatch, capsys=capsys)
    assert "--epochs: expected a whole number of at least 1, got '0'" in stderr


def test_step_pairs_trains_a_plain_loop_in_step_with_each_runner_and_the_plain_loop(tmp_path: Path) -> None:
    rows = run_short("step_pairs.py", "pta-bare,pta", tmp_path)
    assert set(rows) == {"runner", "plain", "pta-bare", "pta"}
    for name in ("plain", "pta-bare", "pta"):
        cells = [cell.strip() for cell in rows[name].split("|")[2:-1]]
        assert cells[5] == "0"  # the loop stepped inside the runner's collation ends with the runner's weights
        assert cells[6] == ""  # a shortened run is checked against no target
        # pta's ratio is over the plain loop's in the same place, of the same rounds; the plain loop has none
        assert (cells[3] == "") == (name == "plain")


def test_step_pairs_refuses_a_runner_that_is_not_pta_before_any_run(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    stderr = refusal("step_pairs.py", "--runners", "pta,plain", monkeypatch=monkeypatch, capsys=capsys)
    assert "--runners: plain not among the pta runners (pta-bare, pta, pta-defaults)" in stderr


def test_step_medians_counts_only_rounds_every_runner_ran_at_full_speed() -> None:
    module = benchmark_module("step_medians.py")
    full_speed_rounds: Callable[[dict[str, list[float]]], list[int]] = module._full_speed_rounds
    times = {"plain": [1.0, 1.5, 1.05, 1.09], "pta": [1.02, 1.03, 1.6, 1.12]}
    assert full_speed_rounds(times) == [0, 3]  # round 1: plain slowed; round 2: pta slowed


def test_event_costs_times_every_dispatched_callback_event() -> None:
    stdout = run_benchmark("event_costs.py", "--runner", "pta", "--epochs", "2")
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in stdout.splitlines()
            if line.startswith("| ")}
    assert rows["TerminateOnNaNCallback.on_train_step_end"] == "512"  # 2 epochs of 256 steps, every call timed
    assert rows["TerminateOnNaNCallback.on_train_epoch_end"] == "2"
    assert not any(name.startswith(("ProgressBar", "LogMetrics")) for name in rows)  # the runner's callbacks only


def test_step_pieces_reports_every_piece_against_the_plain_loop() -> None:
    stdout = run_benchmark("step_pieces.py", "--calls", "20", "--rounds", "1")
    rows = [line.split("|")[1].strip() for line in stdout.splitlines() if line.startswith("| ")]
    assert rows == ["piece of a step", "next batch", "forward, loss, backward, step, zero_grad",
                    "step events (start, end with the NaN check)", "all pieces"]


def test_overhead_says_how_idle_the_machine_was() -> None:
    stdout = run_benchmark("overhead.py", "--rounds", "1", "--runners", "plain:samples=256,pta:samples=256")
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


TAKES_TURNS = """
import sys
import torch
sys.path.insert(0, {benchmarks!r})
from turns import Turn
name, batches, fail_at, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
turn = Turn.from_argument(sys.argv[6])  # after "--turn"
for index in range(batches):
    if index == fail_at:
        sys.exit(3)
    turn.collate([torch.zeros(1)])
    with open(log, "a") as file:
        file.write(f"{{name}}{{index}} ")
turn.finish()
print(name, "turns", len(turn.turns))
"""


def test_runners_that_take_turns_run_one_at_a_time_a_block_of_batches_each(tmp_path: Path) -> None:
    """``turns.take_turns``: a runner collates only in its turn, two batches a turn, round and round; one
    that finishes or fails leaves the others going, and each one's turns are timed."""
    take_turns: Callable[..., list[tuple[int, str]]] = benchmark_module("turns.py").take_turns
    script, log = tmp_path / "runner.py", tmp_path / "order.log"
    script.write_text(TAKES_TURNS.format(benchmarks=str(BENCHMARKS)))
    commands = [[sys.executable, str(script), name, batches, fail_at, str(log)]
                for name, batches, fail_at in (("a", "5", "-1"), ("b", "4", "-1"), ("c", "5", "3"))]
    results = take_turns(commands, 2, {**os.environ, "OMP_NUM_THREADS": "1"}, str(tmp_path), 60.0)
    assert log.read_text().split() == ["a0", "a1", "b0", "b1", "c0", "c1", "a2", "a3", "b2", "b3", "c2", "a4"]
    assert [code for code, _ in results] == [0, 0, 3]
    assert "a turns 3" in results[0][1] and "b turns 2" in results[1][1]  # from batch 0 to the end of the run


def test_overhead_with_turns_compares_whole_runs_that_took_turns() -> None:
    stdout = run_benchmark("overhead.py", "--rounds", "1", "--turns", "8",
                           "--runners", "plain:samples=256,pta:samples=256")
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in stdout.splitlines() if line.startswith("| ")}
    assert set(rows) == {"runner", "plain:samples=256", "pta:samples=256"}
    assert re.fullmatch(r"\d\.\d{3} \(\d\.\d{3}-\d\.\d{3}\) vs plain:samples=256", rows["pta:samples=256"][1])
    assert rows["pta:samples=256"][3] == "–"  # the setups ran at the same time: not comparable
    assert rows["pta:samples=256"][5] == "0"  # the same final weights as the plain loop


def test_turns_with_several_processes_a_run_are_refused_before_any_run(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    stderr = refusal("overhead.py", "--turns", "8", "--processes", "2", monkeypatch=monkeypatch, capsys=capsys)
    assert "--turns: runners take turns only with one process per run (--processes 1)" in stderr
