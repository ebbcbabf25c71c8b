"""A learning-rate range test (``lr_find``): a short exponential sweep on a copy of the training state.

::

    from pta.lr_finder import lr_find

    result = lr_find(trainer, train_dataset, per_device_batch_size=32)
    result.plot("runs/lr_find.png")           # loss against learning rate (matplotlib)
    lr = result.suggestion                    # steepest descent of the smoothed loss

The sweep runs the trainer's own loop (its mixins: device placement, accumulation, mixed precision,
several processes), with only the callbacks that move modules to the device, and restores model
weights, optimizer state (learning rates included), run history, callbacks and RNG states afterwards.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from typing_extensions import override

from pta._unwrap import unwrap_optimizer
from pta._types import BatchOutput
from pta._validation import ConfigurationError, check_dataset, check_positive_int
from pta.base import TrainerBase
from pta.callbacks.base import CallbackHandler, StopTrainingError, TrainerCallback
from pta.callbacks.device import MoveModulesToDeviceCallback
from pta.protocols import TrainerLike
from pta.tracking import InMemoryRunHistory

__all__ = ["LRFinderResult", "lr_find"]


@dataclass(frozen=True)
class LRFinderResult:
    """What ``lr_find`` measured: one entry per optimizer update of the sweep (the same on every process)."""

    lrs: list[float]
    """The learning rate of the first param group at each update (others keep their ratio to it)."""
    losses: list[float]
    """The mean training loss of each update (over its accumulation window and all processes)."""
    smoothed_losses: list[float]
    """``losses`` after bias-corrected exponential smoothing (what the suggestion and the stop use)."""
    suggestion: float | None
    """The learning rate where the smoothed loss falls fastest (against log lr) before its minimum;
    ``None`` when the sweep was too short to tell."""
    diverged: bool = field(default=False)
    """Whether the sweep stopped early because the loss diverged."""

    def plot(self, path: str | Path, *, dpi: int = 100) -> Path:
        """Save the loss against the learning rate (log scale), with the suggestion marked, to ``path``
        (PNG unless the suffix says otherwise), atomically. Needs matplotlib (``pip install
        'pta-trainer[plot]'``); call it on the main process only in distributed runs."""
        from pta.plotting import plot_lr_sweep

        return plot_lr_sweep(self.lrs, self.losses, self.smoothed_losses, self.suggestion, path, dpi=dpi)


def lr_find(
    trainer: TrainerBase[Any],
    train_dataset: Any,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    per_device_batch_size: int = 8,
    gradient_accumulation_steps: int = 1,
    smoothing: float = 0.05,
    diverge_threshold: float = 4.0,
    train_dataloader_kwargs: dict[str, Any] | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> LRFinderResult:
    """Train for up to ``num_steps`` optimizer updates while the learning rate grows exponentially from
    ``start_lr`` to ``end_lr``, record the loss of each update, and put the trainer back as it was.

    The sweep stops early once the smoothed loss exceeds ``diverge_threshold`` times its minimum (or is
    not finite). Param groups keep their ratios to the first group's learning rate. Every process must
    call it (like ``train``); the losses are averaged over processes, so all of them see the same
    result. Model weights (on their original device), optimizer state and learning rates, run history,
    callbacks and the Python/NumPy/torch RNG states are restored exactly afterwards, also when the sweep
    raises. Arguments are checked before any work; a trainer without an optimizer is refused.
    """
    _check_arguments(trainer, train_dataset, start_lr, end_lr, num_steps, smoothing, diverge_threshold)
    sweep = _Sweep(start_lr, end_lr, num_steps, smoothing, diverge_threshold)
    with _restored(trainer):
        kept = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, MoveModulesToDeviceCallback)]
        trainer.callback_handler = CallbackHandler([*kept, sweep])
        trainer.run_history = InMemoryRunHistory()
        trainer.interrupt_state_dir = None  # a signal during the sweep must not write a training state
        train: Any = trainer.train  # accumulation > 1 on a trainer without GradAccumMixin: train() refuses it
        train(train_dataset, num_epochs=1, per_device_batch_size=per_device_batch_size,
              max_num_train_steps=num_steps, gradient_accumulation_steps=gradient_accumulation_steps,
              train_dataloader_kwargs=train_dataloader_kwargs, collate_fn=collate_fn)
    result = LRFinderResult(lrs=sweep.lrs, losses=sweep.losses, smoothed_losses=sweep.smoothed,
                            suggestion=suggest(sweep.lrs, sweep.smoothed), diverged=sweep.diverged)
    where = f"suggested lr {result.suggestion:.3g}" if result.suggestion is not None else "no suggestion"
    trainer.print(f"LR finder: {len(result.lrs)} updates from {start_lr:.3g} to {result.lrs[-1]:.3g}"
                  f"{' (loss diverged)' if result.diverged else ''}; {where}", flush=True)
    return result


def suggest(lrs: list[float], smoothed: list[float]) -> float | None:
    """The learning rate of the steepest descent of ``smoothed`` against log lr, between the first tenth
    of the sweep (the smoothing is still settling there) and the minimum of the smoothed loss."""
    end = min(range(len(smoothed)), key=smoothed.__getitem__) + 1 if smoothed else 0
    start = max(1, len(smoothed) // 10)
    if end - start < 2:
        return None
    logs = [math.log(lr) for lr in lrs[:end]]
    points = range(start, end - 1)
    slopes = {i: (smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in points}
    return lrs[min(slopes, key=slopes.__getitem__)]


class _Sweep(TrainerCallback):
    """Sets each update's learning rate and records its loss (averaged over processes)."""

    def __init__(self, start_lr: float, end_lr: float, num_steps: int, smoothing: float, threshold: float) -> None:
        self.start_lr, self.end_lr, self.num_steps = start_lr, end_lr, num_steps
        self.smoothing, self.threshold = smoothing, threshold
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.diverged = False
        self._ratios: list[float] = []
        self._window: torch.Tensor | None = None
        self._window_batches = 0
        self._updates: int = 0
        self._average = 0.0
        self._lr = start_lr

    def _set_lr(self, trainer: TrainerLike, index: int) -> None:
        assert trainer.optimizer is not None
        fraction = index / max(self.num_steps - 1, 1)
        lr = self.start_lr * (self.end_lr / self.start_lr) ** fraction
        for group, ratio in zip(trainer.optimizer.param_groups, self._ratios, strict=True):
            group["lr"] = lr * ratio
        self._lr = lr

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        assert trainer.optimizer is not None
        first = float(trainer.optimizer.param_groups[0]["lr"]) or 1.0
        self._ratios = [float(group["lr"]) / first if first else 1.0 for group in trainer.optimizer.param_groups]
        self._updates = trainer.num_updates
        self._set_lr(trainer, 0)

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, **kwargs: Any) -> None:
        loss = batch_output["loss"].detach().float().mean()
        self._window = loss if self._window is None else self._window + loss
        self._window_batches += 1
        if trainer.num_updates == self._updates:
            return  # inside an accumulation window
        self._updates = trainer.num_updates
        mean = trainer.gather(self._window / self._window_batches).mean()  # every process, same order
        self._window, self._window_batches = None, 0
        value = float(mean.item())
        self.lrs.append(self._lr)
        self.losses.append(value)
        count = len(self.losses)
        self._average = self.smoothing * value + (1 - self.smoothing) * self._average
        smoothed = self._average / (1 - (1 - self.smoothing) ** count)
        self.smoothed.append(smoothed)
        if not math.isfinite(smoothed) or smoothed > self.threshold * min(self.smoothed):
            self.diverged = True
            raise StopTrainingError(f"LR finder: the loss diverged at lr {self._lr:.3g}; sweep stopped")
        self._set_lr(trainer, count)


def _check_arguments(trainer: TrainerBase[Any], dataset: Any, start_lr: float, end_lr: float, num_steps: int,
                     smoothing: float, threshold: float) -> None:
    if trainer.optimizer is None:
        raise ConfigurationError("lr_find needs a trainer with an optimizer; pass optimizer= to the trainer")
    check_dataset("train_dataset", dataset)
    check_positive_int("num_steps", num_steps)
    if num_steps < 2:
        raise ConfigurationError(f"num_steps must be at least 2 for a sweep, got {num_steps}")
    if not 0 < start_lr < end_lr:
        raise ConfigurationError(f"lr_find needs 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
    if not 0 < smoothing <= 1:
        raise ConfigurationError(f"smoothing must be in (0, 1], got {smoothing}")
    if not threshold > 1:
        raise ConfigurationError(f"diverge_threshold must be greater than 1, got {threshold}")


@contextmanager
def _restored(trainer: TrainerBase[Any]) -> Generator[None, None, None]:
    """Put the trainer's attributes, weights, optimizer state and RNG states back on exit."""
    attributes = dict(vars(trainer))
    model = trainer.get_model()
    device = next(model.parameters()).device if next(model.parameters(), None) is not None else None
    weights = {name: value.detach().clone() for name, value in model.state_dict().items()}
    optimizer = unwrap_optimizer(trainer.optimizer) if trainer.optimizer is not None else None
    optimizer_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    rng = _rng_states()
    try:
        yield
    finally:
        vars(trainer).clear()
        vars(trainer).update(attributes)
        if device is not None:
            model.to(device)
        model.load_state_dict(weights)
        if optimizer is not None and optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        _set_rng_states(rng)


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy

        states["numpy"] = numpy.random.get_state()
    except ImportError:
        pass
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])
    if "numpy" in states:
        import numpy

        numpy.random.set_state(states["numpy"])
