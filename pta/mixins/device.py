"""DevicePlacementMixin: hands model, optimizer and dataloaders to Accelerate."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn
from typing_extensions import override

from pta._unwrap import unwrap_optimizer
from pta._types import BatchT
from pta.base import TrainerBase


class DevicePlacementMixin(TrainerBase[BatchT]):
    """Places everything on the device Accelerate chose and wraps it for distributed training.

    Needs: nothing.
    Provides: ``Accelerator.prepare`` of model, optimizer and dataloaders (DDP/FSDP/DeepSpeed wrapping,
        sharded data loading); ``device``; ``get_model`` unwrapping; a loss module moved to the device.
    Overrides: ``prepare_components``, ``device``, ``get_model``, ``training_run_end``, ``evaluation_run_end``.
    State: none; after a run ``model`` is the unwrapped user model again.
    """

    places_on_device: ClassVar[Literal[True]] = True

    @override
    def prepare_components(self) -> None:
        super().prepare_components()
        model = self.get_model()  # a run that raised may have left the model wrapped
        optimizer = unwrap_optimizer(self.optimizer) if self.optimizer is not None else None
        self.model, self.optimizer, self._train_dataloader, self._eval_dataloader = self._accelerator.prepare(
            model, optimizer, self._train_dataloader, self._eval_dataloader
        )
        if isinstance(self.loss_func, nn.Module):
            self.loss_func.to(self.device)

    @property
    @override
    def device(self) -> torch.device:
        return self._accelerator.device

    @override
    def get_model(self, keep_torch_compile: bool = True) -> nn.Module:
        return self._accelerator.unwrap_model(self.model, keep_torch_compile=keep_torch_compile)

    @override
    def training_run_end(self) -> None:
        self.model = self.get_model()
        super().training_run_end()

    @override
    def evaluation_run_end(self) -> None:
        self.model = self.get_model()
        super().evaluation_run_end()
