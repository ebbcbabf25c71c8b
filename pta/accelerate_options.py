"""Accelerate's option objects, typed, for ``accelerator_options=``: no checker configuration for accelerate needed.

Accelerate ships no ``py.typed``, so importing it in user code is ``import-untyped`` under mypy and
``reportMissingTypeStubs`` under pyright. These names are Accelerate's own classes at run time; type
checkers see the declarations below (their constructors' keyword arguments, as of accelerate 1.15)::

    from pta.accelerate_options import DataLoaderConfiguration, DistributedDataParallelKwargs

    trainer = DefaultTrainer(model, loss, optimizer, accelerator_options={
        "dataloader_config": DataLoaderConfiguration(even_batches=False),
        "kwargs_handlers": [DistributedDataParallelKwargs(find_unused_parameters=True)],
    })

Like ``pta._accelerate``, this module imports accelerate at run time; checkers never follow that import.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

__all__ = [
    "AutocastKwargs",
    "DataLoaderConfiguration",
    "DeepSpeedPlugin",
    "DistributedDataParallelKwargs",
    "FullyShardedDataParallelPlugin",
    "GradScalerKwargs",
    "InitProcessGroupKwargs",
    "ProjectConfiguration",
]

if TYPE_CHECKING:

    class DataLoaderConfiguration:
        split_batches: bool
        dispatch_batches: bool | None
        even_batches: bool
        use_seedable_sampler: bool
        data_seed: int | None
        non_blocking: bool
        use_stateful_dataloader: bool

        def __init__(self, split_batches: bool = False, dispatch_batches: bool | None = None, even_batches: bool = True,
                     use_seedable_sampler: bool = False, data_seed: int | None = None, non_blocking: bool = False,
                     use_stateful_dataloader: bool = False) -> None: ...

    class KwargsHandler:
        """Base of the ``*Kwargs`` handlers that go into ``kwargs_handlers``."""

        def to_kwargs(self) -> dict[str, Any]: ...

    class DistributedDataParallelKwargs(KwargsHandler):
        def __init__(self, dim: int = 0, broadcast_buffers: bool = True, bucket_cap_mb: int = 25,
                     find_unused_parameters: bool = False, check_reduction: bool = False,
                     gradient_as_bucket_view: bool = False, static_graph: bool = False, comm_hook: Any = ...,
                     comm_wrapper: Any = ..., comm_state_option: dict[str, Any] | None = None) -> None: ...

    class GradScalerKwargs(KwargsHandler):
        def __init__(self, init_scale: float = 65536.0, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                     growth_interval: int = 2000, enabled: bool = True) -> None: ...

    class InitProcessGroupKwargs(KwargsHandler):
        def __init__(self, backend: str | None = "nccl", init_method: str | None = None,
                     timeout: timedelta | None = None) -> None: ...

    class AutocastKwargs(KwargsHandler):
        def __init__(self, enabled: bool = True, cache_enabled: bool | None = None) -> None: ...

    class ProjectConfiguration:
        def __init__(self, project_dir: str | None = None, logging_dir: str | None = None,
                     automatic_checkpoint_naming: bool = False, total_limit: int | None = None, iteration: int = 0,
                     save_on_each_node: bool = False) -> None: ...

    class DeepSpeedPlugin:
        def __init__(self, hf_ds_config: Any = None, gradient_accumulation_steps: int | None = None,
                     gradient_clipping: float | None = None, zero_stage: int | None = None,
                     is_train_batch_min: bool = True, offload_optimizer_device: str | None = None,
                     offload_param_device: str | None = None, offload_optimizer_nvme_path: str | None = None,
                     offload_param_nvme_path: str | None = None, zero3_init_flag: bool | None = None,
                     zero3_save_16bit_model: bool | None = None, transformer_moe_cls_names: str | None = None,
                     enable_msamp: bool | None = None, msamp_opt_level: Literal["O1", "O2"] | None = None) -> None: ...

    class FullyShardedDataParallelPlugin:
        """Its ~30 keyword arguments (``fsdp_version``, ``sharding_strategy``, ``auto_wrap_policy``, ...) are
        Accelerate's; they are not re-declared here, so they are not checked."""

        def __init__(self, **kwargs: Any) -> None: ...

else:
    from accelerate.utils import (
        AutocastKwargs,
        DataLoaderConfiguration,
        DeepSpeedPlugin,
        DistributedDataParallelKwargs,
        FullyShardedDataParallelPlugin,
        GradScalerKwargs,
        InitProcessGroupKwargs,
        ProjectConfiguration,
    )
