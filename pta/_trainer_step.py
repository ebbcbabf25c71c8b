"""One training step of ``TrainerBase``'s loop: through its hooks, or in one frame where each is pta's default.

``TrainerStep`` sits between ``TrainerCheckpoints`` and ``TrainerBase`` (the loop, pta.base), which
calls ``_default_update`` when the epoch's ``StepPlan`` allows it and ``_hooked_step`` otherwise.
Mixins and users subclass ``TrainerBase``, never this class directly.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pta import _validation as check
from pta._data import inputs_and_targets
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
        (``StepPlan.default_update``): their code in one frame, without the calls between them, which
        measurably slowed small models' steps (docs/performance.md). Where the common case does not hold
        (a collated ``[inputs, targets]`` list, a loss function of a kind already checked, an optimizer
        the adapter may call directly), it calls the helpers the hooks call, with their errors."""
        # calculate_train_batch_loss's default, written out. `items` is `batch` unnarrowed: pyright would
        # narrow `batch` to list[Unknown] after the `type(batch) is list` test.
        items: Any = batch
        yb: Tensor
        pair: Any = items if type(batch) is list and len(items) == 2 and isinstance(items[1], Tensor) else (
            inputs_and_targets(batch))
        xb, yb = pair
        outputs = self.model(xb)
        loss_func: Any = self.loss_func
        value: Any = loss_func(outputs, yb) if type(loss_func) in check.SHAPE_AGNOSTIC_LOSS_TYPES else (
            self._loss(outputs, yb))  # checked below: a loss_func may return anything
        size: int = yb.shape[0]
        batch_output: BatchOutput = {"loss": value, "model_outputs": outputs, "batch_size": size}
        if not isinstance(value, Tensor):  # the error _batch_loss gives
            check.check_batch_output("calculate_train_batch_loss", batch_output)
        loss: Tensor = value
        self._train_loss.add(loss, size)
        optimizer, accelerator = self.optimizer, self._accelerator
        direct = accelerator.direct_update
        if direct is not None and optimizer is direct[0] and accelerator.gradient_state.sync_gradients:
            # backward_step, optimizer_step and optimizer_zero_grad's calls (AcceleratorAdapter); torch's
            # Tensor.backward is unannotated (torch.autograd.backward would hide it from __torch_function__)
            loss.backward()  # type: ignore[no-untyped-call]  # pyright: ignore[reportUnknownMemberType]
            direct[1].step()
            optimizer._opt_called = True  # type: ignore[attr-defined]  # torch.optim.lr_scheduler's marker
            direct[1].zero_grad(set_to_none=True)
        else:
            assert optimizer is not None
            accelerator.update(loss, optimizer)
        return batch_output
