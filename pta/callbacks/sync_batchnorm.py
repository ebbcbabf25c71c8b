"""Converts BatchNorm layers to SyncBatchNorm before the model is wrapped for distributed training."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn
from typing_extensions import override

from pta.callbacks.base import TrainerCallback
from pta.protocols import TrainerLike

_convert = cast("Callable[[nn.Module], nn.Module]", getattr(nn.SyncBatchNorm, "convert_sync_batchnorm"))  # torch leaves it unannotated


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _plain_batchnorms(model: nn.Module) -> list[str]:
    modules: list[tuple[str, nn.Module]] = list(model.named_modules())  # pyright: ignore[reportUnknownArgumentType]  # torch's generator is partly unannotated
    return [name or type(model).__name__ for name, module in modules
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, nn.SyncBatchNorm)]


class ConvertSyncBatchNormCallback(TrainerCallback):
    """Converts every ``BatchNorm*d`` layer of the model to :class:`torch.nn.SyncBatchNorm` in multi-process
    runs, so batch statistics are computed over the whole global batch.

    The conversion must happen before the model is wrapped for DDP (PyTorch's rule); pta wraps it at the
    start of every run, after the trainer was constructed, so this converts in ``on_init_end``: when the
    ``Trainer`` is constructed, under a launcher that started several processes (the process group
    exists by then). The converted layers share the original parameters, so an optimizer created
    before the trainer still updates them. In single-process runs nothing changes.

    A model assigned to ``trainer.model`` after construction (between runs) is not converted: at the start
    of a multi-process run that still has plain BatchNorm layers this raises a ``RuntimeError``, because
    converting a model that is already wrapped for DDP/FSDP is not safe. Convert such a model yourself
    with ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` before assigning it.

    ``SyncBatchNorm`` needs an accelerator (CUDA/XPU/HPU) in training; PyTorch raises for CPU tensors.
    """

    def is_distributed(self, trainer: TrainerLike) -> bool:
        """Whether this run has several processes (the conversion is skipped otherwise)."""
        return _world_size() > 1

    @override
    def on_init_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if self.is_distributed(trainer):
            trainer.model = _convert(trainer.model)

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if not self.is_distributed(trainer):
            return
        plain = _plain_batchnorms(trainer.get_model(keep_torch_compile=False))
        if plain:
            raise RuntimeError(
                f"ConvertSyncBatchNormCallback: the model has BatchNorm layers that are not SyncBatchNorm "
                f"({', '.join(plain[:5])}{', ...' if len(plain) > 5 else ''}): it was assigned to trainer.model after "
                "the trainer was constructed, and it is already wrapped for distributed training. Convert it with "
                "torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) before assigning it."
            )
