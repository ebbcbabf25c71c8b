"""Stops every process together when the loss becomes NaN or infinite, without a per-step host sync."""

from __future__ import annotations

import math
from typing import Any

import torch
from typing_extensions import override

from pta._meter import LossMeter, running_loss
from pta._types import BatchOutput
from pta.callbacks.base import StopTrainingError, TrainerCallback
from pta.protocols import TrainerLike


class NonFiniteLossError(FloatingPointError):
    """Raised at the end of a run that ``TerminateOnNaNCallback`` stopped."""


class TerminateOnNaNCallback(TrainerCallback):
    """Stops the run when a loss is NaN or infinite, on all processes at the same step.

    It reads the running loss sum the trainer already keeps on the device (a NaN or inf in any loss
    makes it non-finite), so a step costs no device operation; with a trainer that keeps no such sum
    each step adds the loss to a sum of its own. Every ``check_every_n_steps`` training steps of the run
    and at the end of every epoch the flag is combined across processes and read once (a single process
    reads the sum itself). The steps are counted from the run's start, not the epoch's, so the per-step
    tracking (every N updates) reads the same sum on the same steps and finds it already summed. When the
    flag is set the run stops through ``StopTrainingError`` and, after the run has closed normally,
    ``NonFiniteLossError`` is raised (unless ``raise_at_end=False``), so a script does not carry on with
    a broken model.
    ``check_every_n_steps=1`` checks every step, at the cost of one host sync per step.
    """

    def __init__(self, check_every_n_steps: int = 50, raise_at_end: bool = True) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.check_every_n_steps = check_every_n_steps
        self.raise_at_end = raise_at_end
        self.triggered = False
        self._sum: torch.Tensor | None = None
        self._meter: LossMeter | None = None  # the trainer's running sum of the current phase
        self._train_steps = 0  # of the run: the schedule
        self._epoch_start = 0  # the training steps before this epoch: the message names the epoch's step
        self._eval_steps = 0
        self._message = ""
        self._train_state: tuple[torch.Tensor | None, LossMeter | None] = (None, None)

    def _observe(self, batch_output: BatchOutput) -> None:
        # One device op per step: a NaN or inf in any loss makes the running sum non-finite.
        loss = batch_output["loss"].detach()
        loss = loss if loss.ndim == 0 else loss.sum()
        if self._sum is None:
            self._sum = loss.to(torch.float32 if loss.device.type == "mps" else torch.float64, copy=True)
        else:
            self._sum.add_(loss)

    def _check(self, trainer: TrainerLike, phase: str, step: int) -> None:
        """``step``: the phase's steps in this epoch so far, for the message."""
        if self._meter is not None:
            total = self._meter.total  # left in place: the trainer records it at the epoch's end
        else:
            total, self._sum = self._sum, None
        if trainer.run_config.num_processes == 1:  # one host read: the collective's path costs ~50x more
            stop = total is not None and not math.isfinite(total.item())
        else:  # every process takes part, with a loss or without
            flag = torch.zeros((), dtype=torch.bool, device=trainer.device) if total is None else ~torch.isfinite(total)
            stop = bool(trainer.gather(flag.to(torch.int32).reshape(1)).any().item())
        if stop:
            self.triggered = True
            self._message = (
                f"The {phase} loss became NaN or infinite in epoch {trainer.run_history.current_epoch} "
                f"(at or before step {step} of the epoch)"
            )
            raise StopTrainingError(f"Stopping training: {self._message}")

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.triggered, self._train_steps = False, 0

    @override
    def on_train_epoch_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._sum, self._epoch_start, self._meter = None, self._train_steps, running_loss(trainer, "train")

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, **kwargs: Any) -> None:
        if self._meter is None:
            self._observe(batch_output)
        self._train_steps += 1
        if self._train_steps % self.check_every_n_steps == 0:
            self._check(trainer, "training", self._train_steps - self._epoch_start)

    @override
    def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._check(trainer, "training", self._train_steps - self._epoch_start)

    @override
    def on_eval_epoch_start(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        # Saved for an evaluation in the middle of a training epoch, which goes on afterwards.
        self._train_state = (self._sum, self._meter)
        self._sum, self._eval_steps, self._meter = None, 0, running_loss(trainer, "eval")

    @override
    def on_eval_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, **kwargs: Any) -> None:
        if self._meter is None:
            self._observe(batch_output)
        self._eval_steps += 1

    @override
    def on_eval_epoch_end(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        self._check(trainer, "evaluation", self._eval_steps)
        self._sum, self._meter = self._train_state

    @override
    def on_training_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if self.triggered and self.raise_at_end:
            raise NonFiniteLossError(self._message)
