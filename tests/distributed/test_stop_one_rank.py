"""Issue 10 item 1: a stop or an error on one rank ends every rank together; workers never outlive torchrun."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.distributed._launch import REPO_ROOT, WORKERS, clean_env, run_torchrun, torchrun_command
from tests.distributed.workers import stop_one_rank as worker
from tests.distributed.workers._common import load_results

pytestmark = pytest.mark.slow

TIMEOUT_S = 150.0
"""Far below the workers' process-group timeout plus the launch: a rank left waiting would fail the test."""


def test_stop_on_one_rank_stops_both_and_both_save_the_final_state(tmp_path: Path) -> None:
    output = run_torchrun("stop_one_rank.py", str(tmp_path), "stop", timeout=TIMEOUT_S).stdout
    results = load_results(tmp_path)
    for process_rank, result in enumerate(results):
        assert result["raised"] == "nothing", f"rank {process_rank}: {result}"
        assert result["steps"] == worker.AGREED_STEP  # both stopped after the same step: the next agreement
        assert result["stop_events"] == 1
        assert result["final_saved"] is True
    for a, b in zip(results[0]["weights"], results[1]["weights"], strict=True):
        assert torch.equal(a, b)
    assert output.count("rank 1 asked to stop") == 1, output  # the reason, printed once
    for name in ("step_15", "final"):
        assert (tmp_path / "states" / name / "pta_meta.json").is_file()


def test_error_on_one_rank_ends_both_without_a_final_save(tmp_path: Path) -> None:
    run_torchrun("stop_one_rank.py", str(tmp_path), "error", timeout=TIMEOUT_S)
    rank0, rank1 = load_results(tmp_path)
    assert rank1["raised"] == "RuntimeError" and rank1["message"] == "rank 1 failed on purpose"
    assert rank0["raised"] == "DistributedRunError"
    assert "process 1 failed with RuntimeError: rank 1 failed on purpose" in rank0["message"]
    assert rank0["steps"] == rank1["steps"] == worker.AGREED_STEP
    assert not rank0["final_saved"] and not rank1["final_saved"]
    assert not (tmp_path / "states" / "final").exists()
    assert (tmp_path / "states" / "step_15" / "pta_meta.json").is_file()  # both ran the saver after the error


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _launch_and_wait_for_pids(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[bytes], list[int]]:
    launcher = subprocess.Popen(torchrun_command(WORKERS / "stop_one_rank.py", [str(tmp_path), mode]),
                                cwd=REPO_ROOT, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and not all((tmp_path / f"pid{r}").is_file() for r in (0, 1)):
        if launcher.poll() is not None:
            break
        time.sleep(0.2)
    pids = [int(p.read_text()) for p in (tmp_path / "pid0", tmp_path / "pid1") if p.is_file()]
    return launcher, pids


def _cleanup(launcher: subprocess.Popen[bytes], pids: list[int]) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    if launcher.poll() is None:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=30)


def test_sigterm_to_torchrun_saves_an_interrupted_state_and_ends_every_worker(tmp_path: Path) -> None:
    launcher, pids = _launch_and_wait_for_pids(tmp_path, "sigterm")
    try:
        assert len(pids) == 2, "torchrun ended before both workers reached step 3"
        os.kill(launcher.pid, signal.SIGTERM)  # torchrun forwards it to its workers
        launcher.wait(timeout=TIMEOUT_S)
        assert (tmp_path / "interrupted" / "pta_meta.json").is_file()  # saved by both, at the same step
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.5)
        assert not any(_alive(pid) for pid in pids)
    finally:
        _cleanup(launcher, pids)


def test_workers_exit_when_their_launcher_is_killed(tmp_path: Path) -> None:
    # Rank 1 sleeps forever in a callback and rank 0 waits for it in a collective (blocked in C, where
    # Python signal handlers do not run). torchrun is then killed with SIGKILL, so nobody forwards a
    # signal: each worker must notice that its launcher is gone and exit within its grace period.
    launcher, pids = _launch_and_wait_for_pids(tmp_path, "block")
    try:
        assert len(pids) == 2, "torchrun ended before both workers reached the blocking step"
        time.sleep(1)  # rank 0 is now inside the collective
        assert all(_alive(pid) for pid in pids)
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=30)
        deadline = time.monotonic() + worker.GRACE_S + 30  # parent check (1 s) + grace + a loaded machine
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.5)
        assert not any(_alive(pid) for pid in pids), "a worker outlived its killed launcher"
    finally:
        _cleanup(launcher, pids)
