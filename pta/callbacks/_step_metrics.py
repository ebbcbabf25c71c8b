"""Per-step metrics every N optimizer updates (loss, learning rates, throughput) without per-step syncs."""

from __future__ import annotations

import time

from pta._meter import LossMeter
from pta._types import BatchOutput
from pta._validation import check_positive_int
from pta.callbacks._numbers import as_number
from pta.protocols import TrainerLike


class StepMetrics:
    """Decides when the update count reaches the next multiple of N and measures the window since the
    last time.

    Per step the caller only compares ``trainer.num_updates`` with a stored integer (``due``); the loss
    is read from the device once per window (``collect``), never on the steps in between.

    ``collect`` returns ``train_loss_step`` (this process's mean training loss over the window, from the
    trainer's on-device loss sum; the last batch's loss for trainers without one), ``lr`` (``lr_group_<i>``
    for each param group when there are several) and ``samples_per_second`` (training samples of all
    processes per second over the window).
    """

    def __init__(self, every_n_updates: int) -> None:
        check_positive_int("log_every_n_updates", every_n_updates)
        self.every_n_updates = every_n_updates
        self._next = every_n_updates
        self._time = 0.0
        self._updates = 0
        self._loss_sum = 0.0
        self._loss_count = 0

    def start(self, trainer: TrainerLike) -> None:
        self._updates = trainer.num_updates
        self._next = self._following(self._updates)
        self._time = time.perf_counter()
        self._loss_sum, self._loss_count = 0.0, 0

    def due(self, trainer: TrainerLike) -> bool:
        return trainer.num_updates >= self._next

    def collect(self, trainer: TrainerLike, batch_output: BatchOutput) -> dict[str, float]:
        now, updates = time.perf_counter(), trainer.num_updates
        values: dict[str, float] = {}
        loss = self._window_loss(trainer, batch_output)
        if loss is not None:
            values["train_loss_step"] = loss
        optimizer = trainer.optimizer
        groups = optimizer.param_groups if optimizer is not None else []
        for index, group in enumerate(groups):
            lr = as_number(group.get("lr"))
            if lr is not None:
                values["lr" if len(groups) == 1 else f"lr_group_{index}"] = float(lr)
        samples = (updates - self._updates) * (trainer.run_config.train_total_batch_size or 0)
        if samples and now > self._time:
            values["samples_per_second"] = samples / (now - self._time)
        self._time, self._updates = now, updates
        self._next = self._following(updates)
        return values

    def _following(self, updates: int) -> int:
        """The next multiple of N after ``updates``: a resumed run logs at the same updates as an
        uninterrupted one."""
        return (updates // self.every_n_updates + 1) * self.every_n_updates

    def _window_loss(self, trainer: object, batch_output: BatchOutput) -> float | None:
        meter = getattr(trainer, "_train_loss", None)
        if not isinstance(meter, LossMeter) or meter.total is None or not meter.count:
            number = as_number(batch_output["loss"].detach().float().mean())  # one sync, once per window
            return None if number is None else float(number)
        total = float(meter.total.item())  # the one host sync of the window
        if meter.count < self._loss_count:  # a new epoch reset the sums: the window is this epoch so far
            self._loss_sum, self._loss_count = 0.0, 0
        count = meter.count - self._loss_count
        loss = (total - self._loss_sum) / count if count else total / meter.count
        self._loss_sum, self._loss_count = total, meter.count
        return loss
