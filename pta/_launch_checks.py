"""Launch checks that need no Accelerate import: what was launched against what Accelerate set up.

``pta._accelerate`` runs them around creating its ``Accelerator`` (it re-exports them); they guard against
launches that Accelerate gets silently wrong on machines without a GPU.
"""

from __future__ import annotations

import os

import torch

from pta._types import AcceleratorKwargs
from pta._validation import ConfigurationError


class LaunchError(RuntimeError):
    """The processes that were launched do not agree with what Accelerate set up."""


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def has_accelerator_device() -> bool:
    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return True
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def fill_launch_defaults(kwargs: AcceleratorKwargs) -> AcceleratorKwargs:
    """A multi-process launch (``torchrun``) on a machine without a GPU must use gloo on CPU.

    Without ``cpu=True`` Accelerate starts every process as its own single-process "main" run: the
    processes never synchronise and nothing reports it.
    """
    if launched_world_size() > 1 and not has_accelerator_device() and "cpu" not in kwargs:
        kwargs = {**kwargs, "cpu": True}
    return kwargs


def check_world_size(num_processes: int) -> None:
    launched = launched_world_size()
    dist_world = (
        torch.distributed.get_world_size()
        if torch.distributed.is_available() and torch.distributed.is_initialized()
        else None
    )
    for name, size in (("WORLD_SIZE", launched), ("torch.distributed world size", dist_world)):
        if size is not None and size != num_processes:
            raise LaunchError(
                f"{name} is {size} but Accelerate set up {num_processes} process(es): the processes "
                "would train without synchronising. On a machine without a GPU launch with "
                "`torchrun --nproc_per_node N script.py` (pta selects CPU/gloo itself) or "
                "`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N script.py`; "
                "`accelerate launch --cpu --num_processes N` starts only one process."
            )


_SHARDING_PLUGINS = {"fsdp_plugin": "FSDP", "deepspeed_plugin": "DEEPSPEED"}
"""Accelerate's ``DistributedType`` value (a ``str`` enum) under which each plugin takes effect."""


def check_sharding_plugins(kwargs: AcceleratorKwargs, distributed_type: str | None) -> None:
    """Accelerate ignores an FSDP or DeepSpeed plugin unless the launch is multi-accelerator (it then runs
    DDP or a single process with no sharding and says nothing): refuse that. Checked before the
    Accelerator exists where the answer is certain (no GPU, or ``cpu=True``), and after it otherwise."""
    for name, wanted in _SHARDING_PLUGINS.items():
        if kwargs.get(name) is None:
            continue
        on_cpu = bool(kwargs.get("cpu")) or not has_accelerator_device()
        if distributed_type is None and not on_cpu:
            continue
        if distributed_type == wanted:
            continue
        several = launched_world_size() > 1
        actual = ("DDP" if several else "one process") + (" on CPU" if on_cpu else "")
        raise ConfigurationError(
            f"accelerator_options[{name!r}] would be ignored: Accelerate uses {wanted} only when several "
            f"GPUs (or other accelerators) are launched with `accelerate launch` or `torchrun`, and this run "
            f"would silently be {actual} without sharding. Remove it from accelerator_options, or launch on "
            "several GPUs."
        )
