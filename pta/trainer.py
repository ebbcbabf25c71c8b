"""The prebuilt trainers and the names pytorch-accelerated's ``trainer`` module exports."""

from __future__ import annotations

from pta._types import BatchT
from pta.base import TrainerBase
from pta.callbacks import (
    LogMetricsCallback,
    MoveModulesToDeviceCallback,
    PrintProgressCallback,
    ProgressBarCallback,
    TerminateOnNaNCallback,
    TrainerCallback,
)
from pta.mixins import (
    AMPMixin,
    DevicePlacementMixin,
    DistributedEvalMixin,
    GradAccumMixin,
    SchedulerMixin,
)
from pta.placeholders import (
    TrainerPlaceholderValues,
    replace_trainer_placeholder_values,
)

DEFAULT_CALLBACKS: tuple[type[TrainerCallback], ...] = (
    MoveModulesToDeviceCallback,
    TerminateOnNaNCallback,
    PrintProgressCallback,
    ProgressBarCallback,
    LogMetricsCallback,
)


class DefaultTrainer(
    DevicePlacementMixin[BatchT],
    AMPMixin[BatchT],
    GradAccumMixin[BatchT],
    DistributedEvalMixin[BatchT],
    SchedulerMixin[BatchT],
    TrainerBase[BatchT],
):
    """Every pta behaviour: the drop-in replacement for pytorch-accelerated's ``Trainer``.

    MRO: DefaultTrainer, DevicePlacementMixin, AMPMixin, GradAccumMixin, DistributedEvalMixin,
    SchedulerMixin, TrainerBase, TrainerHooks, Generic, object.
    """

    default_callbacks = DEFAULT_CALLBACKS


Trainer = DefaultTrainer

from pta.timm_trainer import TrainerWithTimmScheduler  # noqa: E402  (it subclasses DefaultTrainer)

__all__ = [
    "DEFAULT_CALLBACKS",
    "DefaultTrainer",
    "Trainer",
    "TrainerPlaceholderValues",
    "TrainerWithTimmScheduler",
    "replace_trainer_placeholder_values",
]
