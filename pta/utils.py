"""Small helpers shared by the trainer and user code (the names of ``pytorch_accelerated.utils``)."""

from __future__ import annotations

import copy
import functools
import itertools
import os
import random
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Generic, ParamSpec, TypeVar, cast

import torch
from torch import nn
from typing_extensions import Self, override

from pta._accelerate import local_process_index, process_index, wait_for_everyone

P = ParamSpec("P")
R = TypeVar("R")
T_co = TypeVar("T_co", covariant=True)

LIMIT_BATCHES_ENV_VAR = "PT_ACC_LIMIT_BATCHES"
"""The environment variable :class:`LimitBatches` sets: the number of batches per epoch to run."""


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class LimitBatches:
    """Context manager that sets ``PT_ACC_LIMIT_BATCHES`` to ``num_batches`` (a quick debug run).

    On exit the variable gets back the value it had on entry (or is removed if it had none), so
    nested uses and a value set by the shell survive. Code that honours the limit reads it with
    :func:`limit_batches_from_env`.
    """

    def __init__(self, num_batches: int) -> None:
        self.num_batches: int = _check_count("num_batches", num_batches, minimum=1)
        self._previous: list[str | None] = []

    def __enter__(self) -> Self:
        self._previous.append(os.environ.get(LIMIT_BATCHES_ENV_VAR))
        os.environ[LIMIT_BATCHES_ENV_VAR] = str(self.num_batches)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc_value: BaseException | None, exc_traceback: TracebackType | None
    ) -> None:
        previous = self._previous.pop()
        if previous is None:
            os.environ.pop(LIMIT_BATCHES_ENV_VAR, None)
        else:
            os.environ[LIMIT_BATCHES_ENV_VAR] = previous


def limit_batches_from_env() -> int | None:
    """The batch limit set by :class:`LimitBatches` (or the shell), ``None`` when unset or empty."""
    value = os.environ.get(LIMIT_BATCHES_ENV_VAR, "").strip()
    if not value or value.lower() == "none":
        return None
    limit = int(value)
    if limit < 1:
        raise ValueError(f"{LIMIT_BATCHES_ENV_VAR} must be a positive int, got {value!r}")
    return limit


class DataLoaderSlice(Generic[T_co]):
    """The first ``slice_size`` batches of ``dl`` (any iterable: a ``DataLoader`` or a prepared one).

    ``len()`` is the number of batches iteration really yields: ``min(slice_size, len(dl))``; for an
    iterable without a length it is ``slice_size``, an upper bound.
    """

    def __init__(self, dl: Iterable[T_co], slice_size: int) -> None:
        self.dl = dl
        self.slice_size: int = _check_count("slice_size", slice_size, minimum=0)

    def __iter__(self) -> Iterator[T_co]:
        return itertools.islice(self.dl, self.slice_size)

    def __len__(self) -> int:
        try:
            length = len(self.dl)  # type: ignore[arg-type]  # probing: TypeError means "no length"
        except TypeError:
            return self.slice_size
        return min(self.slice_size, length)


# ---------------------------------------------------------------------- process decorators
# Every process reaches exactly one barrier per call, also when ``func`` raises on the process that runs
# it (the barrier is in a ``finally``): the exception propagates on that process only, and the other
# processes continue past the barrier instead of waiting forever. The launcher (torchrun, accelerate)
# then ends the job when the failing process exits.


def _only_on_process_zero(index: Callable[[], int]) -> Callable[[Callable[P, R]], Callable[P, R | None]]:
    def decorate(func: Callable[P, R]) -> Callable[P, R | None]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
            if index() != 0:
                wait_for_everyone()
                return None
            try:
                return func(*args, **kwargs)
            finally:
                wait_for_everyone()

        return wrapper

    return decorate


def local_process_zero_only(func: Callable[P, R]) -> Callable[P, R | None]:
    """Run ``func`` on the first process of each machine only; every process then waits for the others.

    Returns ``func``'s result on local process 0 and ``None`` on every other process.
    """
    return _only_on_process_zero(local_process_index)(func)


def world_process_zero_only(func: Callable[P, R]) -> Callable[P, R | None]:
    """Run ``func`` on the global main process only; every process then waits for the others.

    Returns ``func``'s result on process 0 and ``None`` on every other process.
    """
    return _only_on_process_zero(process_index)(func)


def local_process_zero_first(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` on the first process of each machine, then on all the others (e.g. download, then read).

    Every process returns its own call's result. If ``func`` raises on local process 0, the others
    still pass the barrier and run ``func`` themselves.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if local_process_index() == 0:
            try:
                return func(*args, **kwargs)
            finally:
                wait_for_everyone()
        wait_for_everyone()
        return func(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------- model EMA
def unwrap_model(model: nn.Module) -> nn.Module:
    """``model`` without ``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            inner = cast(nn.Module, model.module)
        elif isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
            inner = model._orig_mod
        else:
            return model
        assert isinstance(inner, nn.Module)
        model = inner


class ModelEma(nn.Module):
    """An exponential moving average of a model's parameters and buffers (same API as pytorch-accelerated's).

    After ``update(model)`` every floating-point parameter and buffer is
    ``decay * ema + (1 - decay) * model`` (a tied tensor once); other buffers (e.g. BatchNorm's
    ``num_batches_tracked``) are copied. ``model`` may be wrapped in DDP, ``DataParallel`` or ``torch.compile``: the wrappers are
    removed before copying and before every update. The copy has no gradients and is in eval mode;
    ``device`` places it (e.g. ``"cpu"`` to keep GPU memory free); calling it runs the averaged model.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay!r}")
        self.module: nn.Module = copy.deepcopy(unwrap_model(model))
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.module.eval()
        if device is not None:
            self.module.to(device)
        self.decay = decay

    def update_fn(self, ema_model_weights: torch.Tensor, updated_model_weights: torch.Tensor) -> torch.Tensor:
        """The new averaged value of one floating-point tensor."""
        return self.decay * ema_model_weights + (1.0 - self.decay) * updated_model_weights

    @torch.no_grad()
    def _update(self, model: nn.Module, update_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        ema_values = _tensors(self.module)
        model_values = _tensors(unwrap_model(model))
        if ema_values.keys() != model_values.keys():
            missing = sorted(ema_values.keys() - model_values.keys())
            unexpected = sorted(model_values.keys() - ema_values.keys())
            raise ValueError(f"model does not match the EMA copy: missing {missing}, unexpected {unexpected}")
        for name, ema_value in ema_values.items():
            model_value = model_values[name].detach().to(device=ema_value.device)
            if ema_value.is_floating_point() or ema_value.is_complex():
                ema_value.copy_(update_fn(ema_value, model_value.to(dtype=ema_value.dtype)))
            else:
                ema_value.copy_(model_value)

    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        self._update(model, update_fn=self.update_fn)

    def set(self, model: nn.Module) -> None:
        """Copy ``model``'s current weights into the average."""
        self._update(model, update_fn=lambda ema, new: new)

    @override
    def forward(self, *args: object, **kwargs: object) -> object:
        return self.module(*args, **kwargs)


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name, each shared (tied) tensor once, so it is averaged once per update."""
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


# ---------------------------------------------------------------------- dataloader workers and padding
def worker_init_fn(worker_id: int) -> None:
    """Seed Python's and NumPy's RNGs in a dataloader worker from torch's per-worker seed.

    torch seeds each worker differently and reproducibly (from the loader's generator), but leaves
    ``random`` and NumPy with the parent's state, so augmentations would repeat across workers.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:  # NumPy is optional
        return
    np.random.seed(seed)


def remove_padding(padded_tensor: torch.Tensor, pad_value: float) -> torch.Tensor:
    """Drop trailing rows (along dim 0) whose every element equals ``pad_value``.

    Only trailing rows are dropped, so a genuine row that happens to equal ``pad_value`` in the middle
    is kept. Prefer ``trainer.gather``, which trims padding by the real sizes and needs no pad value.
    """
    if padded_tensor.ndim == 0 or padded_tensor.shape[0] == 0:
        return padded_tensor
    flat = padded_tensor.reshape(padded_tensor.shape[0], -1)
    is_pad = (flat == pad_value).all(dim=1)
    keep = int(is_pad.logical_not().nonzero().max().item()) + 1 if bool(is_pad.logical_not().any()) else 0
    return padded_tensor[:keep]
