"""Values a scheduler factory needs before they exist, resolved when the trainer creates the scheduler."""

from __future__ import annotations

import functools
from collections.abc import Sized
from enum import IntEnum
from typing import Any

from typing_extensions import override

from pta.protocols import TrainerLike


class TrainerPlaceholderValues(IntEnum):
    """Stand-ins for run facts in ``create_scheduler_fn`` partials, e.g.::

        partial(OneCycleLR, max_lr=0.1, epochs=TrainerPlaceholderValues.NUM_EPOCHS,
                steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH)

    They are ints (so factories type-check) and support ``* int`` and ``+ int``. Update counts are the
    optimizer updates each process performs per epoch: exactly the ``scheduler.step()`` calls it sees.
    """

    NUM_EPOCHS = -1_000_001
    NUM_UPDATE_STEPS_PER_EPOCH = -1_000_002
    PER_PROCESS_NUM_UPDATE_STEPS_PER_EPOCH = -1_000_003
    TRAIN_DATALOADER_LEN = -1_000_004
    EVAL_DATALOADER_LEN = -1_000_005

    def resolve(self, trainer: TrainerLike) -> int:
        config = trainer.run_config
        if self in (TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
                    TrainerPlaceholderValues.PER_PROCESS_NUM_UPDATE_STEPS_PER_EPOCH):
            return config.num_local_update_steps_per_epoch
        if self is TrainerPlaceholderValues.NUM_EPOCHS:
            return config.num_epochs
        loader = trainer.train_dataloader if self is TrainerPlaceholderValues.TRAIN_DATALOADER_LEN else trainer.eval_dataloader
        if not isinstance(loader, Sized):
            raise ValueError(f"{self.name} needs a dataloader with a length")
        return len(loader)

    @override
    def __mul__(self, other: int) -> int:
        return PlaceholderExpression(self, int(other), 0)

    __rmul__ = __mul__

    @override
    def __add__(self, other: int) -> int:
        return PlaceholderExpression(self, 1, int(other))

    __radd__ = __add__


class PlaceholderExpression(int):
    """``placeholder * factor + offset``; an ``int`` so that it type-checks where the value goes."""

    placeholder: TrainerPlaceholderValues
    factor: int
    offset: int

    def __new__(cls, placeholder: TrainerPlaceholderValues, factor: int, offset: int) -> PlaceholderExpression:
        self = super().__new__(cls, int(placeholder))
        self.placeholder, self.factor, self.offset = placeholder, factor, offset
        return self

    @override
    def __mul__(self, other: int) -> int:
        return PlaceholderExpression(self.placeholder, self.factor * int(other), self.offset * int(other))

    __rmul__ = __mul__

    @override
    def __add__(self, other: int) -> int:
        return PlaceholderExpression(self.placeholder, self.factor, self.offset + int(other))

    __radd__ = __add__

    @override
    def __repr__(self) -> str:
        return f"({self.placeholder.name} * {self.factor} + {self.offset})"

    def resolve(self, trainer: TrainerLike) -> int:
        return self.placeholder.resolve(trainer) * self.factor + self.offset


def _resolve(value: Any, trainer: TrainerLike) -> Any:
    if isinstance(value, (TrainerPlaceholderValues, PlaceholderExpression)):
        return value.resolve(trainer)
    return value


def replace_trainer_placeholder_values(trainer: TrainerLike, factory: Any) -> Any:
    """``factory`` with every placeholder among a ``functools.partial``'s arguments replaced by its value."""
    if not isinstance(factory, functools.partial):
        return factory
    args = tuple(_resolve(arg, trainer) for arg in factory.args)
    keywords = {key: _resolve(value, trainer) for key, value in factory.keywords.items()}
    return functools.partial(replace_trainer_placeholder_values(trainer, factory.func), *args, **keywords)
