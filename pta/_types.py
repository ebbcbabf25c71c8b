"""Typed shapes shared across pta: batch outputs, accelerator options, precision names."""

from __future__ import annotations

from typing import Any, Literal, Protocol, TypedDict

from torch import Tensor
from torch.utils.data import Dataset, IterableDataset
from typing_extensions import NotRequired, Required, TypeVar

MixedPrecision = Literal["no", "fp16", "bf16", "fp8"]
"""The precisions Accelerate knows; ``"no"`` is full precision."""

BatchT = TypeVar("BatchT", default=Any)
"""The batch type a trainer's dataloaders yield; parametrise a trainer with it (``DefaultTrainer[MyBatch]``)."""


class SizedIndexable(Protocol):
    """A map-style dataset that is not a ``torch.utils.data.Dataset``, e.g. a Hugging Face ``datasets.Dataset``."""

    def __getitem__(self, index: int, /) -> Any: ...

    def __len__(self) -> int: ...


DatasetLike = Dataset[Any] | IterableDataset[Any] | SizedIndexable
"""What ``train()``, ``evaluate()`` and ``predict()`` take as datasets. A ``DataLoader`` is not one (the
trainer builds its own; pass ``train_dataloader_kwargs`` instead) and a tensor is refused at run time
(wrap it in ``TensorDataset``)."""


class BatchOutput(TypedDict, total=False):
    """What ``calculate_train_batch_loss`` / ``calculate_eval_batch_loss`` return.

    ``loss`` is required: the mean loss of the batch. ``batch_size`` weights the batch in epoch means
    (inferred from the batch when missing). ``num_items_in_batch`` (e.g. non-padding tokens) replaces
    ``batch_size`` as the weight under gradient accumulation. To return more keys, subclass it::

        class MyOutput(BatchOutput):
            logits: Tensor
    """

    loss: Required[Tensor]
    model_outputs: Any
    batch_size: int
    num_items_in_batch: NotRequired[int | Tensor]


class AcceleratorKwargs(TypedDict, total=False):
    """Keyword arguments for ``accelerate.Accelerator``, built cooperatively by ``accelerator_kwargs()``.

    Values are Accelerate's own objects (plugins, configurations); see Accelerate's documentation.
    """

    cpu: bool
    mixed_precision: MixedPrecision
    dataloader_config: Any
    kwargs_handlers: list[Any]
    deepspeed_plugin: Any
    fsdp_plugin: Any
    log_with: Any
    project_dir: str
    rng_types: list[str]
    dynamo_backend: str
