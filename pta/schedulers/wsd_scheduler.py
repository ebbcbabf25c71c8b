"""Warmup-Stable-Decay learning rates with decayed checkpoints (pytorch-accelerated's ``WSDLrScheduler``)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar, TypedDict, cast

from torch.optim import Optimizer
from typing_extensions import Self, override

from pta.placeholders import TrainerPlaceholderValues
from pta.schedulers.scheduler_base import (
    SchedulerSettingError,
    StatefulSchedulerBase,
    check_base_values,
    check_non_negative_int,
    check_non_negative_number,
    check_positive_int,
    check_ratio,
)

MAX_MULTI_CHECKPOINT_DECAY_RATIO = 1 / 3


class DecayPeriodInfo(TypedDict):
    """One checkpoint period, in updates: the decay runs from ``pre_decay_step`` to ``period_end``."""

    period_start: int
    period_end: int
    decay_steps: int
    pre_decay_step: int


class WSDLrScheduler(StatefulSchedulerBase):
    """The simplified Warmup-Stable-Decay schedule of https://arxiv.org/abs/2410.05192.

    Phases, in optimizer updates (``n`` = updates before the one being scheduled):

    1. warmup, ``n < num_warmup_steps``: linear from ``warmup_starting_lr`` to the group's lr, which the
       last warmup update uses exactly;
    2. stable: the group's lr;
    3. decay before each checkpoint: the last ``decay_steps = max(1, int(period * decay_phase_ratio))``
       updates of each checkpoint period (none when ``decay_phase_ratio == 0``) go down to
       ``lr_min * lr``, which the period's last update uses exactly. After a checkpoint that is not the
       last, the lr returns to the stable value (the decayed model is a side branch, see the paper).

    Checkpoints are spaced geometrically and the last one is ``total_steps``
    (:func:`estimate_checkpoint_steps`): 2 checkpoints for 100K steps give ``[50K, 100K]``, 3 for 200K give
    ``[50K, 100K, 200K]``, 4 for 200K give ``[25K, 50K, 100K, 200K]``. After ``total_steps`` the lr stays at
    its final value.

    Decay shapes, for ``t`` going from ``1/decay_steps`` to 1 over the decay:

    - ``use_inverse_sqrt_decay=True`` (default): ``lr_min + (1 - lr_min) * (1 - sqrt(t))``;
    - ``False``, the paper's inverse-proportional decay: ``1 / (t / lr_min + (1 - t))`` (needs ``lr_min > 0``).

    Continuation (``is_continuation_from_checkpoint=True``): loading the state of a previous run (e.g. a
    pre-decay checkpoint) starts a new segment of this scheduler's ``total_steps`` updates with the previous
    run's other settings (decay ratio, checkpoints, ``lr_min``, decay shape) and base lrs, as
    pytorch-accelerated does: no warmup, a fresh stable phase, decay at the end of the new segment.
    Loading a state saved by a continuation scheduler of the same ``total_steps`` resumes it exactly instead.

    ``pa_compatible=True`` (or ``WSDLrScheduler.pa_compatible = True`` for every new instance) gives
    pytorch-accelerated's learning rates exactly instead: one update behind, its checkpoint steps (the
    first at ``total_steps // 4``, fewer than ``num_checkpoints`` when they reach ``total_steps``), its
    decay lengths (``int(period * decay_phase_ratio)``, so the decay ends one step above ``lr_min``) and,
    after the last checkpoint, its restart of the first period's schedule.
    """

    pa_compatible: ClassVar[bool] = False
    """The default of the ``pa_compatible`` keyword for new instances."""

    def __init__(
        self,
        optimizer: Optimizer,
        num_epochs: int | None = None,
        num_update_steps_per_epoch: int | None = None,
        total_steps: int | None = None,
        num_warmup_steps: int | None = 0,
        decay_phase_ratio: float = 0.1,
        lr_min: float = 1e-6,
        warmup_starting_lr: float = 1e-6,
        use_inverse_sqrt_decay: bool = True,
        num_checkpoints: int = 1,
        is_continuation_from_checkpoint: bool = False,
        *,
        pa_compatible: bool | None = None,
    ) -> None:
        """:param optimizer: a PyTorch optimizer
        :param num_epochs: the number of training epochs (with ``num_update_steps_per_epoch``)
        :param num_update_steps_per_epoch: the optimizer updates per epoch on each process
        :param total_steps: the number of updates per process, instead of the two above
        :param num_warmup_steps: warmup updates; ``None`` means 1% of ``total_steps``
        :param decay_phase_ratio: the fraction (0..1) of each checkpoint period spent decaying; at most 1/3
            with several checkpoints
        :param lr_min: the final lr as a fraction (0..1) of each group's lr: 0.1 decays to 10% of it
        :param warmup_starting_lr: the lr of the first warmup update; must not exceed any group's lr
        :param use_inverse_sqrt_decay: the sqrt decay (``True``) or the paper's inverse-proportional decay
        :param num_checkpoints: how many decayed checkpoints; needs ``total_steps >= 2 ** (num_checkpoints - 1)``
        :param is_continuation_from_checkpoint: start a new segment when a previous run's state is loaded
        :param pa_compatible: ``True``: pytorch-accelerated's lrs, update for update (see above);
            ``None``: the class attribute ``WSDLrScheduler.pa_compatible`` (``False`` unless set)
        :raises ValueError: for a configuration that cannot produce this schedule; the message names the parameter
        """
        super().__init__(optimizer)
        self._pa = type(self).pa_compatible if pa_compatible is None else bool(pa_compatible)
        self.total_steps = _total_steps(num_epochs, num_update_steps_per_epoch, total_steps)
        self.num_warmup_steps = (
            int(0.01 * self.total_steps) if num_warmup_steps is None
            else check_non_negative_int("num_warmup_steps", num_warmup_steps)
        )
        self.decay_phase_ratio = check_ratio("decay_phase_ratio", decay_phase_ratio)
        self.lr_min = check_ratio("lr_min", lr_min)
        self.warmup_starting_lr = check_non_negative_number("warmup_starting_lr", warmup_starting_lr)
        self.use_inverse_sqrt_decay = bool(use_inverse_sqrt_decay)
        self.num_checkpoints = check_positive_int("num_checkpoints", num_checkpoints)
        self.is_continuation_from_checkpoint = bool(is_continuation_from_checkpoint)
        self._configure()
        if not self._pa:
            self.apply_initial_values()

    def _configure(self) -> None:
        """Validate the settings together and derive the checkpoint periods."""
        check_base_values(self)
        self.checkpoint_steps = (_pa_checkpoint_steps if self._pa else estimate_checkpoint_steps)(
            self.total_steps, self.num_checkpoints)
        if self.num_checkpoints > 1 and self.decay_phase_ratio > MAX_MULTI_CHECKPOINT_DECAY_RATIO:
            raise SchedulerSettingError(
                f"decay_phase_ratio={self.decay_phase_ratio} is too large for {self.num_checkpoints} checkpoints: "
                f"decay phases could overlap; the maximum is {MAX_MULTI_CHECKPOINT_DECAY_RATIO:.2f}"
            )
        if self.lr_min == 0 and not self.use_inverse_sqrt_decay:
            raise SchedulerSettingError("lr_min must be > 0 with use_inverse_sqrt_decay=False (1 / (t / lr_min + 1 - t))")
        self.checkpoint_decay_info = self._calculate_decay_info()
        if self.is_continuation_from_checkpoint or self.num_warmup_steps == 0:
            return
        first_decay = self.checkpoint_decay_info[0]["pre_decay_step"]
        if self.num_warmup_steps > first_decay:  # well defined (warmup, then the rest of the decay), as in pa
            warnings.warn(
                f"num_warmup_steps={self.num_warmup_steps} runs into the first decay phase, which starts after "
                f"{first_decay} updates: the lr warms up to the group's lr, then follows the rest of the decay; "
                "use fewer warmup steps for a full decay", UserWarning, stacklevel=3)
        for i, base in enumerate(self.base_lr_values):
            if self.warmup_starting_lr > base:
                raise SchedulerSettingError(
                    f"warmup_starting_lr={self.warmup_starting_lr!r} is above the lr of param_groups[{i}] "
                    f"({base!r}): warmup would decrease the lr"
                )

    def _calculate_decay_info(self) -> list[DecayPeriodInfo]:
        infos: list[DecayPeriodInfo] = []
        for i, end in enumerate(self.checkpoint_steps):
            start = 0 if i == 0 else self.checkpoint_steps[i - 1]
            decay = int((end - start) * self.decay_phase_ratio)
            if not self._pa and self.decay_phase_ratio > 0:
                decay = max(1, decay)
            infos.append(DecayPeriodInfo(period_start=start, period_end=end, decay_steps=decay,
                                         pre_decay_step=end - decay))
        return infos

    def get_checkpoint_steps(self) -> list[int]:
        """The update counts at which checkpoints are due (the last is ``total_steps``)."""
        return list(self.checkpoint_steps)

    def get_decay_info(self) -> list[DecayPeriodInfo]:
        """For each checkpoint period: its start, end (the checkpoint), decay steps and pre-decay update count."""
        return list(self.checkpoint_decay_info)

    def get_phase_info(self, num_updates: int) -> DecayPeriodInfo:
        """The first period ending at or after ``num_updates`` completed updates (the last one after that)."""
        for info in self.checkpoint_decay_info:
            if info["period_end"] >= num_updates:
                return info
        return self.checkpoint_decay_info[-1]

    def get_current_step(self) -> int:
        """The 0-based index of the most recent update (``num_updates - 1``; -1 before the first).

        Same value as pytorch-accelerated's, so ``get_current_step() + 1`` is the number of completed updates.
        """
        return self._num_updates if self._pa else self._num_updates - 1  # pa's count is one behind

    @property
    def previous_checkpoint_step(self) -> int | None:
        """The 0-based index of the last update before the most recent decay phase this run has reached
        (``pre_decay_step - 1``, pytorch-accelerated's value); ``None`` before the first one (also at the
        start of a continuation segment)."""
        position = self._num_updates + 1 if self._pa else self._num_updates  # pa's count is one behind
        reached = [info["pre_decay_step"] - 1 for info in self.checkpoint_decay_info
                   if info["decay_steps"] and info["pre_decay_step"] <= position]
        return reached[-1] if reached else None

    def get_current_phase_info(self) -> DecayPeriodInfo:
        """The period of the most recent update (the first period before any update)."""
        return self.get_phase_info(self._num_updates)

    def _decay_factor(self, progress: float) -> float:
        if progress >= 1.0:
            return self.lr_min
        if self.use_inverse_sqrt_decay:
            factor = self.lr_min + (1.0 - self.lr_min) * (1.0 - math.sqrt(progress))
        else:
            factor = self.lr_min / (progress + (1.0 - progress) * self.lr_min)
        return min(max(factor, self.lr_min), 1.0)

    @override
    def get_updated_values(self, num_updates: int) -> list[float]:
        """The lr of each group for the update that has ``num_updates`` updates before it (pa-compatible:
        for the update after it)."""
        if self._pa:
            return self._pa_values(num_updates)
        n = min(num_updates, self.total_steps - 1)  # after the last checkpoint: hold the final value
        warmup = 0 if self.is_continuation_from_checkpoint else self.num_warmup_steps
        if n < warmup - 1:
            start = self.warmup_starting_lr
            return [min(max(start + (base - start) * (n / (warmup - 1)), start), base) for base in self.base_lr_values]
        info = self.get_phase_info(n + 1)
        if info["decay_steps"] == 0 or n < info["pre_decay_step"]:
            return list(self.base_lr_values)
        factor = self._decay_factor((n - info["pre_decay_step"] + 1) / info["decay_steps"])
        return [base * factor for base in self.base_lr_values]

    def _pa_values(self, num_updates: int) -> list[float]:
        """pytorch-accelerated 0.1.61's formula, unchanged (after the last checkpoint it finds no period
        and uses the first one's)."""
        if not self.is_continuation_from_checkpoint and num_updates < self.num_warmup_steps:
            start = self.warmup_starting_lr
            return [start + (num_updates / self.num_warmup_steps) * (base - start) for base in self.base_lr_values]
        checkpoints = self.checkpoint_steps
        index = next((i for i, checkpoint in enumerate(checkpoints) if num_updates < checkpoint), 0)
        period_start = 0 if index == 0 else checkpoints[index - 1]
        period_length, into_period = checkpoints[index] - period_start, num_updates - period_start
        decay_steps = int(period_length * self.decay_phase_ratio)
        decay_start = period_length - decay_steps
        if into_period < decay_start:
            return list(self.base_lr_values)
        progress = min((into_period - decay_start) / decay_steps, 1.0) if decay_steps else 1.0  # pa: ZeroDivisionError
        if self.use_inverse_sqrt_decay:
            factor = self.lr_min + (1 - self.lr_min) * (1 - math.sqrt(progress))
        else:
            factor = 1.0 / (progress * (1.0 / self.lr_min) + (1.0 - progress))
        return [base * factor for base in self.base_lr_values]

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "total_steps": self.total_steps,
            "num_warmup_steps": self.num_warmup_steps,
            "decay_phase_ratio": self.decay_phase_ratio,
            "lr_min": self.lr_min,
            "warmup_starting_lr": self.warmup_starting_lr,
            "use_inverse_sqrt_decay": self.use_inverse_sqrt_decay,
            "num_checkpoints": self.num_checkpoints,
            "is_continuation_from_checkpoint": self.is_continuation_from_checkpoint,
            "checkpoint_steps": list(self.checkpoint_steps),
            "base_lr_values": list(self.base_lr_values),
            "num_updates": self._num_updates + 1 if self._pa else self._num_updates,  # updates done, in both modes
        }

    @override
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a saved state and set the optimizer's lr for the next update.

        A continuation scheduler given a previous run's state starts a new segment of its own ``total_steps``
        with the saved run's other settings and base lrs, as in pytorch-accelerated (see the class docstring);
        otherwise the schedule and its position are restored exactly. A state written by pytorch-accelerated
        (without ``num_updates``) restores the schedule and keeps this scheduler's position, as that library does.
        """
        resumes_segment = bool(state_dict.get("is_continuation_from_checkpoint")) and (
            state_dict.get("total_steps") == self.total_steps
        )
        self._restore_base_values(state_dict.get("base_lr_values"))
        self.num_warmup_steps = check_non_negative_int("num_warmup_steps", state_dict["num_warmup_steps"])
        self.decay_phase_ratio = check_ratio("decay_phase_ratio", state_dict["decay_phase_ratio"])
        self.lr_min = check_ratio("lr_min", state_dict["lr_min"])
        self.warmup_starting_lr = check_non_negative_number("warmup_starting_lr", state_dict["warmup_starting_lr"])
        self.use_inverse_sqrt_decay = bool(state_dict["use_inverse_sqrt_decay"])
        self.num_checkpoints = check_positive_int("num_checkpoints", state_dict["num_checkpoints"])
        if self.is_continuation_from_checkpoint and not resumes_segment:
            self._configure()  # this run's total_steps: a new segment
            self._restore_updates_done(0)
            return
        self.total_steps = check_positive_int("total_steps", state_dict["total_steps"])
        self.is_continuation_from_checkpoint = bool(state_dict["is_continuation_from_checkpoint"])
        self._configure()
        # pytorch-accelerated's states carry no position (it never saved its counter): keep this one's, as it does
        done = self._num_updates + 1 if self._pa else self._num_updates
        self._restore_updates_done(state_dict.get("num_updates", done))

    def _restore_updates_done(self, done: object) -> None:
        """Continue after ``done`` optimizer updates, in this scheduler's counting."""
        if not self._pa:
            self._restore_position(done)
        elif check_non_negative_int("num_updates", done) > 0:
            self._restore_position(int(cast(int, done)) - 1)
        else:  # pa's start: the groups' own (base) values, the first step() applies get_updated_values(0)
            self._num_updates = -1
            self._update_param_groups(self.base_lr_values)

    @classmethod
    def create_scheduler_fn(
        cls,
        total_num_epochs: int = TrainerPlaceholderValues.NUM_EPOCHS,
        num_update_steps_per_epoch: int = TrainerPlaceholderValues.PER_PROCESS_NUM_UPDATE_STEPS_PER_EPOCH,
        num_warmup_epochs: int | None = None,
        decay_phase_ratio: float = 0.1,
        lr_min: float = 1e-6,
        warmup_starting_lr: float = 1e-6,
        use_inverse_sqrt_decay: bool = True,
        num_checkpoints: int = 1,
        is_continuation_from_checkpoint: bool = False,
        *,
        pa_compatible: bool | None = None,
    ) -> partial[Self]:
        """A factory taking the optimizer, for ``train(create_scheduler_fn=...)``::

            trainer.train(
                train_dataset=train_dataset,
                num_epochs=num_epochs,
                create_scheduler_fn=WSDLrScheduler.create_scheduler_fn(num_warmup_epochs=1, num_checkpoints=2),
            )

        ``total_num_epochs`` and ``num_update_steps_per_epoch`` default to placeholders that the trainer
        replaces with the run's values. ``num_warmup_epochs`` (an integer) counts epochs of
        ``num_update_steps_per_epoch`` updates; ``None`` means 1% of the updates.
        """
        num_warmup_steps: int | None = None
        if num_warmup_epochs is not None:
            num_warmup_steps = num_update_steps_per_epoch * check_non_negative_int("num_warmup_epochs", num_warmup_epochs)
        return partial(
            cls,
            num_epochs=total_num_epochs,
            num_update_steps_per_epoch=num_update_steps_per_epoch,
            num_warmup_steps=num_warmup_steps,
            decay_phase_ratio=decay_phase_ratio,
            lr_min=lr_min,
            warmup_starting_lr=warmup_starting_lr,
            use_inverse_sqrt_decay=use_inverse_sqrt_decay,
            num_checkpoints=num_checkpoints,
            is_continuation_from_checkpoint=is_continuation_from_checkpoint,
            pa_compatible=pa_compatible,
        )


def _total_steps(num_epochs: int | None, num_update_steps_per_epoch: int | None, total_steps: int | None) -> int:
    if total_steps is not None:
        if num_epochs is not None or num_update_steps_per_epoch is not None:
            raise SchedulerSettingError(
                "pass either total_steps, or num_epochs and num_update_steps_per_epoch, not both "
                f"(got total_steps={total_steps!r}, num_epochs={num_epochs!r}, "
                f"num_update_steps_per_epoch={num_update_steps_per_epoch!r})"
            )
        return check_positive_int("total_steps", total_steps)
    if num_epochs is None or num_update_steps_per_epoch is None:
        raise SchedulerSettingError("WSDLrScheduler needs total_steps, or both num_epochs and num_update_steps_per_epoch")
    return check_positive_int("num_epochs", num_epochs) * check_positive_int(
        "num_update_steps_per_epoch", num_update_steps_per_epoch
    )


def estimate_checkpoint_steps(total_steps: int, num_checkpoints: int = 3) -> list[int]:
    """Checkpoint update counts in a geometric progression that ends at ``total_steps`` (each half the next).

    E.g. ``(100_000, 2) -> [50_000, 100_000]`` and ``(200_000, 4) -> [25_000, 50_000, 100_000, 200_000]``.

    :raises ValueError: when ``total_steps < 2 ** (num_checkpoints - 1)`` (checkpoints would coincide at 0)
    """
    total = check_positive_int("total_steps", total_steps)
    count = check_positive_int("num_checkpoints", num_checkpoints)
    if total < 2 ** (count - 1):
        raise SchedulerSettingError(
            f"num_checkpoints={count} needs total_steps >= {2 ** (count - 1)} (checkpoints halve towards the "
            f"start), got total_steps={total}"
        )
    return [total // 2 ** (count - 1 - i) for i in range(count)]


def _pa_checkpoint_steps(total_steps: int, num_checkpoints: int) -> list[int]:
    """pytorch-accelerated 0.1.61's ``estimate_checkpoint_steps`` (first at a quarter, then doubling, capped)."""
    if num_checkpoints == 1:
        return [total_steps]
    checkpoints: list[int] = []
    for i in range(num_checkpoints):
        checkpoints.append(min(total_steps // 4 * 2**i, total_steps))
        if checkpoints[-1] == total_steps:
            break
    return checkpoints
