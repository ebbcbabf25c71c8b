"""Issue 10 item 1: a process that a signal cannot reach at a step boundary still ends (the watchdog),
and single-process runs pay nothing for the multi-process stop agreement."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pta._agreement import StopAgreement
from tests.distributed._launch import REPO_ROOT, clean_env

BLOCKED = textwrap.dedent("""
    import sys, threading, time
    from pta.interrupt import catch_interrupts
    grace, acknowledge = float(sys.argv[1]), sys.argv[2] == "ack"
    with catch_interrupts(True, grace_s=grace) as flag:
        print("ready", flush=True)
        while flag.signum is None:
            time.sleep(0.05)
        print("flag", flag.signum, flush=True)
        if acknowledge:
            flag.acknowledge()  # what the loop does when it reaches the interrupt save
            time.sleep(grace + 2)
            print("finished normally", flush=True)
        else:
            threading.Event().wait()  # blocked for good, as in a collective whose peer is gone
""")


def _start(grace: float, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", BLOCKED, str(grace), mode], cwd=REPO_ROOT, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the process did not end: the watchdog did not act")
    return proc.returncode, out, err


def test_a_blocked_process_exits_after_the_grace_period() -> None:
    proc = _start(1.0, "block")
    proc.send_signal(signal.SIGTERM)
    code, out, err = _finish(proc)
    assert f"flag {int(signal.SIGTERM)}" in out  # the Python handler ran: the loop would have seen it
    assert code == 128 + signal.SIGTERM
    assert "did not reach a step boundary" in err


def test_a_second_signal_ends_a_blocked_process_at_once() -> None:
    proc = _start(600.0, "block")  # a grace period far beyond the test's timeout
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    code, _, err = _finish(proc)
    assert code == 128 + signal.SIGTERM
    assert "second signal" in err


def test_a_loop_that_reached_its_save_is_left_alone() -> None:
    proc = _start(1.0, "ack")
    proc.send_signal(signal.SIGTERM)
    code, out, err = _finish(proc)
    assert code == 0, err
    assert "finished normally" in out


def test_single_process_runs_hold_nothing_back_and_sync_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    def no_collective(*args: object, **kwargs: object) -> None:
        raise AssertionError("a collective in a single-process run")

    monkeypatch.setattr(dist, "all_reduce", no_collective)
    agreement = StopAgreement(1)
    assert not agreement.distributed
    assert agreement.agree(15) == 15
