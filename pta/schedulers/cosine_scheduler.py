"""Cosine annealing with linear warmup, a cooldown and k-decay (pytorch-accelerated's ``CosineLrScheduler``).

Adapted from pytorch-accelerated (Copyright 2022 Chris Hughes), itself adapted from timm's ``cosine_lr.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar

from torch.optim import Optimizer
from typing_extensions import Self, override

from pta.placeholders import TrainerPlaceholderValues
from pta.schedulers.scheduler_base import (
    SchedulerSettingError,
    StatefulSchedulerBase,
    check_base_values,
    check_non_negative_number,
    check_positive_int,
    check_ratio,
)


class CosineLrScheduler(StatefulSchedulerBase):
    """Cosine annealing without restarts (https://arxiv.org/abs/1608.03983), with warmup, cooldown and k-decay.

    Over ``T = total_num_epochs * num_update_steps_per_epoch`` updates, with ``W`` warmup and ``C`` cooldown
    updates (epochs times updates per epoch, rounded):

    - warmup, updates ``0 .. W-1``: linear from the warmup starting lr to the group's lr, which the last
      warmup update uses exactly (a single warmup update uses the group's lr);
    - decay, the next ``T - W - C`` updates: cosine from the group's lr down to its minimum, which the
      last decay update uses exactly; ``k_decay`` (https://arxiv.org/abs/2004.05909) changes the shape
      (higher values keep the lr high for longer);
    - cooldown, the last ``C`` updates, and any update after ``T``: the minimum.

    Each ``step()`` (one per optimizer update) sets the lr of the next update; the first update uses the
    lr set on construction. The lr never rises above the group's lr nor falls below its minimum.

    ``pa_compatible=True`` (or ``CosineLrScheduler.pa_compatible = True`` for every new instance) gives
    pytorch-accelerated's learning rates exactly instead: one update behind (the first update uses the
    group's lr, or ``warmup_starting_lr`` with warmup), warmup ending one step short of the group's lr
    and the decay dropping to the minimum from above it. For migrating runs that must reproduce pa's lrs.
    """

    pa_compatible: ClassVar[bool] = False
    """The default of the ``pa_compatible`` keyword for new instances."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_num_epochs: int,
        num_update_steps_per_epoch: int,
        k_decay: float = 1.0,
        lr_min: float = 1e-6,
        min_lr_ratio: float | None = None,
        num_warmup_epochs: float = 0,
        warmup_starting_lr: float = 1e-6,
        warmup_starting_lr_ratio: float | None = None,
        num_cooldown_epochs: float = 0,
        *,
        pa_compatible: bool | None = None,
    ) -> None:
        """:param optimizer: a PyTorch optimizer with one or more parameter groups
        :param total_num_epochs: the number of training epochs, warmup and cooldown epochs included
        :param num_update_steps_per_epoch: the number of optimizer updates per epoch
        :param k_decay: the k of k-decay (> 0); 1 is plain cosine
        :param lr_min: the lr every group decays to; must not exceed any group's lr
        :param min_lr_ratio: the minimum as a fraction (0..1) of each group's lr; takes precedence over ``lr_min``
        :param num_warmup_epochs: epochs (may be fractional) of linear warmup
        :param warmup_starting_lr: the lr of the first warmup update; must not exceed any group's lr
        :param warmup_starting_lr_ratio: the starting lr as a fraction (0..1) of each group's lr; takes
            precedence over ``warmup_starting_lr``
        :param num_cooldown_epochs: epochs (may be fractional) held at the minimum at the end
        :param pa_compatible: ``True``: pytorch-accelerated's lrs, update for update (see above);
            ``None``: the class attribute ``CosineLrScheduler.pa_compatible`` (``False`` unless set)
        :raises ValueError: for a configuration that cannot produce this schedule; the message names the parameter
        """
        super().__init__(optimizer)
        self._pa = type(self).pa_compatible if pa_compatible is None else bool(pa_compatible)
        epochs = check_positive_int("total_num_epochs", total_num_epochs)
        per_epoch = check_positive_int("num_update_steps_per_epoch", num_update_steps_per_epoch)
        self.total_iterations = epochs * per_epoch
        warmup = check_non_negative_number("num_warmup_epochs", num_warmup_epochs) * per_epoch
        cooldown = check_non_negative_number("num_cooldown_epochs", num_cooldown_epochs) * per_epoch
        # pa keeps fractional update counts as they are; pta schedules whole updates
        self.warmup_iterations: float = warmup if self._pa else round(warmup)
        self.num_cooldown_iterations: float = cooldown if self._pa else round(cooldown)
        self.k_decay = float(k_decay)
        self.lr_min = float(lr_min)
        self.lr_min_ratio = None if min_lr_ratio is None else float(min_lr_ratio)
        self.warmup_lr_init = float(warmup_starting_lr)
        self.warmup_lr_ratio = None if warmup_starting_lr_ratio is None else float(warmup_starting_lr_ratio)
        self._validate()
        if not self._pa:
            self.apply_initial_values()
        elif self.warmup_iterations:  # pa's first update: warmup_starting_lr (even with a ratio), else the group's lr
            self._update_param_groups(self.warmup_lr_init)

    def _validate(self) -> None:
        check_base_values(self)
        if self.total_iterations - self.warmup_iterations - self.num_cooldown_iterations < 1:
            raise SchedulerSettingError(
                f"num_warmup_epochs and num_cooldown_epochs ({self.warmup_iterations} + "
                f"{self.num_cooldown_iterations} updates) must leave at least one update for the cosine decay "
                f"out of total_num_epochs * num_update_steps_per_epoch = {self.total_iterations} updates"
            )
        if not self.k_decay > 0 or not math.isfinite(self.k_decay):
            raise SchedulerSettingError(f"k_decay must be a finite number > 0, got {self.k_decay!r}")
        check_non_negative_number("lr_min", self.lr_min)
        check_non_negative_number("warmup_starting_lr", self.warmup_lr_init)
        if self.lr_min_ratio is not None:
            check_ratio("min_lr_ratio", self.lr_min_ratio)
        if self.warmup_lr_ratio is not None:
            check_ratio("warmup_starting_lr_ratio", self.warmup_lr_ratio)
        for i, (base, minimum, start) in enumerate(
            zip(self.base_lr_values, self._min_values(), self._start_values(), strict=True)
        ):
            if minimum > base:
                raise SchedulerSettingError(
                    f"lr_min={self.lr_min!r} is above the lr of param_groups[{i}] ({base!r}): the schedule would "
                    "rise instead of decay; lower lr_min or use min_lr_ratio"
                )
            if self.warmup_iterations and start > base:
                raise SchedulerSettingError(
                    f"warmup_starting_lr={self.warmup_lr_init!r} is above the lr of param_groups[{i}] ({base!r}): "
                    "warmup would decrease the lr; lower it or use warmup_starting_lr_ratio"
                )

    def _min_values(self) -> list[float]:
        if self.lr_min_ratio is not None:
            return [self.lr_min_ratio * base for base in self.base_lr_values]
        return [self.lr_min for _ in self.base_lr_values]

    def _start_values(self) -> list[float]:
        if self.warmup_lr_ratio is not None:
            return [self.warmup_lr_ratio * base for base in self.base_lr_values]
        return [self.warmup_lr_init for _ in self.base_lr_values]

    @override
    def get_updated_values(self, num_updates: int) -> list[float]:
        """The lr of each group for the update that has ``num_updates`` updates before it (pa-compatible:
        for the update after it)."""
        if self._pa:
            return self._pa_values(num_updates)
        peak = max(self.warmup_iterations - 1, 0)  # the update that uses the group's lr
        last_decay = self.total_iterations - self.num_cooldown_iterations - 1  # the first update at the minimum
        values: list[float] = []
        for base, minimum, start in zip(self.base_lr_values, self._min_values(), self._start_values(), strict=True):
            if num_updates < peak:
                value = min(max(start + (base - start) * (num_updates / peak), start), base)
            elif num_updates >= last_decay:
                value = minimum
            elif num_updates == peak:
                value = base
            else:
                progress = (num_updates - peak) / (last_decay - peak)
                cosine = minimum + 0.5 * (base - minimum) * (1.0 + math.cos(math.pi * progress**self.k_decay))
                value = min(max(cosine, minimum), base)
            values.append(value)
        return values

    def _pa_values(self, num_updates: int) -> list[float]:
        """pytorch-accelerated 0.1.61's formula, unchanged (including its warmup step computed from
        ``warmup_starting_lr`` even when ``warmup_starting_lr_ratio`` sets the start)."""
        warmup, cooldown = self.warmup_iterations, self.num_cooldown_iterations
        decay_iterations = self.total_iterations - (warmup + cooldown)
        values: list[float] = []
        for base, minimum, start in zip(self.base_lr_values, self._min_values(), self._start_values(), strict=True):
            if num_updates < warmup:
                value = start + num_updates * ((base - self.warmup_lr_init) / warmup)
            elif num_updates < decay_iterations:
                progress = (num_updates - warmup) ** self.k_decay / decay_iterations**self.k_decay
                value = minimum + 0.5 * (base - minimum) * (1 + math.cos(math.pi * progress))
            else:
                value = minimum
            values.append(value)
        return values

    @classmethod
    def create_scheduler_fn(
        cls,
        total_num_epochs: int = TrainerPlaceholderValues.NUM_EPOCHS,
        num_update_steps_per_epoch: int = TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
        k_decay: float = 1.0,
        lr_min: float = 1e-6,
        min_lr_ratio: float | None = None,
        num_warmup_epochs: float = 0,
        warmup_starting_lr: float = 1e-6,
        warmup_starting_lr_ratio: float | None = None,
        num_cooldown_epochs: float = 0,
        *,
        pa_compatible: bool | None = None,
    ) -> partial[Self]:
        """A factory taking the optimizer, for ``train(create_scheduler_fn=...)``::

            trainer.train(
                train_dataset=train_dataset,
                num_epochs=num_epochs,
                per_device_batch_size=batch_size,
                create_scheduler_fn=CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=5),
            )

        ``total_num_epochs`` and ``num_update_steps_per_epoch`` default to placeholders that the trainer
        replaces with the run's values when it creates the scheduler. Other parameters as in ``__init__``.
        """
        return partial(
            cls,
            total_num_epochs=total_num_epochs,
            num_update_steps_per_epoch=num_update_steps_per_epoch,
            lr_min=lr_min,
            min_lr_ratio=min_lr_ratio,
            k_decay=k_decay,
            num_warmup_epochs=num_warmup_epochs,
            warmup_starting_lr=warmup_starting_lr,
            warmup_starting_lr_ratio=warmup_starting_lr_ratio,
            num_cooldown_epochs=num_cooldown_epochs,
            pa_compatible=pa_compatible,
        )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "total_iterations": self.total_iterations,
            "lr_min_ratio": self.lr_min_ratio,
            "lr_min": self.lr_min,
            "warmup_iterations": self.warmup_iterations,
            "warmup_lr_init": self.warmup_lr_init,
            "warmup_lr_ratio": self.warmup_lr_ratio,
            "k_decay": self.k_decay,
            "num_cooldown_iterations": self.num_cooldown_iterations,
            "base_lr_values": list(self.base_lr_values),
            # pytorch-accelerated's meaning, so states load in either library: the index of the last update
            "num_updates": self._num_updates if self._pa else self._num_updates - 1,
        }

    @override
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the schedule and its position, and set the optimizer's lr for the next update.

        States are interchangeable with pytorch-accelerated's ``CosineLrScheduler``: ``num_updates`` is, as
        there, the index of the last update (one less than the updates performed, -1 before the first).
        """
        self.total_iterations = check_positive_int("total_iterations", state_dict["total_iterations"])
        iterations = float if self._pa else int  # pa keeps fractional counts
        self.warmup_iterations = iterations(state_dict["warmup_iterations"])
        self.num_cooldown_iterations = iterations(state_dict["num_cooldown_iterations"])
        self.lr_min_ratio = state_dict["lr_min_ratio"]
        self.lr_min = float(state_dict["lr_min"])
        self.warmup_lr_init = float(state_dict["warmup_lr_init"])
        self.warmup_lr_ratio = state_dict["warmup_lr_ratio"]
        self.k_decay = float(state_dict["k_decay"])
        self._restore_base_values(state_dict.get("base_lr_values"))
        self._validate()
        num_updates = state_dict["num_updates"]  # the index of the last update, -1 before the first
        if isinstance(num_updates, bool) or not isinstance(num_updates, int) or num_updates < -1:
            raise SchedulerSettingError(f"num_updates must be an integer >= -1 (the index of the last update), got {num_updates!r}")
        if not self._pa:
            self._restore_position(num_updates + 1)
        elif num_updates >= 0:  # pa's count: the next update uses get_updated_values(num_updates)
            self._restore_position(num_updates)
        else:
            self._num_updates = -1
            self._update_param_groups(self.warmup_lr_init if self.warmup_iterations else self.base_lr_values)
