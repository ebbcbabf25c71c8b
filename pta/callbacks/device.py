"""Moves the trainer's extra modules (a loss with buffers, a teacher model) to the run's device."""

from __future__ import annotations

from typing import Any

from torch import nn
from typing_extensions import override

from pta.callbacks.base import TrainerCallback
from pta.protocols import TrainerLike


class MoveModulesToDeviceCallback(TrainerCallback):
    """At the start of each run, moves every ``nn.Module`` attribute of the trainer except ``model``
    (which the trainer prepares itself) to ``trainer.device``."""

    def _move(self, trainer: TrainerLike) -> None:
        for name, value in vars(trainer).items():
            if name != "model" and isinstance(value, nn.Module):
                value.to(trainer.device)

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._move(trainer)

    @override
    def on_evaluation_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._move(trainer)
