"""The trainer behaviours, one per module; compose them with ``TrainerBase`` (last) by inheritance."""

from pta.mixins.amp import AMPMixin
from pta.mixins.device import DevicePlacementMixin
from pta.mixins.distributed_eval import DistributedEvalMixin
from pta.mixins.grad_accum import GradAccumMixin
from pta.mixins.scheduler import SchedulerMixin

__all__ = ["AMPMixin", "DevicePlacementMixin", "DistributedEvalMixin", "GradAccumMixin", "SchedulerMixin"]
