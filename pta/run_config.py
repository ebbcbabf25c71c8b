"""The immutable description of the run in progress (``trainer.run_config``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, cast


@dataclass(frozen=True)
class TrainerRunConfig:
    """Values fixed for one training or evaluation run; same fields as pytorch-accelerated's.

    ``num_update_steps_per_epoch`` counts optimizer updates of the whole run per epoch, which every
    process performs in lockstep; ``num_local_update_steps_per_epoch`` is the same number as seen by
    one process (they are equal: each update is one step on every process at once).
    ``max_num_train_steps`` counts optimizer updates; ``None`` means "as many as the epochs give".
    """

    num_epochs: int
    train_per_device_batch_size: int | None
    train_dl_kwargs: dict[str, Any] | None
    eval_per_device_batch_size: int | None
    eval_dl_kwargs: dict[str, Any] | None
    gradient_accumulation_steps: int
    gradient_clip_value: float | None
    train_total_batch_size: int | None
    eval_total_batch_size: int | None
    num_update_steps_per_epoch: int
    num_local_update_steps_per_epoch: int
    max_num_train_steps: int | None
    is_local_process_zero: bool
    is_world_process_zero: bool
    is_distributed: bool
    mixed_precision: str
    num_processes: int
    gradient_clip_norm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the fields; dataloader kwargs are copied shallowly (samplers are not deep-copied)."""
        result: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            result[field.name] = dict(cast("dict[str, Any]", value)) if isinstance(value, dict) else value
        return result
