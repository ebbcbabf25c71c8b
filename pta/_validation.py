"""Checks of ``train()`` / ``evaluate()`` arguments, run before any training work starts."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any, cast

from torch import Tensor
from torch.utils.data import DataLoader


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
    if isinstance(dataset, DataLoader):
        raise ConfigurationError(
            f"{name} must be a dataset, got a DataLoader: pass its dataset, and its options as "
            "train_dataloader_kwargs / eval_dataloader_kwargs (the trainer builds the loaders)")
    if isinstance(dataset, Tensor):
        raise ConfigurationError(
            f"{name} must be a dataset, got a tensor: wrap it, e.g. TensorDataset(inputs, targets)")
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


def check_train_arguments(trainer: Any, arguments: dict[str, Any]) -> None:
    """Every check of ``train()``'s arguments, before any work; ``arguments`` are train()'s locals."""
    check_dataset("train_dataset", arguments["train_dataset"])
    check_epochs(arguments["num_epochs"], arguments["max_num_train_steps"])
    check_positive_int("per_device_batch_size", arguments["per_device_batch_size"])
    check_positive_int("gradient_accumulation_steps", arguments["gradient_accumulation_steps"])
    check_positive_float("gradient_clip_value", arguments["gradient_clip_value"])
    check_positive_float("gradient_clip_norm", arguments["gradient_clip_norm"])
    check_scheduler_factory(arguments["create_scheduler_fn"])
    if arguments["eval_dataset"] is not None:
        check_dataset("eval_dataset", arguments["eval_dataset"])
    if trainer.optimizer is None:
        raise ConfigurationError("train() needs an optimizer: pass optimizer= to the trainer")
    if arguments["gradient_accumulation_steps"] != 1 and not getattr(trainer, "accumulates_gradients", False):
        raise needs_mixin("gradient_accumulation_steps other than 1", "GradAccumMixin", type(cast(object, trainer)))
    if arguments["create_scheduler_fn"] is not None and not getattr(trainer, "supports_schedulers", False):
        raise needs_mixin("create_scheduler_fn", "SchedulerMixin", type(cast(object, trainer)))
