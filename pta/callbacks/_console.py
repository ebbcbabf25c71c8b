"""What the console callbacks print: the start line, compact metric values and durations."""

from __future__ import annotations

from collections.abc import Mapping, Sized
from typing import Any

import torch
from torch import nn

from pta.callbacks._numbers import as_number
from pta.protocols import TrainerLike


def format_value(value: object) -> str:
    """A metric value at about 4 significant digits (``0.1002``, ``1.235e-05``); non-numbers as ``str``."""
    number = as_number(value)
    if number is None:
        return str(value)
    if isinstance(number, int):
        return str(number)
    return f"{number:#.4g}".rstrip(".")  # "#": keep trailing zeros (0.1550), so columns line up


def format_metrics(metrics: Mapping[str, object]) -> str:
    return "  ".join(f"{name} {format_value(value)}" for name, value in metrics.items())


def format_duration(seconds: float) -> str:
    """``0.84s``, ``12.3s``, ``3m05s``, ``2h07m``."""
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_count(number: float) -> str:
    """``812``, ``12,345``; rates below 100 keep one decimal."""
    return f"{number:,.1f}" if number < 100 else f"{number:,.0f}"


def parameter_counts(trainer: TrainerLike) -> tuple[int, int]:
    """(trainable, frozen) parameter counts of the user's model, each tensor counted once."""
    trainable = frozen = 0
    seen: set[int] = set()
    model: object = trainer.get_model()
    if not isinstance(model, nn.Module):  # a test double (pytorch-accelerated's tests use Mock models)
        return trainable, frozen
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        if parameter.requires_grad:
            trainable += parameter.numel()
        else:
            frozen += parameter.numel()
    return trainable, frozen


def start_line(trainer: TrainerLike, *, training: bool) -> str:
    """One line saying what the run is: processes, device, precision, batches, steps, parameters."""
    config = trainer.run_config
    trainable, frozen = parameter_counts(trainer)
    loader: object = trainer.train_dataloader if training else trainer.eval_dataloader
    steps = len(loader) if isinstance(loader, Sized) else None
    steps_text = f"{steps:,}" if steps is not None else "?"
    parts = [f"world size {config.num_processes}", f"device {torch.device(trainer.device).type}",
             f"precision {config.mixed_precision}"]
    if training:
        batch = config.train_per_device_batch_size
        parts += [
            f"accumulation {config.gradient_accumulation_steps}",
            f"batch {batch}/process ({config.train_total_batch_size} per update)" if batch else "batch ?",
            f"{steps_text} steps/epoch ({config.num_update_steps_per_epoch:,} updates)",
            f"{config.num_epochs} epoch{'s' if config.num_epochs != 1 else ''}",
        ]
        if config.max_num_train_steps is not None:
            parts.append(f"max {config.max_num_train_steps:,} updates")
    else:
        parts += [f"batch {config.eval_per_device_batch_size}/process", f"{steps_text} steps"]
    parts.append(f"parameters {trainable:,} trainable, {frozen:,} frozen")
    return ("Starting training run: " if training else "Starting evaluation run: ") + ", ".join(parts)


def dataset_length(loader: object) -> int | None:
    dataset: Any = getattr(loader, "dataset", None)
    return len(dataset) if isinstance(dataset, Sized) else None
