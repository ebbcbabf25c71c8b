"""pta: a typed, mixin-based training loop for PyTorch on top of Hugging Face Accelerate.

Importing pta has no side effects: no seeding, no logging configuration.
"""

from pta._accelerate import LaunchError, notebook_launcher, reset_accelerate_state, set_seed
from pta._types import AcceleratorKwargs, BatchOutput, MixedPrecision
from pta._validation import ConfigurationError
from pta.base import HookChainError, HookNameError, TrainerBase
from pta.callbacks import StopTrainingError, TrainerCallback
from pta.checkpoint import CheckpointError
from pta.mixins import (
    AMPMixin,
    DevicePlacementMixin,
    DistributedEvalMixin,
    GradAccumMixin,
    SchedulerMixin,
)
from pta.run_config import TrainerRunConfig
from pta.trainer import (
    DEFAULT_CALLBACKS,
    DefaultTrainer,
    Trainer,
    TrainerPlaceholderValues,
)

__version__ = "0.1.0"

__all__ = [
    "AMPMixin",
    "AcceleratorKwargs",
    "BatchOutput",
    "CheckpointError",
    "ConfigurationError",
    "DEFAULT_CALLBACKS",
    "DefaultTrainer",
    "DevicePlacementMixin",
    "DistributedEvalMixin",
    "GradAccumMixin",
    "HookChainError",
    "HookNameError",
    "LaunchError",
    "MixedPrecision",
    "SchedulerMixin",
    "StopTrainingError",
    "Trainer",
    "TrainerBase",
    "TrainerCallback",
    "TrainerPlaceholderValues",
    "TrainerRunConfig",
    "__version__",
    "notebook_launcher",
    "reset_accelerate_state",
    "set_seed",
]
