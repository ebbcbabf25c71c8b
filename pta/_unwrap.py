"""Helpers that look inside objects Accelerate prepared, by attribute, without importing Accelerate
(``pta._validation`` needs them, and ``pta._accelerate`` imports ``pta._validation``)."""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer
from torch.utils.data import DataLoader


def set_even_batches(dataloader: DataLoader[Any], even_batches: bool) -> None:
    """Switch a prepared dataloader between padded (even) and exact (uneven) sharding across processes."""
    batch_sampler = getattr(dataloader, "batch_sampler", None)
    if batch_sampler is not None and hasattr(batch_sampler, "even_batches"):
        batch_sampler.even_batches = even_batches


def unwrap_optimizer(optimizer: Optimizer) -> Optimizer:
    """The user's optimizer inside Accelerate's ``AcceleratedOptimizer`` wrapper(s)."""
    while isinstance(inner := getattr(optimizer, "optimizer", None), Optimizer):
        optimizer = inner
    return optimizer
