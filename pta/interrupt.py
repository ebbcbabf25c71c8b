"""SIGTERM / SIGINT during training: note the request, let the loop finish its step and save.

A process can be blocked where Python signal handlers never run (inside a collective whose peer is
gone, for instance). So while a run is active a watchdog thread also receives every signal (through
``signal.set_wakeup_fd``): when the loop has not reached its next step boundary ``grace_s`` seconds
after a SIGTERM/SIGINT, or a second one arrives meanwhile, it ends the process with the shell's code
(128 + signal number). Under ``torchrun`` (an elastic agent), a process whose launcher is gone
(re-parented) sends itself SIGTERM, so workers never outlive their launcher.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Generator
from contextlib import contextmanager
from types import FrameType

_HANDLED = (signal.SIGTERM, signal.SIGINT)
PARENT_POLL_S = 1.0


class TrainingInterrupted(SystemExit):
    """Raised by ``train()`` after a signal stopped it and its state was saved.

    A ``SystemExit`` so that an interrupted script ends without a traceback and with the shell's
    conventional code (128 + signal number); catch it to carry on in the same process. When the
    state could not be saved, ``state_dir`` is ``None`` and ``save_error`` says why.
    """

    def __init__(self, signum: int, state_dir: str | None, save_error: Exception | None = None) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.state_dir = state_dir
        self.save_error = save_error


class DistributedRunError(RuntimeError):
    """Raised on every other process when one process of a multi-process run failed with an exception
    (that process raises its own); no final save is made."""


class InterruptFlag:
    """Set by the handled signals; ``signum`` tells which arrived first."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.acknowledged = False  # a plain bool (read by the watchdog thread): trainers stay picklable

    def acknowledge(self) -> None:
        """The loop has reached a step boundary and is saving: the watchdog stands down."""
        self.acknowledged = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signum = signum


def _exit_now(signum: int, why: str) -> None:
    sys.stderr.write(f"pta: {why}; exiting with status {128 + signum}\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def _watchdog(read_fd: int, flag: InterruptFlag, grace_s: float, done: threading.Event) -> None:
    """Reads the signal numbers written to the wakeup fd; enforces ``grace_s`` after the first one."""
    first: tuple[int, float] | None = None
    while not done.is_set():
        timeout = None if first is None else max(0.0, first[1] + grace_s - time.monotonic())
        ready, _, _ = select.select([read_fd], [], [], timeout)
        if done.is_set() or flag.acknowledged:
            return
        if not ready:  # the grace period ran out
            assert first is not None
            _exit_now(first[0], f"signal {first[0]} arrived {grace_s:.0f} s ago and training did not reach a step "
                                f"boundary (blocked, e.g. in a collective whose peer is gone)")
        data = os.read(read_fd, 64)
        if not data:
            return
        for signum in (s for s in data if s in _HANDLED):
            if first is not None:
                _exit_now(signum, f"second signal ({signum}) while waiting for the step to finish")
            first = (signum, time.monotonic())


def _watch_parent(done: threading.Event) -> None:
    """Under an elastic agent, SIGTERM this process when the agent is gone (it was re-parented)."""
    parent = os.getppid()
    while not done.wait(PARENT_POLL_S):
        if os.getppid() != parent:
            sys.stderr.write(f"pta: the launcher (pid {parent}) is gone; stopping\n")
            os.kill(os.getpid(), signal.SIGTERM)
            return


@contextmanager
def catch_interrupts(enabled: bool = True, grace_s: float = 60.0) -> Generator[InterruptFlag, None, None]:
    """Route SIGTERM and SIGINT to a flag for the duration of a run (main thread only); see the module
    docstring for the watchdog and the launcher check."""
    flag = InterruptFlag()
    done = threading.Event()
    if "TORCHELASTIC_RUN_ID" in os.environ:  # set by torchrun's agent for its workers
        threading.Thread(target=_watch_parent, args=(done,), name="pta-parent-watch", daemon=True).start()
    if not enabled or threading.current_thread() is not threading.main_thread():
        try:
            yield flag
        finally:
            done.set()
        return
    previous = {sig: signal.signal(sig, flag._handle) for sig in _HANDLED}
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watchdog = threading.Thread(target=_watchdog, args=(read_fd, flag, grace_s, done), name="pta-interrupt-watchdog",
                                daemon=True)
    watchdog.start()
    try:
        yield flag
    finally:
        done.set()
        signal.set_wakeup_fd(previous_fd)
        os.close(write_fd)  # the watchdog reads end-of-file and returns
        watchdog.join(timeout=5)
        os.close(read_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
