from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from pytorch_accelerated.callbacks import TrainerCallback
from pytorch_accelerated.run_config import TrainerRunConfig

DEFAULT_CALLBACKS: tuple[type[TrainerCallback], ...]

class TrainerPlaceholderValues(Enum):
    NUM_EPOCHS = ...
    NUM_UPDATE_STEPS_PER_EPOCH = ...
    PER_PROCESS_NUM_UPDATE_STEPS_PER_EPOCH = ...
    TRAIN_DATALOADER_LEN = ...
    EVAL_DATALOADER_LEN = ...

class Trainer:
    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    scheduler: Any
    run_config: TrainerRunConfig
    run_history: Any
    def __init__(
        self,
        model: nn.Module,
        loss_func: Callable[..., torch.Tensor],
        optimizer: torch.optim.Optimizer | None,
        callbacks: Iterable[TrainerCallback | type[TrainerCallback]] = ...,
        run_history: Any = None,
    ) -> None: ...
    def train(
        self,
        train_dataset: Dataset[Any],
        num_epochs: int,
        eval_dataset: Dataset[Any] | None = None,
        per_device_batch_size: int = 8,
        max_num_train_steps: int | None = None,
        gradient_accumulation_steps: int = 1,
        gradient_clip_value: float | None = None,
        create_scheduler_fn: Callable[[torch.optim.Optimizer], Any] | None = None,
        train_dataloader_kwargs: dict[str, Any] | None = None,
        eval_dataloader_kwargs: dict[str, Any] | None = None,
        reset_run_history: bool = True,
        collate_fn: Callable[..., Any] | None = None,
        resume_from: Any = None,
    ) -> None: ...
    def evaluate(
        self,
        dataset: Dataset[Any] | None = None,
        per_device_batch_size: int = 8,
        dataloader_kwargs: dict[str, Any] | None = None,
        collate_fn: Callable[..., Any] | None = None,
    ) -> None: ...
    def get_model(self, keep_torch_compile: bool = True) -> nn.Module: ...
    def get_default_train_dl_kwargs(self, batch_size: int) -> dict[str, Any]: ...
    def get_default_eval_dl_kwargs(self, batch_size: int) -> dict[str, Any]: ...
