"""Runners that take turns: ``overhead.py --turns N``.

On a VM whose cores change speed within seconds, two whole runs made one after the other can differ by
tens of percent. Here all runners of a round start together, but only one trains at a time: each runs
N batches, hands the turn on to the next and waits for its own again. Every runner's N batches are
then timed within a fraction of a second of every other's, in the same state of the machine, while
each run is still a whole run in its own process (its setup, epoch ends and final weights unchanged).

The hand-over happens where every runner does the same thing: in its collate function, before each
N-th batch is collated. The time a runner spends waiting is not counted; a run's time is the sum of
its turns, from its first batch to the end of its ``train()``.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

# torch leaves default_collate's `batch` partly unannotated
from torch.utils.data import default_collate as torch_collate  # pyright: ignore[reportUnknownVariableType]

GO, DONE, FINISHED = b"g", b".", b"!"


# ---------------------------------------------------------------------------- in a runner's process
class Turn:
    """A runner's side: waits for its turn before every ``every``-th batch, and times its turns."""

    def __init__(self, every: int, read_fd: int, write_fd: int) -> None:
        self.every, self.read_fd, self.write_fd = every, read_fd, write_fd
        self.batches = 0
        self.resumed: float | None = None
        self.turns: list[float] = []

    @classmethod
    def from_argument(cls, text: str) -> Turn:
        """``every,read_fd,write_fd`` as ``overhead.py`` passes it to a child."""
        every, read_fd, write_fd = (int(part) for part in text.split(","))
        return cls(every, read_fd, write_fd)

    def collate(self, samples: list[Any]) -> Any:
        if self.batches % self.every == 0:
            self._hand_over(DONE)
        self.batches += 1
        return torch_collate(samples)

    def finish(self) -> None:
        """The run's last turn has ended: say so, then wait until every runner has finished, so that
        saving results does not share the machine with another runner's turn."""
        self._hand_over(FINISHED)

    def _hand_over(self, message: bytes) -> None:
        stopped = time.perf_counter()
        if self.resumed is not None:
            self.turns.append(stopped - self.resumed)
        os.write(self.write_fd, message)
        if os.read(self.read_fd, 1) != GO:
            raise SystemExit("turns: the benchmark that hands out turns has gone")
        self.resumed = time.perf_counter()


# ---------------------------------------------------------------------------- in the benchmark's process
class _Runner:
    def __init__(self, command: list[str], every: int, env: dict[str, str], cwd: str) -> None:
        to_child, self.to_child = os.pipe()
        self.from_child, from_child = os.pipe()
        self.process = subprocess.Popen(
            [*command, "--turn", f"{every},{to_child},{from_child}"], env=env, cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(to_child, from_child))
        os.close(to_child)
        os.close(from_child)
        self.output: list[bytes] = []
        assert self.process.stdout is not None
        # Drained while it runs, as a job's log would be.
        self.drain = threading.Thread(target=self.output.extend, args=(self.process.stdout,), daemon=True)
        self.drain.start()

    def go(self, timeout: float) -> bytes:
        """Lets it run until it hands the turn back: ``DONE``, ``FINISHED``, or ``b""`` (it failed or timed out)."""
        with contextlib.suppress(BrokenPipeError):  # it has exited: the read below says so
            os.write(self.to_child, GO)
        return self.message(timeout)

    def message(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.from_child], [], [], timeout)
        return os.read(self.from_child, 1) if ready else b""

    def result(self, timeout: float) -> tuple[int, str]:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.drain.join()
        return code, b"".join(self.output).decode(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.to_child)
        os.close(self.from_child)


def take_turns(commands: Sequence[list[str]], every: int, env: dict[str, str], cwd: str,
               timeout: float) -> list[tuple[int, str]]:
    """Starts one process per command (each gets ``--turn every,read_fd,write_fd`` for ``Turn``), lets
    them run ``every`` batches each in turn until all have finished, then lets them exit; returns each
    one's exit code and output, in the order of ``commands``. ``timeout``: seconds a runner may take
    for its setup, for a turn and for its exit."""
    runners = [_Runner(command, every, env, cwd) for command in commands]
    try:
        # A core's speed changes on its own: every turn runs on the same core (the setups ran on all).
        core = max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        waiting = [runner for runner in runners if runner.message(timeout) == DONE]  # before their first batch
        for runner in waiting:
            if core is not None:
                os.sched_setaffinity(runner.process.pid, {core})
        while waiting:
            waiting = [runner for runner in waiting if runner.go(timeout) == DONE]
        for runner in runners:  # finished: they may save their results and exit
            with contextlib.suppress(BrokenPipeError):
                os.write(runner.to_child, GO)
        return [runner.result(timeout) for runner in runners]
    finally:
        for runner in runners:
            runner.close()
