"""Running loss sums kept on the device, so recording a loss never waits for the device."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import Tensor


class LossMeter:
    """Sum of ``loss * weight`` (on the loss's device) and the Python sum of weights."""

    __slots__ = ("total", "count")

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.count = 0

    def reset(self) -> None:
        self.total = None
        self.count = 0

    def add(self, loss: Tensor, weight: int) -> None:
        value = loss.detach()
        if value.ndim:
            value = value.mean()
        if self.total is None:
            # float64 keeps long epochs exact enough and cannot overflow (MPS has no float64).
            dtype = torch.float32 if value.device.type == "mps" else torch.float64
            self.total = value.to(dtype) * weight
        else:
            self.total.add_(value, alpha=weight)
        self.count += weight


def running_loss(trainer: object, phase: Literal["train", "eval"]) -> LossMeter | None:
    """The running loss sum a pta trainer keeps for ``phase`` (``None`` for other trainers); callbacks
    read it instead of adding each loss to a sum of their own."""
    meter = getattr(trainer, f"_{phase}_loss", None)
    return meter if isinstance(meter, LossMeter) else None


def infer_batch_size(batch: Any) -> int:
    """The leading dimension of the first tensor found in ``batch`` (tensors, sequences, mappings)."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    # batches are untyped by nature: pyright sees the containers' items as unknown
    values: Iterable[Any] = (  # pyright: ignore[reportUnknownVariableType]
        batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ())
    for value in values:  # pyright: ignore[reportUnknownVariableType]
        try:
            return infer_batch_size(value)
        except ValueError:
            continue
    raise ValueError(
        "could not infer the batch size: return 'batch_size' from calculate_train_batch_loss / "
        "calculate_eval_batch_loss when batches hold no tensors"
    )
