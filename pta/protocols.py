"""Structural interfaces: what callbacks and user code may rely on, without naming a concrete trainer."""

from __future__ import annotations

from collections.abc import Mapping, Sized
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.optim import Optimizer

from pta.run_config import TrainerRunConfig
from pta.tracking import RunHistory


@runtime_checkable
class Stateful(Protocol):
    """An object whose state can be saved and restored (models, optimizers, schedulers, scalers)."""

    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state_dict: Any, /) -> Any: ...


class SchedulerLike(Stateful, Protocol):
    """A learning-rate scheduler stepped once per optimizer update (``torch.optim.lr_scheduler`` style)."""

    def step(self) -> None: ...


class SchedulerFactory(Protocol):
    """What ``train(create_scheduler_fn=...)`` takes: a callable from the optimizer to a new scheduler.

    Pass ``functools.partial(OneCycleLR, max_lr=..., total_steps=...)``, not a scheduler instance: the
    optimizer a scheduler must wrap only exists once the trainer has prepared it.
    """

    def __call__(self, optimizer: Optimizer, /) -> SchedulerLike: ...


class HasRunHistory(Protocol):
    @property
    def run_history(self) -> RunHistory: ...


class HasRunConfig(Protocol):
    @property
    def run_config(self) -> TrainerRunConfig: ...


class SupportsGather(Protocol):
    def gather(self, tensor: torch.Tensor, padding_value: float | None = None) -> torch.Tensor: ...


class SupportsPrint(Protocol):
    def print(self, *args: Any, **kwargs: Any) -> None: ...


class HasScheduler(Protocol):
    """A trainer with ``SchedulerMixin`` (``scheduler`` is ``None`` in runs without ``create_scheduler_fn``).

    Not part of ``TrainerLike``: a trainer without ``SchedulerMixin`` has no ``scheduler``. A callback
    that works with any trainer reads ``getattr(trainer, "scheduler", None)``.
    """

    @property
    def scheduler(self) -> Any: ...


class TrainerLike(HasRunHistory, HasRunConfig, SupportsGather, SupportsPrint, Protocol):
    """Everything a callback may use of the trainer that calls it."""

    model: nn.Module
    optimizer: Optimizer | None

    @property
    def device(self) -> torch.device: ...

    @property
    def is_local_main_process(self) -> bool: ...

    @property
    def is_world_main_process(self) -> bool: ...

    @property
    def train_dataloader(self) -> Sized | None: ...

    @property
    def eval_dataloader(self) -> Sized | None: ...

    @property
    def eval_step_is_padding(self) -> bool: ...

    @property
    def num_updates(self) -> int: ...

    def run_intermediate_evaluation(self) -> None: ...

    def save_training_state(self, output_dir: str | Path, checkpoint_kwargs: dict[str, Any] | None = None) -> Path: ...

    def get_model(self, keep_torch_compile: bool = True) -> nn.Module: ...

    def save_checkpoint(
        self,
        save_path: str | Path,
        checkpoint_kwargs: dict[str, Any] | None = None,
        save_optimizer: bool = True,
        save_scheduler: bool = True,
        save_per_node: bool = True,
    ) -> None: ...

    def load_checkpoint(
        self, checkpoint_path: str | Path, load_optimizer: bool = True, load_scheduler: bool = True
    ) -> dict[str, Any]: ...
