"""SIGTERM / SIGINT during training: note the request, let the loop finish its step and save."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


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


class InterruptFlag:
    """Set by the handled signals; ``signum`` tells which arrived first."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signum = signum


@contextmanager
def catch_interrupts(enabled: bool = True) -> Iterator[InterruptFlag]:
    """Route SIGTERM and SIGINT to a flag for the duration of a run (main thread only)."""
    flag = InterruptFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {sig: signal.signal(sig, flag._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
