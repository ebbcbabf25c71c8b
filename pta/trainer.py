"""The prebuilt trainers and the names pytorch-accelerated's ``trainer`` module exports."""

from __future__ import annotations

from pta.default_trainer import DEFAULT_CALLBACKS, DefaultTrainer
from pta.placeholders import (
    TrainerPlaceholderValues,
    replace_trainer_placeholder_values,
)
from pta.timm_trainer import TrainerWithTimmScheduler

Trainer = DefaultTrainer

__all__ = [
    "DEFAULT_CALLBACKS",
    "DefaultTrainer",
    "Trainer",
    "TrainerPlaceholderValues",
    "TrainerWithTimmScheduler",
    "replace_trainer_placeholder_values",
]
