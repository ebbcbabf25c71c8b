"""What some callbacks need of a trainer beyond ``TrainerLike``, checked when they first need it.

Callbacks are typed against :class:`pta.protocols.TrainerLike`. A few of pta's callbacks need more (saving
training states, running an intermediate evaluation, replacing the dataloaders the loop reads, the number
of optimizer updates so far). Each such need is a small protocol here, checked at run time by a function
and names the missing method, so a callback used with a trainer that lacks it fails with a clear message
instead of an ``AttributeError`` deep inside a run. ``pta.TrainerBase`` (and so every pta trainer) has all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import torch

from pta._data import length
from pta.callbacks.base import CallbackHandler
from pta.protocols import TrainerLike


@runtime_checkable
class SupportsTrainingState(Protocol):
    """``save_training_state`` / ``load_training_state`` (``pta.TrainerBase``)."""

    def save_training_state(self, output_dir: str | Path, checkpoint_kwargs: dict[str, Any] | None = None) -> Path: ...

    def load_training_state(self, input_dir: str | Path) -> dict[str, Any]: ...


@runtime_checkable
class SupportsBackgroundSaves(Protocol):
    """``save_training_state_in_background`` and ``wait_for_save`` (``pta.TrainerBase``)."""

    def save_training_state_in_background(self, output_dir: str | Path,
                                          checkpoint_kwargs: dict[str, Any] | None = None) -> Path: ...

    def wait_for_save(self) -> None: ...


@runtime_checkable
class SupportsIntermediateEvaluation(Protocol):
    """``run_intermediate_evaluation`` (``pta.TrainerBase``): an evaluation epoch in the middle of training."""

    def run_intermediate_evaluation(self) -> None: ...


@runtime_checkable
class HasDataloaders(Protocol):
    """The dataloaders the loop reads at the start of every epoch, replaceable by a callback."""

    @property
    def train_dataloader(self) -> Any: ...

    @train_dataloader.setter
    def train_dataloader(self, dataloader: Iterable[Any] | None) -> None: ...

    @property
    def eval_dataloader(self) -> Any: ...

    @eval_dataloader.setter
    def eval_dataloader(self, dataloader: Iterable[Any] | None) -> None: ...


@runtime_checkable
class SupportsExtraEvalEpoch(Protocol):
    """What ``ModelEmaCallback`` needs to run one more evaluation epoch with its own callbacks."""

    callback_handler: CallbackHandler

    def run_evaluation_epoch(self, metric_name: str = "eval_loss_epoch") -> None: ...


def _missing(trainer: TrainerLike, who: str, what: str) -> TypeError:
    return TypeError(f"{who} needs a trainer with {what} (every pta.TrainerBase has it); got {type(trainer).__name__}")


def training_states(trainer: TrainerLike, who: str) -> SupportsTrainingState:
    if not isinstance(trainer, SupportsTrainingState):
        raise _missing(trainer, who, "save_training_state() and load_training_state()")
    return trainer


def background_saves(trainer: TrainerLike, who: str) -> SupportsBackgroundSaves:
    if not isinstance(trainer, SupportsBackgroundSaves):
        raise _missing(trainer, who, "save_training_state_in_background() and wait_for_save()")
    return trainer


def intermediate_evaluation(trainer: TrainerLike, who: str) -> SupportsIntermediateEvaluation:
    if not isinstance(cast(object, trainer), SupportsIntermediateEvaluation):  # untyped callers
        raise _missing(trainer, who, "run_intermediate_evaluation()")
    return trainer


def dataloaders(trainer: TrainerLike, who: str) -> HasDataloaders:
    candidate = cast(object, trainer)  # untyped callers may pass anything
    if not isinstance(candidate, HasDataloaders):
        raise _missing(trainer, who, "settable train_dataloader and eval_dataloader properties")
    return candidate


def extra_eval_epochs(trainer: TrainerLike, who: str) -> SupportsExtraEvalEpoch:
    if not isinstance(trainer, SupportsExtraEvalEpoch):
        raise _missing(trainer, who, "callback_handler and run_evaluation_epoch()")
    return trainer


def updates_done(trainer: TrainerLike) -> int | None:
    """The number of optimizer updates of the run so far, continuing across epochs and resumes.

    Read from ``TrainerBase``'s ``_num_updates`` (the loop's own count: user code may assign the public
    ``num_updates``) or the trainer's ``num_updates``; ``None`` for a trainer with neither.
    """
    for name in ("_num_updates", "num_updates"):
        value = getattr(trainer, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class UpdateCounter:
    """Tells, at ``on_train_step_end``, whether the step ended with an optimizer update, and how many
    updates the run has done.

    pta's ``on_train_step_end`` fires after the optimizer step of an update step, so the trainer's update
    count has already moved on such a step. Trainers without a count fall back to the accumulation
    windows (``(step + 1) % gradient_accumulation_steps == 0`` or the epoch's last batch), counted from
    the start of the run.
    """

    def __init__(self) -> None:
        self.count = 0

    def start(self, trainer: TrainerLike) -> None:
        """Call at ``on_training_run_start`` (after a resume the count continues from the saved one)."""
        self.count = updates_done(trainer) or 0

    def step_end(self, trainer: TrainerLike, step: int) -> bool:
        """Call at ``on_train_step_end``: whether this step ended with an update; ``count`` is then current."""
        value = updates_done(trainer)
        if value is None:
            setting: object = trainer.run_config.gradient_accumulation_steps
            k = setting if isinstance(setting, int) and setting > 0 else 1  # a duck-typed trainer without the setting: every step
            size = length(trainer.train_dataloader) if trainer.train_dataloader is not None else None
            last = size is not None and step + 1 == size
            value = self.count + 1 if (step + 1) % k == 0 or last else self.count
        updated = value != self.count
        self.count = value
        return updated


def check_positive(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")


def latest_metric(trainer: TrainerLike, name: str, who: str) -> float:
    """The latest value of ``name`` as a float, the same on every process.

    The losses pta records are already means over all processes, identical everywhere. A metric that
    user code records per process may differ between processes, and decisions taken on it (save, stop)
    would then differ too, leaving some processes waiting in a collective: in multi-process runs the
    main process's value is used everywhere (one small collective, once per call).
    """
    history = trainer.run_history
    try:
        raw = history.get_latest_metric(name)
    except (ValueError, KeyError, IndexError) as error:
        raise ValueError(
            f"{who} watches {name!r}, which has no recorded value (recorded: {sorted(history.get_metric_names())}); "
            "pass an eval_dataset to train() for eval_loss_epoch, or choose another watch_metric"
        ) from error
    value = float(raw)
    if trainer.run_config.num_processes > 1:
        values = trainer.gather(torch.tensor([value], dtype=torch.float64, device=trainer.device))
        value = float(values[0].item())
    return value


def is_improvement(current: float, best: float | None, greater_is_better: bool, threshold: float = 0.0) -> bool:
    """Whether ``current`` beats ``best`` by more than ``threshold``; NaN never improves, anything
    that is not NaN improves on no value or on NaN."""
    if math.isnan(current):
        return False
    if best is None or math.isnan(best):
        return True
    gain = current - best if greater_is_better else best - current
    return gain > threshold
