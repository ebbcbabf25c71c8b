"""Checks of ``train()`` / ``evaluate()`` arguments, run before any training work starts."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any


class ConfigurationError(ValueError):
    """An argument or a trainer composition that cannot work; the message names it and the fix."""


def check_positive_int(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")


def check_positive_float(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number or None, got {value!r}")


def check_dataset(name: str, dataset: Any) -> None:
    if dataset is None:
        raise ConfigurationError(f"{name} is required, got None")
    if isinstance(dataset, Sized) and len(dataset) == 0:
        raise ConfigurationError(f"{name} is empty: it has 0 samples")


def check_epochs(num_epochs: object, max_num_train_steps: object) -> None:
    check_positive_int("max_num_train_steps", max_num_train_steps, allow_none=True)
    if max_num_train_steps is None:
        check_positive_int("num_epochs", num_epochs)
    elif num_epochs is not None and (isinstance(num_epochs, bool) or not isinstance(num_epochs, int)):
        raise ConfigurationError(f"num_epochs must be an integer, got {num_epochs!r}")


def check_scheduler_factory(create_scheduler_fn: object) -> None:
    if create_scheduler_fn is None:
        return
    looks_like_scheduler = hasattr(create_scheduler_fn, "step") and hasattr(create_scheduler_fn, "optimizer")
    if looks_like_scheduler or not callable(create_scheduler_fn):
        raise ConfigurationError(
            "create_scheduler_fn must be a factory that takes the optimizer and returns a scheduler, "
            f"got {type(create_scheduler_fn).__name__} instance. Pass e.g. "
            "functools.partial(torch.optim.lr_scheduler.StepLR, step_size=10): the trainer creates the "
            "scheduler once it has prepared the optimizer."
        )


def needs_mixin(argument: str, mixin: str, trainer_cls: type) -> ConfigurationError:
    return ConfigurationError(
        f"{argument} needs {mixin}, which {trainer_cls.__name__} does not include: use DefaultTrainer "
        f"or add {mixin} to the bases of {trainer_cls.__name__}"
    )
