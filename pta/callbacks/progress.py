"""Console progress: a start line, and a tqdm bar with the running loss and ETA on terminals."""

from __future__ import annotations

import sys
import time
from collections.abc import Sized
from typing import IO, Any

from tqdm.auto import tqdm
from typing_extensions import override

from pta._meter import LossMeter
from pta._types import BatchOutput
from pta.callbacks._console import format_duration, start_line
from pta.callbacks.base import TrainerCallback
from pta.protocols import TrainerLike


class PrintProgressCallback(TrainerCallback):
    """Prints, once per machine, what a run is when it starts and how long it took when it ends::

        Starting training run: world size 2, device cpu, precision no, accumulation 1, batch 32/process
        (64 per update), 23 steps/epoch (23 updates), 15 epochs, parameters 9,610 trainable, 0 frozen
        ...
        Finishing training run: 15 epochs in 8.31s

    (the first is one line). Lines are flushed at once, so they appear promptly in a redirected log
    and under ``torchrun``.
    """

    def __init__(self) -> None:
        self._started = 0.0
        self._first_epoch = 1

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._started = time.perf_counter()
        self._first_epoch = trainer.run_history.current_epoch
        trainer.print(start_line(trainer, training=True), flush=True)

    @override
    def on_training_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        epochs = trainer.run_history.current_epoch - self._first_epoch
        elapsed = format_duration(time.perf_counter() - self._started)
        trainer.print(f"Finishing training run: {epochs} epoch{'s' if epochs != 1 else ''} in {elapsed}", flush=True)

    @override
    def on_evaluation_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        trainer.print(start_line(trainer, training=False), flush=True)


class ProgressBarCallback(TrainerCallback):
    """A tqdm bar per training and evaluation epoch, on the local main process of each machine, when
    its stream (``file``, default ``sys.stderr``) is a terminal; in a redirected log there is no bar
    (no carriage-return garbage) and ``LogMetricsCallback``'s epoch lines tell the progress.

    The training bar shows the epoch's running mean loss and tqdm's rate and ETA. The loss is read from
    the device at most once every ``loss_refresh_seconds``, never once per step (that would make every
    step wait for the device); per step the callback only advances a counter.
    """

    def __init__(self, loss_refresh_seconds: float = 1.0, file: IO[str] | None = None) -> None:
        self.loss_refresh_seconds = loss_refresh_seconds
        self.file = file
        self.pbar: Any = None
        self.eval_pbar: Any = None
        self._next_refresh = 0.0
        self._epoch_label = ""

    def _bar(self, trainer: TrainerLike, loader: object, desc: str) -> Any:
        stream = self.file if self.file is not None else sys.stderr
        if not (trainer.is_local_main_process and bool(getattr(stream, "isatty", lambda: False)())):
            return _NO_BAR
        return tqdm(total=len(loader) if isinstance(loader, Sized) else None, desc=desc, file=stream,
                    leave=False, dynamic_ncols=True, unit="step")

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        first = int(getattr(trainer, "_first_epoch", trainer.run_history.current_epoch))
        self._epoch_label = f"/{first - 1 + trainer.run_config.num_epochs}"

    @override
    def on_train_epoch_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        label = f"epoch {trainer.run_history.current_epoch}{self._epoch_label}"
        self.pbar = self._bar(trainer, trainer.train_dataloader, label)
        self._next_refresh = time.monotonic() + self.loss_refresh_seconds

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, **kwargs: Any) -> None:
        pbar = self.pbar
        if pbar.disable:
            return
        pbar.update(1)
        now = time.monotonic()
        if now >= self._next_refresh:
            self._next_refresh = now + self.loss_refresh_seconds
            pbar.set_postfix_str(f"loss {running_loss(trainer, batch_output):.4g}")

    @override
    def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.pbar.close()

    @override
    def on_eval_epoch_start(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        self.eval_pbar = self._bar(trainer, trainer.eval_dataloader, "eval")

    @override
    def on_eval_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, **kwargs: Any) -> None:
        if not self.eval_pbar.disable:
            self.eval_pbar.update(1)

    @override
    def on_eval_epoch_end(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        self.eval_pbar.close()


class _NoBar:
    """The bar of an epoch that draws none: ``disable`` as on a disabled tqdm, and nothing to do. A
    disabled tqdm, made and closed every epoch, cost about 200 µs of a training run's epoch (its
    locks, its registry of bars, its monitor thread)."""

    disable = True

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


_NO_BAR = _NoBar()


def running_loss(trainer: object, batch_output: BatchOutput) -> float:
    """This process's mean training loss of the epoch so far (the trainer's on-device sum; one host
    sync), or the current batch's loss for trainers that keep no such sum."""
    meter = getattr(trainer, "_train_loss", None)
    if isinstance(meter, LossMeter) and meter.total is not None and meter.count:
        return float((meter.total / meter.count).item())
    return float(batch_output["loss"].detach().float().mean().item())
