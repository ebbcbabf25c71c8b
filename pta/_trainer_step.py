"""One training step of ``TrainerBase``'s loop: through its hooks, or in one frame where each is pta's default.

``TrainerStep`` sits between ``TrainerCheckpoints`` and ``TrainerBase`` (the loop, pta.base), which
calls ``_default_update`` when the epoch's ``StepPlan`` allows it and ``_hooked_step`` otherwise.
Mixins and users subclass ``TrainerBase``, never this class directly.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pta import _validation as check
from pta._step_plan import StepPlan
from pta._trainer_checkpoints import TrainerCheckpoints
from pta._types import BatchOutput, BatchT


class TrainerStep(TrainerCheckpoints[BatchT]):
    """A training step's hooks in the order docs/loop.md gives, and the same step without their layers."""

    def _hooked_step(self, plan: StepPlan, step: int, num_batches: int | None, batch: Any) -> tuple[BatchOutput, bool]:
        """One step through the hooks ``plan`` keeps; returns the batch output and whether the optimizer stepped."""
        is_update = self.is_update_step(step, num_batches) if plan.is_update_step else True
        if plan.train_step_context:
            with self.train_step_context(is_update):
                batch_output = self._forward_backward(batch)
        else:
            batch_output = self._forward_backward(batch)
        if is_update:
            if plan.before_optimizer_step:
                self.before_optimizer_step()
            self.optimizer_step()
            skipped = plan.optimizer_step_was_skipped and self.optimizer_step_was_skipped()
            if plan.scheduler_step and not skipped:
                self.scheduler_step()
            self.optimizer_zero_grad()
        return batch_output, is_update

    def _forward_backward(self, batch: Any) -> BatchOutput:
        batch_output, loss, size = self._batch_loss(self.calculate_train_batch_loss, batch)
        self._train_loss.add(loss, size)
        self.backward_step(self.scale_loss(loss, batch_output, size) if self._step_plan.scale_loss else loss)
        return batch_output

    def _default_update(self, batch: Any) -> BatchOutput:
        """``_hooked_step`` where the plan skips every hook it may skip and the others are pta's defaults
        (``StepPlan.default_update``): the same calls without the hooks' frames between them, which
        measurably slowed small models' steps (docs/performance.md)."""
        batch_output = self.calculate_train_batch_loss(batch)
        loss: Any = batch_output["loss"]  # checked: a loss_func may return anything
        if not isinstance(loss, Tensor):  # the error _batch_loss gives
            check.check_batch_output("calculate_train_batch_loss", batch_output)
        size: Any = batch_output.get("batch_size")  # the default's yb.shape[0], an int
        self._train_loss.add(loss, size)
        assert self.optimizer is not None
        self._accelerator.update(loss, self.optimizer)
        return batch_output
