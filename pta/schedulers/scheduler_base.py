"""Base classes for parameter schedulers stepped once per optimizer update (pytorch-accelerated's API).

Counting convention of pta's schedulers: ``num_updates`` is the number of optimizer updates already
performed. ``get_updated_values(n)`` is the value the optimizer uses for the update that has ``n``
updates before it, so a new scheduler applies ``get_updated_values(0)`` (``apply_initial_values()``) and
each ``step()`` (called after an update) applies the value for the next one.

A ``StatefulSchedulerBase`` subclass that does not call ``apply_initial_values()`` keeps
pytorch-accelerated's contract unchanged: the first update uses the groups' own values, the first
``step()`` applies ``get_updated_values(0)``, the second ``get_updated_values(1)``, and so on.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, cast

from torch.optim import Optimizer
from typing_extensions import override

class SchedulerSettingError(ValueError, AssertionError):
    """A scheduler setting or state that cannot produce a schedule; the message names the parameter.

    A ``ValueError``, and also an ``AssertionError``: pytorch-accelerated's schedulers reject the same
    settings with ``assert``, so code written to catch that keeps working.
    """


ScheduledValues = float | Sequence[float] | None
"""One value for every parameter group, one value per group, or ``None`` to leave the groups unchanged."""


class SchedulerBase(ABC):
    """A scheduler for any field of an optimizer's parameter groups (usually ``"lr"``), told the update count.

    It keeps no count itself: after each optimizer update call ``step_update(num_updates)`` with the number
    of updates performed so far::

        num_updates = 0
        for batch in train_dataloader:
            loss_func(model(batch[0]), batch[1]).backward()
            optimizer.step()
            optimizer.zero_grad()
            num_updates += 1
            scheduler.step_update(num_updates)

    Subclasses implement :meth:`get_updated_values`.
    """

    def __init__(self, optimizer: Optimizer, param_group_field: str = "lr") -> None:
        """:param optimizer: the optimizer whose parameter groups are scheduled
        :param param_group_field: the parameter-group field to schedule; its starting values are stored
            under ``initial_<field>`` (kept if already there) and become ``base_lr_values``
        """
        self.optimizer = optimizer
        self.param_group_field = param_group_field
        self._initial_param_group_field = f"initial_{param_group_field}"
        self._store_initial_lrs()
        self.base_lr_values: list[float] = [
            float(group[self._initial_param_group_field]) for group in self.optimizer.param_groups
        ]
        self._update_param_groups(self.base_lr_values)

    def _store_initial_lrs(self) -> None:
        for i, group in enumerate(self.optimizer.param_groups):
            if self.param_group_field not in group:
                raise KeyError(f"{self.param_group_field} missing from param_groups[{i}]")
            group.setdefault(self._initial_param_group_field, group[self.param_group_field])

    @abstractmethod
    def get_updated_values(self, num_updates: int) -> ScheduledValues:
        """The value(s) for the update that has ``num_updates`` updates before it (see :data:`ScheduledValues`)."""

    def step_update(self, num_updates: int) -> None:
        """Apply ``get_updated_values(num_updates)`` to the optimizer's parameter groups."""
        values = self.get_updated_values(num_updates)
        if values is not None:
            self._update_param_groups(values)

    def _update_param_groups(self, values: float | Sequence[float]) -> None:
        groups = self.optimizer.param_groups
        if isinstance(values, Sequence):
            if len(values) != len(groups):
                raise SchedulerSettingError(
                    f"{type(self).__name__} produced {len(values)} values for {len(groups)} parameter groups"
                )
            per_group = list(values)
        else:
            per_group = [values] * len(groups)
        for group, value in zip(groups, per_group, strict=True):
            group[self.param_group_field] = value

    def state_dict(self) -> dict[str, Any]:
        """Every attribute except the optimizer (save the optimizer separately)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the attributes saved by :meth:`state_dict`."""
        vars(self).update({key: value for key, value in state_dict.items() if key != "optimizer"})


class StatefulSchedulerBase(SchedulerBase, ABC):
    """A :class:`SchedulerBase` that counts updates itself: call ``step()`` once after every optimizer update.

    This is what :class:`pta.DefaultTrainer` does (it satisfies :class:`pta.protocols.SchedulerLike`)::

        for batch in train_dataloader:
            loss_func(model(batch[0]), batch[1]).backward()
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()

    ``step()`` applies ``get_updated_values(self._num_updates + 1)``; ``_num_updates`` starts at -1, as in
    pytorch-accelerated, so in a subclass written for that library the first ``step()`` applies
    ``get_updated_values(0)`` (the first update used the groups' own values). pta's schedulers end their
    ``__init__`` with :meth:`apply_initial_values`, so that the first update already uses
    ``get_updated_values(0)`` and ``step()`` number ``n`` applies ``get_updated_values(n)``; their
    ``load_state_dict`` ends with ``self._restore_position(num_updates)``, so a restored scheduler
    continues where the saved one was.
    """

    def __init__(self, optimizer: Optimizer, param_group_field: str = "lr") -> None:
        super().__init__(optimizer=optimizer, param_group_field=param_group_field)
        self._num_updates = -1  # pytorch-accelerated's start: no scheduled value applied yet

    @property
    def num_updates(self) -> int:
        """The ``n`` of the value in use, ``get_updated_values(n)``: after :meth:`apply_initial_values`, the
        number of updates this scheduler has been stepped for; -1 while the groups' own values are in use."""
        return self._num_updates

    def step(self) -> None:
        """Record one more optimizer update and apply the next value."""
        self._num_updates += 1
        self.step_update(self._num_updates)

    def apply_initial_values(self) -> None:
        """Apply ``get_updated_values(0)`` now, so that the first optimizer update already uses it.

        Call it at the end of a subclass's ``__init__`` (pta's schedulers do) to schedule every update,
        the first included; ``step()`` number ``n`` then applies ``get_updated_values(n)``.
        """
        self._restore_position(0)

    def _restore_position(self, num_updates: object) -> None:
        self._num_updates = check_non_negative_int("num_updates", num_updates)
        self.step_update(self._num_updates)

    def _restore_base_values(self, values: object) -> None:
        """Restore saved ``base_lr_values`` (absent in states written by pytorch-accelerated: then kept)."""
        if values is None:
            return
        saved = cast("Sequence[object]", values) if isinstance(values, Sequence) else None
        if saved is None or len(saved) != len(self.optimizer.param_groups):
            raise SchedulerSettingError(
                f"the saved base_lr_values {values!r} do not match the optimizer's "
                f"{len(self.optimizer.param_groups)} parameter groups"
            )
        self.base_lr_values = [float(cast(float, v)) for v in saved]

    @abstractmethod
    @override
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the schedule, including the update count."""

    @abstractmethod
    @override
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` and apply the value for the next update to the optimizer."""


# ---------------------------------------------------------------------- validation shared by the schedulers
def _placeholder_hint(value: object) -> str:
    from pta.placeholders import PlaceholderExpression, TrainerPlaceholderValues

    if isinstance(value, (TrainerPlaceholderValues, PlaceholderExpression)):
        return (
            " (an unresolved TrainerPlaceholderValues: placeholders are resolved only when the trainer calls "
            "create_scheduler_fn; construct the scheduler with real numbers otherwise)"
        )
    return ""


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SchedulerSettingError(f"{name} must be a positive integer, got {value!r}{_placeholder_hint(value)}")
    return int(value)


def check_non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SchedulerSettingError(f"{name} must be a non-negative integer, got {value!r}{_placeholder_hint(value)}")
    return int(value)


def check_non_negative_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SchedulerSettingError(f"{name} must be a finite number >= 0, got {value!r}{_placeholder_hint(value)}")
    return float(value)


def check_ratio(name: str, value: object) -> float:
    number = check_non_negative_number(name, value)
    if number > 1:
        raise SchedulerSettingError(f"{name} must be between 0 and 1, got {value!r}")
    return number


def check_base_values(scheduler: SchedulerBase) -> None:
    for i, value in enumerate(scheduler.base_lr_values):
        if not math.isfinite(value) or value < 0:
            raise SchedulerSettingError(
                f"param_groups[{i}][{scheduler._initial_param_group_field!r}] must be a finite number >= 0, "
                f"got {value!r}"
            )
