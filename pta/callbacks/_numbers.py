"""Metric values as plain Python numbers."""

from __future__ import annotations

import numbers

import torch


def as_number(value: object) -> float | int | None:
    """``value`` as a Python number (one-element tensors and NumPy scalars included), else ``None``."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, torch.Tensor):
        return as_number(value.item()) if value.numel() == 1 else None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None
