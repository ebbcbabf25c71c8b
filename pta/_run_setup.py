"""The ``TrainerRunConfig`` of a run, from ``train()``'s arguments and what Accelerate set up."""

from __future__ import annotations

from typing import Any

from pta._accelerate import AcceleratorAdapter
from pta.run_config import TrainerRunConfig


def build_run_config(acc: AcceleratorAdapter, train_dl_kwargs: dict[str, Any] | None,
                     eval_dl_kwargs: dict[str, Any] | None, num_batches: int | None, batch_size: int,
                     num_epochs: int | None, accumulation: int, max_steps: int | None, clip_value: float | None,
                     clip_norm: float | None) -> TrainerRunConfig:
    """``num_batches`` is the training dataloader's length (``None``: no training dataloader, or unsized);
    ``max_steps`` then sets the number of epochs."""
    train_bs = (train_dl_kwargs or {}).get("batch_size", batch_size)
    eval_bs = (eval_dl_kwargs or {}).get("batch_size", train_bs)
    updates = -(-num_batches // accumulation) if num_batches else 0
    if max_steps is not None and updates:
        num_epochs = -(-max_steps // updates)
    return TrainerRunConfig(
        num_epochs=num_epochs or 1, train_per_device_batch_size=train_bs, train_dl_kwargs=train_dl_kwargs,
        eval_per_device_batch_size=eval_bs, eval_dl_kwargs=eval_dl_kwargs,
        gradient_accumulation_steps=accumulation, gradient_clip_value=clip_value, gradient_clip_norm=clip_norm,
        train_total_batch_size=train_bs * acc.num_processes * accumulation if train_bs else None,
        eval_total_batch_size=eval_bs * acc.num_processes if eval_bs else None,
        num_update_steps_per_epoch=updates, num_local_update_steps_per_epoch=updates,
        max_num_train_steps=max_steps, is_local_process_zero=acc.is_local_main_process,
        is_world_process_zero=acc.is_main_process, is_distributed=acc.is_distributed,
        mixed_precision=acc.mixed_precision, num_processes=acc.num_processes,
    )
