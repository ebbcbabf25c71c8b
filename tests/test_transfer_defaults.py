"""With CUDA, batches are copied to the GPU without a sync per tensor unless the user configured data loading.

The sync itself is measured on a GPU (tests/test_cuda_perf.py); here, which options reach Accelerate.
"""

from __future__ import annotations

from accelerate import DataLoaderConfiguration  # type: ignore[attr-defined]  # accelerate ships no type information

from pta._accelerate import fill_transfer_defaults
from pta._types import AcceleratorKwargs


def test_with_cuda_the_default_copy_does_not_block() -> None:
    filled = fill_transfer_defaults(AcceleratorKwargs(mixed_precision="bf16"), cuda=True)
    config = filled.get("dataloader_config")
    assert config is not None
    assert config.non_blocking is True
    assert filled.get("mixed_precision") == "bf16"
    default = DataLoaderConfiguration()
    for option in ("split_batches", "dispatch_batches", "even_batches", "use_seedable_sampler", "use_stateful_dataloader"):
        assert getattr(config, option) == getattr(default, option)  # only the copy changes


def test_without_cuda_or_with_the_users_configuration_nothing_changes() -> None:
    assert fill_transfer_defaults(AcceleratorKwargs(), cuda=False) == AcceleratorKwargs()
    mine = DataLoaderConfiguration(non_blocking=False, even_batches=False)
    assert fill_transfer_defaults(AcceleratorKwargs(dataloader_config=mine), cuda=True).get("dataloader_config") is mine
