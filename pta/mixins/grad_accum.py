"""GradAccumMixin: exact gradient accumulation."""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor
from typing_extensions import override

from pta._types import BatchOutput, BatchT
from pta.base import TrainerBase


class GradAccumMixin(TrainerBase[BatchT]):
    """Accumulates ``gradient_accumulation_steps`` micro-batches into one optimizer update.

    Needs: nothing (with ``DevicePlacementMixin`` under DDP it skips the gradient all-reduce between updates).
    Provides: update steps at window ends and at the epoch's last batch; ``no_sync`` on the other steps;
        each micro-batch loss weighted by its share of the window's samples (or of its
        ``num_items_in_batch``), so k micro-batches of size b give the update of one batch of k*b and a
        last, shorter window is weighted by its real size. Clipping stays once per update (the base's
        ``before_optimizer_step`` runs after the window is complete).
    Overrides: ``training_run_start``, ``is_update_step``, ``train_step_context``, ``scale_loss``,
        ``before_optimizer_step``, ``training_state_dict``, ``load_training_state_dict`` (a state saved
        inside a window keeps the window's gradients, so the resumed update is the same).
    State: ``_window_weight`` (real weight seen in the window so far) and ``_window_divisor`` (what the
        window's losses were divided by); created in ``training_run_start``.
    """

    accumulates_gradients: ClassVar[Literal[True]] = True

    @override
    def training_run_start(self) -> None:
        super().training_run_start()
        self._window_weight = 0.0
        self._window_divisor = 1.0

    @override
    def is_update_step(self, step: int, num_batches: int | None) -> bool:
        base = super().is_update_step(step, num_batches)
        k = self.run_config.gradient_accumulation_steps
        return base and ((step + 1) % k == 0 or (num_batches is not None and step + 1 == num_batches))

    @override
    def train_step_context(self, is_update_step: bool) -> AbstractContextManager[None]:
        outer = super().train_step_context(is_update_step)
        if is_update_step:
            return outer
        stack = ExitStack()
        stack.enter_context(outer)
        stack.enter_context(self._accelerator.no_sync(self.model))
        return stack  # type: ignore[return-value]  # ExitStack.__enter__ returns the stack, not None; nobody binds it

    @override
    def scale_loss(self, loss: Tensor, batch_output: BatchOutput, batch_size: int) -> Tensor:
        loss = super().scale_loss(loss, batch_output, batch_size)
        k = self.run_config.gradient_accumulation_steps
        if k == 1:
            return loss
        items = batch_output.get("num_items_in_batch")
        weight = float(items if items is not None else batch_size)
        if self._window_weight == 0.0:
            # Scale as if all k micro-batches weighed like the first; before_optimizer_step corrects
            # the gradients when the window's real total differs (a shorter last window or batch).
            # A micro-batch without items (all padding) adds nothing; any positive divisor will do.
            self._window_divisor = k * weight if weight > 0 else float(k)
        self._window_weight += weight
        return loss * (weight / self._window_divisor)

    @override
    def before_optimizer_step(self) -> None:
        if self.run_config.gradient_accumulation_steps > 1:
            # A window without any item has only zero gradients: leave them as they are.
            factor = self._window_divisor / self._window_weight if self._window_weight > 0 else 1.0
            self._window_weight = 0.0
            if factor != 1.0:
                grads = [p.grad for p in self.model.parameters() if p.grad is not None]
                if grads:
                    torch._foreach_mul_(grads, factor)  # pyright: ignore[reportPrivateImportUsage]  # torch's public fused op
        super().before_optimizer_step()

    @override
    def training_state_dict(self) -> dict[str, Any]:
        state = super().training_state_dict()
        mid_window = self._window_weight > 0
        state["grad_accum"] = {
            "weight": self._window_weight,
            "divisor": self._window_divisor,
            "grads": [p.grad.detach().clone() if p.grad is not None else None for p in self.model.parameters()]
            if mid_window else None,
        }
        return state

    @override
    def load_training_state_dict(self, state: dict[str, Any]) -> None:
        super().load_training_state_dict(state)
        window = state["grad_accum"]
        self._window_weight, self._window_divisor = window["weight"], window["divisor"]
        if window["grads"] is not None:
            for param, grad in zip(self.model.parameters(), window["grads"], strict=True):
                param.grad = None if grad is None else grad.to(param.device)
