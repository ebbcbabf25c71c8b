"""Dataloader and batch helpers of the default hooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from torch import Tensor


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
    items = cast("Sequence[Any]", batch) if isinstance(batch, (list, tuple)) else ()
    if len(items) >= 2 and isinstance(items[1], Tensor):
        return items[0], items[1]
    raise TypeError(
        "the default calculate_*_batch_loss expects batches of (inputs, targets, ...) with tensor targets, "
        f"got {type(cast(object, batch)).__name__}; override calculate_train_batch_loss / calculate_eval_batch_loss"
    )

