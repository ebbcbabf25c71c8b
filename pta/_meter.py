"""Running loss sums kept on the device, so recording a loss never waits for the device."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import Tensor


class LossMeter:
    """Sum of ``loss * weight`` (on the loss's device) and the Python sum of weights.

    ``add`` only keeps the loss's values (no autograd graph): a per-step in-place add costs a few
    microseconds of dispatch and type promotion, so losses of one weight (batch size) are summed in
    blocks of up to ``BLOCK`` steps (one ``stack`` and one sum), and whenever ``total`` is read. A loss
    of another weight than the block's (an epoch's last batch, or weights that change every step) is
    added at once, as before.
    """

    __slots__ = ("_total", "count", "_pending", "_weight")
    BLOCK = 64

    def __init__(self) -> None:
        self._total: Tensor | None = None
        self.count = 0
        self._pending: list[Tensor] = []
        self._weight = 0

    def reset(self) -> None:
        self.total = None
        self.count = 0

    def add(self, loss: Tensor, weight: int) -> None:
        # ``.data``, not ``.detach()``: the same values without autograd, and a third cheaper; the values
        # are only read (summed), so the version counter that detach() shares is not needed.
        value = loss.data
        if value.ndim:
            value = value.mean()
        if not self._pending:
            self._weight = weight
        if weight == self._weight:
            self._pending.append(value)
            if len(self._pending) == self.BLOCK:
                self._flush()
        else:
            self._add(value, weight)
        self.count += weight

    @property
    def total(self) -> Tensor | None:
        """The sum so far (float64, float32 on MPS, which has no float64), ``None`` before the first loss."""
        self._flush()
        return self._total

    @total.setter
    def total(self, value: Tensor | None) -> None:
        self._pending.clear()
        self._total = value

    def _flush(self) -> None:
        if self._pending:
            self._add(torch.stack(self._pending).sum(dtype=_sum_dtype(self._pending[0])), self._weight)
            self._pending.clear()

    def _add(self, value: Tensor, weight: int) -> None:
        if self._total is None:
            self._total = value.to(_sum_dtype(value)) * weight
        else:
            self._total.add_(value, alpha=weight)


def _sum_dtype(value: Tensor) -> torch.dtype:
    # float64 keeps long epochs exact enough and cannot overflow (MPS has no float64).
    return torch.float32 if value.device.type == "mps" else torch.float64


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
