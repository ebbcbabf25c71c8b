"""Checks of ``train()`` / ``evaluate()`` arguments, run before any training work starts."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sized
from typing import Any, TypeGuard, cast

import torch
from torch import Tensor, nn
from torch.nn import functional
from torch.utils.data import DataLoader, IterableDataset

from pta._types import BatchOutput
from pta._unwrap import unwrap_optimizer


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


def check_seed(seed: object) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ConfigurationError(f"seed must be an integer or None, got {seed!r} ({type(seed).__name__}): "
                                 "pass e.g. seed=42 to the trainer")


def check_optimizer_parameters(model: object, loss_func: object, optimizer: object) -> None:
    """Every parameter the optimizer updates belongs to the model (or to a loss module): an optimizer
    built over another model's parameters would train nothing the run uses. Test doubles (a ``Mock``
    model or optimizer, as in pytorch-accelerated's tests) have no parameters to compare: not checked."""
    if not isinstance(model, nn.Module) or not isinstance(optimizer, torch.optim.Optimizer):
        return
    if unwrap_optimizer(optimizer) is not optimizer:
        return  # prepared by an earlier run together with the model (FSDP/DeepSpeed hold flattened copies)
    own = {id(p) for p in model.parameters()}
    if isinstance(loss_func, nn.Module):
        own |= {id(p) for p in loss_func.parameters()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    foreign = sum(id(p) not in own for p in params)
    if foreign:
        raise ConfigurationError(
            f"the optimizer updates {foreign} of its {len(params)} parameter tensors that are not the model's "
            f"(nor the loss_func's){': the model would never change' if foreign == len(params) else ''}. "
            "Create the optimizer from the parameters of the model you pass to the trainer, e.g. "
            "torch.optim.AdamW(model.parameters()), after creating (or re-creating) that model."
        )


def check_mixed_precision(trainer: Any) -> None:
    acc = trainer._accelerator
    if acc.mixed_precision == "fp16" and acc.device.type == "cpu" and acc.scaler is None:
        raise ConfigurationError(
            "mixed_precision='fp16' needs a GPU: on the CPU Accelerate ignores it and every tensor stays "
            "float32. Use mixed_precision='bf16' (autocast runs on CPUs) or mixed_precision='no'."
        )


# Losses that compare outputs and targets element by element and broadcast differing shapes (torch only warns).
_ELEMENTWISE_LOSSES: tuple[type[nn.Module], ...] = (
    nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss, nn.BCEWithLogitsLoss, nn.SoftMarginLoss,
)
# By identity (ids of module-level functions are stable; a user's loss object need not be hashable).
_ELEMENTWISE_FUNCTION_IDS: frozenset[int] = frozenset(map(id, (
    functional.mse_loss, functional.l1_loss, functional.smooth_l1_loss, functional.huber_loss,
    functional.binary_cross_entropy, functional.binary_cross_entropy_with_logits, functional.soft_margin_loss,
)))


SHAPE_AGNOSTIC_LOSS_TYPES: set[type] = set()
"""Module classes ``check_loss_shapes`` found not elementwise (a class property): the loop skips the
call for them, which is most of a step's loss check (e.g. ``nn.CrossEntropyLoss``)."""


def check_loss_shapes(loss_func: object, outputs: object, targets: object) -> None:
    """Refuse what an elementwise loss would broadcast (e.g. outputs (8, 1) with targets (8,) -> (8, 8))."""
    if not (isinstance(loss_func, _ELEMENTWISE_LOSSES) or id(loss_func) in _ELEMENTWISE_FUNCTION_IDS):
        if isinstance(loss_func, nn.Module):
            SHAPE_AGNOSTIC_LOSS_TYPES.add(type(loss_func))
        return  # the common case first: comparing shapes costs two tensor calls a step
    if isinstance(outputs, torch.Tensor) and isinstance(targets, torch.Tensor) and outputs.shape != targets.shape:
        name = getattr(loss_func, "__name__", type(loss_func).__name__)
        raise ConfigurationError(
            f"loss_func {name} got model outputs of shape {tuple(outputs.shape)} and targets of shape "
            f"{tuple(targets.shape)}: it would broadcast them and compute a wrong loss. Make the shapes equal "
            "(e.g. targets of shape (N, 1) for outputs (N, 1), or outputs.squeeze(-1)), or override "
            "calculate_train_batch_loss / calculate_eval_batch_loss."
        )


def _is_mapping(value: object) -> TypeGuard[Mapping[object, object]]:
    return isinstance(value, Mapping)


def check_batch_output(hook_name: str, result: object) -> BatchOutput:
    """``result`` of a batch-loss hook, checked to be a ``BatchOutput`` with a loss tensor (the loop
    tests the common case, a dict with a loss tensor, itself)."""
    if not _is_mapping(result) or "loss" not in result:
        keys = sorted(str(key) for key in result) if _is_mapping(result) else None
        raise TypeError(f"{hook_name} must return a dict with a 'loss' tensor (a BatchOutput), "
                        f"got {type(result).__name__}" + (f" with keys {keys}" if keys is not None else ""))
    batch_output = cast(BatchOutput, result)
    check_loss_value(hook_name, batch_output["loss"])
    return batch_output


def check_loss_value(hook_name: str, loss: object) -> None:
    if not isinstance(loss, torch.Tensor):
        raise ConfigurationError(
            f"{hook_name} returned a 'loss' of type {type(loss).__name__}; it must be a tensor that autograd "
            "can back-propagate: return loss_func's tensor (not loss.item() or a Python number), and make a "
            "custom loss_func return a torch.Tensor"
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
    train_dl_kwargs: Mapping[str, Any] = arguments["train_dataloader_kwargs"] or {}
    if isinstance(arguments["train_dataset"], IterableDataset) and train_dl_kwargs.get("shuffle"):
        raise ConfigurationError("train_dataloader_kwargs has shuffle=True, but train_dataset is an IterableDataset, "
                                 "which yields samples in its own order: drop shuffle (shuffle inside the dataset)")
    if arguments["eval_dataset"] is not None:
        check_dataset("eval_dataset", arguments["eval_dataset"])
    if trainer.optimizer is None:
        raise ConfigurationError("train() needs an optimizer: pass optimizer= to the trainer")
    check_seed(trainer.seed)
    check_positive_int("agreement_interval", trainer.agreement_interval, allow_none=True)
    check_optimizer_parameters(trainer.model, trainer.loss_func, trainer.optimizer)
    check_mixed_precision(trainer)
    if arguments["gradient_accumulation_steps"] != 1 and not getattr(trainer, "accumulates_gradients", False):
        raise needs_mixin("gradient_accumulation_steps other than 1", "GradAccumMixin", type(cast(object, trainer)))
    if arguments["create_scheduler_fn"] is not None and not getattr(trainer, "supports_schedulers", False):
        raise needs_mixin("create_scheduler_fn", "SchedulerMixin", type(cast(object, trainer)))
