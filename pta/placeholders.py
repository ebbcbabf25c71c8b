"""Values a scheduler factory needs before they exist, resolved when the trainer creates the scheduler."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sized
from enum import IntEnum
from typing import Any

from typing_extensions import override

from pta.protocols import TrainerLike


def _refuse(self: int, *args: object) -> int:
    raise TypeError("placeholders support only +, - and * with ints and other placeholders")


class TrainerPlaceholderValues(IntEnum):
    """Stand-ins for run facts in ``create_scheduler_fn`` partials, e.g.::

        partial(OneCycleLR, max_lr=0.1, epochs=TrainerPlaceholderValues.NUM_EPOCHS,
                steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH)

    They are ints (so factories type-check) and combine with ints and each other by ``*``, ``+`` and ``-``.
    Update counts are the optimizer updates each process performs: exactly the ``scheduler.step()``
    calls it sees. ``TOTAL_NUM_UPDATE_STEPS`` (pta only) is the run's total, ``max_num_train_steps``
    included, so a schedule sized with it ends exactly at the last update.
    """

    NUM_EPOCHS = -1_000_001
    NUM_UPDATE_STEPS_PER_EPOCH = -1_000_002
    PER_PROCESS_NUM_UPDATE_STEPS_PER_EPOCH = -1_000_003
    TRAIN_DATALOADER_LEN = -1_000_004
    EVAL_DATALOADER_LEN = -1_000_005
    TOTAL_NUM_UPDATE_STEPS = -1_000_006

    def resolve(self, trainer: TrainerLike) -> int:
        config = trainer.run_config
        # Each reads the run_config field of its name, as in pytorch-accelerated; pta's trainers set both
        # fields to the per-process update count (a run_config built by hand is taken as it is).
        if self is TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH:
            return config.num_update_steps_per_epoch
        if self is TrainerPlaceholderValues.PER_PROCESS_NUM_UPDATE_STEPS_PER_EPOCH:
            return config.num_local_update_steps_per_epoch
        if self is TrainerPlaceholderValues.NUM_EPOCHS:
            return config.num_epochs
        if self is TrainerPlaceholderValues.TOTAL_NUM_UPDATE_STEPS:
            total = config.num_epochs * config.num_local_update_steps_per_epoch
            return min(total, config.max_num_train_steps) if config.max_num_train_steps else total
        name = "train_dataloader" if self is TrainerPlaceholderValues.TRAIN_DATALOADER_LEN else "eval_dataloader"
        # pytorch-accelerated's trainers (and test doubles written for them) have only the private attribute
        loader = getattr(trainer, name, None)
        if loader is None:
            loader = getattr(trainer, f"_{name}", None)
        if not isinstance(loader, Sized):
            raise ValueError(f"{self.name} needs a dataloader with a length")
        return len(loader)

    # Arithmetic builds a PlaceholderExpression, which holds the rules.
    @override
    def __mul__(self, other: int) -> int:
        return PlaceholderExpression(self.resolve) * other

    __rmul__ = __mul__

    @override
    def __add__(self, other: int) -> int:
        return PlaceholderExpression(self.resolve) + other

    __radd__ = __add__

    @override
    def __sub__(self, other: int) -> int:
        return PlaceholderExpression(self.resolve) - other

    @override
    def __rsub__(self, other: int) -> int:
        return other - PlaceholderExpression(self.resolve)

    __floordiv__ = __rfloordiv__ = __truediv__ = __rtruediv__ = __mod__ = __rmod__ = _refuse
    __pow__ = __rpow__ = __neg__ = _refuse  # type: ignore[assignment]  # int.__pow__ is overloaded; refused here

Resolver = Callable[[TrainerLike], int]


def _resolver(value: int) -> Resolver:
    if isinstance(value, (TrainerPlaceholderValues, PlaceholderExpression)):
        return value.resolve
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"placeholders combine only with ints and other placeholders, got {value!r}")
    return lambda trainer: value


class PlaceholderExpression(int):
    """Sums and products of placeholders and ints; an ``int`` so that it type-checks where it goes."""

    resolve: Resolver

    def __new__(cls, resolve: Resolver) -> PlaceholderExpression:
        self = super().__new__(cls, -1_000_000)
        self.resolve = resolve
        return self

    @override
    def __mul__(self, other: int) -> int:
        left, right = self.resolve, _resolver(other)
        return PlaceholderExpression(lambda trainer: left(trainer) * right(trainer))

    __rmul__ = __mul__

    @override
    def __add__(self, other: int) -> int:
        left, right = self.resolve, _resolver(other)
        return PlaceholderExpression(lambda trainer: left(trainer) + right(trainer))

    __radd__ = __add__

    @override
    def __sub__(self, other: int) -> int:
        left, right = self.resolve, _resolver(other)
        return PlaceholderExpression(lambda trainer: left(trainer) - right(trainer))

    @override
    def __rsub__(self, other: int) -> int:
        left, right = _resolver(other), self.resolve
        return PlaceholderExpression(lambda trainer: left(trainer) - right(trainer))

    __floordiv__ = __rfloordiv__ = __truediv__ = __rtruediv__ = __mod__ = __rmod__ = _refuse
    __pow__ = __rpow__ = __neg__ = _refuse  # type: ignore[assignment]  # int.__pow__ is overloaded; refused here

    @override
    def __repr__(self) -> str:
        return "<placeholder expression>"


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
