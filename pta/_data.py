"""Dataloader and batch helpers of the default hooks."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any, cast

from torch import Tensor
from torch.utils.data import Sampler
from typing_extensions import override


def merge_dl_kwargs(defaults: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    overrides = overrides or {}
    if "sampler" in overrides:
        defaults.pop("shuffle", None)
    if "batch_sampler" in overrides:
        for key in ("shuffle", "batch_size", "drop_last", "sampler"):
            defaults.pop(key, None)
    return {**defaults, **overrides}


def length(obj: object) -> int | None:
    """``len(obj)``, or ``None`` for iterables without one (a DataLoader over an IterableDataset)."""
    try:
        return len(obj)  # type: ignore[arg-type]  # probing: TypeError means "no length"
    except TypeError:
        return None


def inputs_and_targets(batch: Any) -> tuple[Any, Tensor]:
    items: Any = batch  # not narrowed by the isinstance below, so no cast() call is needed per step
    if isinstance(batch, (list, tuple)) and len(items) >= 2 and isinstance(items[1], Tensor):
        return items[0], items[1]
    raise TypeError(
        "the default calculate_*_batch_loss expects batches of (inputs, targets, ...) with tensor targets, "
        f"got {type(cast(object, batch)).__name__}; override calculate_train_batch_loss / calculate_eval_batch_loss"
    )


class SkipSampler(Sampler[int]):
    """The indices of ``sampler`` after its first ``count``. The sampler is iterated exactly as before
    (its generator advances identically); the skipped indices are consumed in C, no batch is built."""

    def __init__(self, sampler: Iterable[int], count: int) -> None:
        self.sampler, self.count = sampler, count

    @override
    def __iter__(self) -> Iterator[int]:
        iterator = iter(self.sampler)
        next(itertools.islice(iterator, self.count, self.count), None)
        return iterator

    def __len__(self) -> int:
        return max(len(self.sampler) - self.count, 0)  # type: ignore[arg-type]  # BatchSampler's sampler has a length


def on_cpu(batch: object) -> bool:
    """Whether ``batch`` is a tensor, or a list, tuple or dict of tensors, all exactly ``torch.Tensor``
    and on the CPU: then Accelerate's ``send_to_device(batch, cpu)`` returns these same tensors (``.to``
    of a tensor already there returns it), in a new container of the same type and contents."""
    value: Any = batch  # looked into below only after its type was checked exactly
    kind = type(batch)
    if kind is Tensor:
        return bool(value.is_cpu)
    if kind is list or kind is tuple:
        items = value
    elif kind is dict:
        items = value.values()
    else:
        return False
    for item in items:  # a loop, not all(...): this runs once per batch
        if type(item) is not Tensor or not item.is_cpu:
            return False
    return True


def model_inputs(batch: object) -> Any:
    """``batch[0]`` for a list or tuple batch, else the whole batch."""
    return cast("tuple[Any, ...]", batch)[0] if isinstance(batch, (list, tuple)) else batch
