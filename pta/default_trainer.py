"""DefaultTrainer, the composition of every pta behaviour, and its default callbacks.

``pta.trainer`` re-exports both (with pytorch-accelerated's other ``trainer`` names); ``pta.timm_trainer``
builds on this module, so neither of the two imports the other.
"""

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
from pta.mixins.scheduler import SchedulerT

DEFAULT_CALLBACKS: tuple[type[TrainerCallback], ...] = (
    MoveModulesToDeviceCallback,
    TerminateOnNaNCallback,
    PrintProgressCallback,
    ProgressBarCallback,
    LogMetricsCallback,
)


class DefaultTrainer(
    AMPMixin[BatchT],
    GradAccumMixin[BatchT],
    DistributedEvalMixin[BatchT],
    SchedulerMixin[BatchT, SchedulerT],
    DevicePlacementMixin[BatchT],
    TrainerBase[BatchT],
):
    """Every pta behaviour: the drop-in replacement for pytorch-accelerated's ``Trainer``.

    Type parameters: the batch type, then the scheduler's type (``DefaultTrainer[Batch, OneCycleLR]``);
    both default to ``Any``.

    MRO: DefaultTrainer, AMPMixin, GradAccumMixin, DistributedEvalMixin, SchedulerMixin,
    DevicePlacementMixin, TrainerBase, TrainerStep, TrainerCheckpoints, TrainerHooks, Generic, object.
    """

    default_callbacks = DEFAULT_CALLBACKS
