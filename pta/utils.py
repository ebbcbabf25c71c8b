"""Small helpers shared by the trainer and user code."""

from __future__ import annotations

import random

import torch


def worker_init_fn(worker_id: int) -> None:
    """Seed Python's and NumPy's RNGs in a dataloader worker from torch's per-worker seed.

    torch seeds each worker differently and reproducibly (from the loader's generator), but leaves
    ``random`` and NumPy with the parent's state, so augmentations would repeat across workers.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:  # NumPy is optional
        return
    np.random.seed(seed)


def remove_padding(padded_tensor: torch.Tensor, pad_value: float) -> torch.Tensor:
    """Drop trailing rows (along dim 0) whose every element equals ``pad_value``.

    Only trailing rows are dropped, so a genuine row that happens to equal ``pad_value`` in the middle
    is kept. Prefer ``trainer.gather``, which trims padding by the real sizes and needs no pad value.
    """
    if padded_tensor.ndim == 0 or padded_tensor.shape[0] == 0:
        return padded_tensor
    flat = padded_tensor.reshape(padded_tensor.shape[0], -1)
    is_pad = (flat == pad_value).all(dim=1)
    keep = int(is_pad.logical_not().nonzero().max().item()) + 1 if bool(is_pad.logical_not().any()) else 0
    return padded_tensor[:keep]
