"""The one module that imports Accelerate: a typed adapter over ``accelerate.Accelerator``.

Accelerate ships no type information, so every value leaving this module is given a precise type here.
It also guards against launches that Accelerate gets silently wrong on machines without a GPU (the checks
themselves are in ``pta._launch_checks``; the tracker group and types in ``pta._tracker_group``).
"""

# pyright: reportMissingTypeStubs=false, reportUnknownMemberType=false
# pyright: reportUnknownVariableType=false, reportUnknownArgumentType=false
# (the pyright side of mypy.ini's [mypy-pta._accelerate] section: accelerate is untyped, this adapter types it)

from __future__ import annotations

import atexit
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from accelerate.accelerator import Accelerator
from accelerate.data_loader import DataLoaderShard
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.state import AcceleratorState, GradientState, PartialState
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker, filter_trackers, get_available_trackers
from accelerate.utils.operations import send_to_device
from accelerate.utils.dataclasses import DataLoaderConfiguration, DistributedType
from accelerate.utils.random import set_seed as _accelerate_set_seed
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import BatchSampler, DataLoader

from pta._data import SkipSampler, on_cpu
from pta._elastic import init_elastic_cpu_group
from pta._files import chmod_tree_like_open
from pta._launch_checks import (LaunchError, check_sharding_plugins, check_world_size, fill_launch_defaults,
                                has_accelerator_device, launched_world_size)
from pta._tracker_group import TRACKER_PACKAGES, ExperimentTracker, TrackerConfigValue, TrackerGroup, TrackerSpec
from pta._tracker_routing import route_tracker_output
from pta._types import AcceleratorKwargs

__all__ = [  # LaunchError and the tracker types live in accelerate-free modules: re-exported
    "TRACKER_PACKAGES", "AcceleratorAdapter", "ExperimentTracker", "LaunchError", "TrackerConfigValue",
    "TrackerGroup", "TrackerSpec", "local_process_index", "notebook_launcher", "prepared_batches", "process_index",
    "reset_accelerate_state", "set_seed", "skip_first_batches", "start_trackers", "wait_for_everyone"]

T = TypeVar("T")


@functools.cache
def _destroy_process_group_at_exit() -> None:
    """Register (once) a teardown of the default process group before interpreter finalisation:
    gloo can abort ("terminate called without an active exception") when its threads die during
    shutdown of a user's script."""

    def destroy() -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            _partial_state().destroy_process_group()

    atexit.register(destroy)


@functools.cache
def _accepts_set_to_none(zero_grad: Callable[..., None]) -> bool:
    return "set_to_none" in inspect.signature(zero_grad).parameters


def fill_transfer_defaults(kwargs: AcceleratorKwargs, cuda: bool) -> AcceleratorKwargs:
    """With CUDA, copy batches to the GPU without a sync per tensor (Accelerate's default blocks on each)
    unless the user configured data loading: pta's loaders pin memory there, so the copy is safe."""
    if cuda and "dataloader_config" not in kwargs:
        return {**kwargs, "dataloader_config": DataLoaderConfiguration(non_blocking=True)}
    return kwargs


class AcceleratorAdapter:
    """Typed view of one ``accelerate.Accelerator``; ``.accelerator`` is the raw object for anything else."""

    def __init__(self, kwargs: AcceleratorKwargs) -> None:
        kwargs = fill_transfer_defaults(fill_launch_defaults(kwargs), torch.cuda.is_available())
        check_sharding_plugins(kwargs, None)
        init_elastic_cpu_group(bool(kwargs.get("cpu")), kwargs.get("kwargs_handlers", ()))  # before Accelerate's own
        self.accelerator: Any = Accelerator(**cast(dict[str, Any], kwargs))
        # Facts Accelerate fixes at construction, read once instead of through its properties per step.
        self._num_processes = int(self.accelerator.num_processes)
        self._mixed_precision = str(self.accelerator.mixed_precision)
        self.gradient_state: Any = self.accelerator.gradient_state
        self._direct_backward = False
        check_sharding_plugins(kwargs, self.accelerator.distributed_type)
        self._direct: tuple[Optimizer, Optimizer, bool] | None = None  # (wrapper, inner, zero_grad takes set_to_none)
        self.direct_update: tuple[Optimizer, Optimizer] | None = None
        """(prepared optimizer, the optimizer inside it) where a step of default hooks may call
        ``loss.backward()``, ``inner.step()`` and ``inner.zero_grad(set_to_none=True)`` itself, while
        ``gradient_state.sync_gradients``: what ``backward``, ``optimizer_step`` and ``zero_grad`` call."""
        check_world_size(self.num_processes)
        if self.num_processes > 1:
            _destroy_process_group_at_exit()

    # ------------------------------------------------------------------ process facts
    @property
    def device(self) -> torch.device:
        return cast(torch.device, self.accelerator.device)

    @property
    def num_processes(self) -> int:
        return self._num_processes

    @property
    def process_index(self) -> int:
        return int(self.accelerator.process_index)

    @property
    def is_main_process(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def is_local_main_process(self) -> bool:
        return bool(self.accelerator.is_local_main_process)

    @property
    def is_distributed(self) -> bool:
        return bool(self.accelerator.distributed_type != DistributedType.NO)

    @property
    def distributed_type(self) -> str:
        return str(self.accelerator.distributed_type.value)

    @property
    def mixed_precision(self) -> str:
        return self._mixed_precision

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        return cast("torch.amp.GradScaler | None", self.accelerator.scaler)

    @property
    def steps_can_be_skipped(self) -> bool:
        """Whether ``optimizer_step_was_skipped`` can ever be true in this run (a loss scaler or DeepSpeed)."""
        return not self._direct_backward

    @property
    def optimizer_step_was_skipped(self) -> bool:
        # Without a loss scaler, and outside DeepSpeed (which reports its own overflows), no step is skipped.
        return False if self._direct_backward else bool(self.accelerator.optimizer_step_was_skipped)

    # ------------------------------------------------------------------ preparation
    def prepare(
        self,
        model: nn.Module,
        optimizer: Optimizer | None,
        train_dataloader: DataLoader[Any] | None,
        eval_dataloader: DataLoader[Any] | None,
    ) -> tuple[nn.Module, Optimizer | None, DataLoader[Any] | None, DataLoader[Any] | None]:
        """One ``Accelerator.prepare`` call for everything (DeepSpeed and FSDP need them together)."""
        given = [obj for obj in (model, optimizer, train_dataloader, eval_dataloader) if obj is not None]
        prepared = iter(self.accelerator.prepare(*given))
        result = cast(
            "tuple[nn.Module, Optimizer | None, DataLoader[Any] | None, DataLoader[Any] | None]",
            tuple(next(prepared) if obj is not None else None
                  for obj in (model, optimizer, train_dataloader, eval_dataloader)),
        )
        self._decide_direct_calls(result[1])
        return result

    # Accelerate's wrappers cost tens of microseconds per step (a package lookup on disk in
    # ``AcceleratedOptimizer.step``, a signature inspection in ``zero_grad``, a division by one in
    # ``backward``). Where the wrapper provably does nothing but call through, pta calls through.
    def _decide_direct_calls(self, optimizer: Optimizer | None) -> None:
        self._direct_backward = self._plain_autograd()
        self._direct = direct = self._direct_for(optimizer)
        self.direct_update = direct[:2] if direct is not None and direct[2] else None

    def _plain_autograd(self) -> bool:
        acc = self.accelerator
        return bool(
            acc.distributed_type not in (DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM, DistributedType.XLA)
            and acc.scaler is None
            and acc.gradient_accumulation_steps == 1
            and not getattr(acc, "has_lomo_optimizer", False)
        )

    def _direct_for(self, optimizer: Optimizer | None) -> tuple[Optimizer, Optimizer, bool] | None:
        """Decided once per ``prepare``: the optimizer inside ``AcceleratedOptimizer`` when calling it
        directly is equivalent. Per step, ``optimizer_step`` and ``zero_grad`` also check that it is
        this optimizer and that Accelerate is not accumulating (inline: they run every step)."""
        if optimizer is None or type(optimizer) is not AcceleratedOptimizer or not self._direct_backward:
            return None
        inner: Optimizer = optimizer.optimizer
        if type(inner).__module__.startswith("lomo_optim"):
            return None
        return optimizer, inner, _accepts_set_to_none(type(inner).zero_grad)

    def unwrap_model(self, model: nn.Module, keep_torch_compile: bool = True) -> nn.Module:
        return cast(nn.Module, self.accelerator.unwrap_model(model, keep_torch_compile=keep_torch_compile))

    # ------------------------------------------------------------------ the step
    def backward(self, loss: torch.Tensor) -> None:
        if self._direct_backward:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def optimizer_step(self, optimizer: Optimizer) -> None:
        direct = self._direct
        if direct is None or optimizer is not direct[0] or not self.gradient_state.sync_gradients:
            optimizer.step()
            return
        direct[1].step()
        # What an LR scheduler's wrapper around ``optimizer.step`` records, so it does not warn
        # that it stepped before the optimizer.
        optimizer._opt_called = True  # type: ignore[attr-defined]  # torch.optim.lr_scheduler's marker

    def zero_grad(self, optimizer: Optimizer) -> None:
        direct = self._direct
        if direct is None or optimizer is not direct[0] or not direct[2] or not self.gradient_state.sync_gradients:
            optimizer.zero_grad()
        else:
            direct[1].zero_grad(set_to_none=True)  # what AcceleratedOptimizer.zero_grad() passes

    def update(self, loss: torch.Tensor, optimizer: Optimizer) -> None:
        """``backward``, ``optimizer_step`` and ``zero_grad``: a step of default hooks where ``direct_update``
        does not apply (``TrainerStep._default_update`` makes its calls itself where it does)."""
        self.backward(loss)
        self.optimizer_step(optimizer)
        self.zero_grad(optimizer)

    def autocast(self) -> AbstractContextManager[None]:
        return cast(AbstractContextManager[None], self.accelerator.autocast())

    def no_sync(self, model: nn.Module) -> AbstractContextManager[None]:
        if not hasattr(model, "no_sync"):
            return nullcontext()
        return cast(AbstractContextManager[None], self.accelerator.no_sync(model))

    def clip_grad_norm_(self, parameters: Iterator[nn.Parameter], max_norm: float) -> torch.Tensor | None:
        return cast("torch.Tensor | None", self.accelerator.clip_grad_norm_(parameters, max_norm))

    def clip_grad_value_(self, parameters: Iterator[nn.Parameter], clip_value: float) -> None:
        self.accelerator.clip_grad_value_(parameters, clip_value)

    # ------------------------------------------------------------------ collectives
    def gather(self, tensor: T) -> T:
        return cast(T, self.accelerator.gather(tensor))

    def reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.accelerator.reduce(tensor, reduction="sum"))

    def pad_across_processes(self, tensor: T) -> T:
        return cast(T, self.accelerator.pad_across_processes(tensor))

    def wait_for_everyone(self) -> None:
        self.accelerator.wait_for_everyone()

    def print(self, *args: Any, **kwargs: Any) -> None:
        self.accelerator.print(*args, **kwargs)

    def save_state(self, directory: Path) -> None:
        """Model, optimizer, scaler and RNG states in Accelerate's (possibly sharded) format."""
        self.accelerator.save_state(str(directory))
        chmod_tree_like_open(directory)  # safetensors writes 0o600 files

    def load_state(self, directory: Path) -> None:
        self.accelerator.load_state(str(directory))


def set_seed(seed: int, device_specific: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); ``device_specific`` adds the process index."""
    _accelerate_set_seed(seed, device_specific=device_specific)


def reset_accelerate_state() -> None:
    """Forget Accelerate's process-global state (precision, accumulation): for tests and notebooks."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def _partial_state() -> Any:
    """Accelerate's process state, set up as a trainer would set it up (gloo on CPU-only machines)."""
    return PartialState(cpu=True) if launched_world_size() > 1 and not has_accelerator_device() else PartialState()


def process_index() -> int:
    """This process's rank across all machines (0 when not distributed)."""
    return int(_partial_state().process_index)


def local_process_index() -> int:
    """This process's rank on its machine (0 when not distributed)."""
    return int(_partial_state().local_process_index)


def wait_for_everyone() -> None:
    """Block until every process reaches this point (a no-op in a single process)."""
    _partial_state().wait_for_everyone()


def skip_first_batches(dataloader: DataLoader[Any], num_batches: int) -> DataLoader[Any]:
    """``dataloader`` without its first ``num_batches`` batches, skipped by index (nothing is loaded).

    Accelerate's ``SkipBatchSampler`` still builds every skipped batch of indices in Python (time
    grows with the position). Over a plain ``BatchSampler``, whose first ``k`` batches are exactly its
    sampler's first ``k * batch_size`` indices, pta skips those indices in one C call instead.
    """
    from accelerate.data_loader import SkipBatchSampler
    from accelerate.data_loader import skip_first_batches as _skip

    skipped: Any = _skip(dataloader, num_batches)
    skipper = getattr(skipped, "batch_sampler", None)
    if type(skipper) is SkipBatchSampler and type(skipper.batch_sampler) is BatchSampler and skipper.skip_batches:
        inner: BatchSampler = skipper.batch_sampler
        skipper.batch_sampler = BatchSampler(SkipSampler(inner.sampler, skipper.skip_batches * inner.batch_size),
                                             inner.batch_size, inner.drop_last)
        skipper.skip_batches = 0
    return cast("DataLoader[Any]", skipped)


def prepared_batches(dataloader: Iterable[T]) -> Iterator[T]:
    """``iter(dataloader)``, without the per-batch ``send_to_device`` of a CPU-prepared one (9 µs a step)
    where ``on_cpu`` shows the batch is already there. Its iteration keeps all its bookkeeping: only
    while it fetches, its ``device`` (read for nothing but the move) is ``None``; pta moves the rest."""
    device = dataloader.device if type(dataloader) is DataLoaderShard else None
    if device is None or device.type != "cpu":
        return iter(dataloader)
    return _cpu_batches(dataloader, device)


def _cpu_batches(shard: Any, device: torch.device) -> Iterator[Any]:
    batches, non_blocking = iter(shard), shard._non_blocking
    while True:
        shard.device = None
        try:
            batch = next(batches)
        except StopIteration:
            return
        finally:
            shard.device = device  # as prepared, whenever anything but the fetch runs
        yield batch if on_cpu(batch) else send_to_device(batch, device, non_blocking=non_blocking)


def notebook_launcher(function: Callable[..., Any], args: tuple[Any, ...] = (), num_processes: int | None = None,
                      **kwargs: Any) -> None:
    """Accelerate's ``notebook_launcher``: run ``function(*args)`` in ``num_processes`` processes."""
    from accelerate import notebook_launcher as _launch  # type: ignore[attr-defined]  # untyped package

    _launch(function, args, num_processes=num_processes, **kwargs)


# ---------------------------------------------------------------------- experiment trackers
def start_trackers(
    log_with: TrackerSpec | Sequence[TrackerSpec],
    project_name: str,
    logging_dir: str | Path | None = None,
    config: Mapping[str, TrackerConfigValue] | None = None,
    init_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
) -> TrackerGroup:
    """Create and start Accelerate's trackers the way ``Accelerator.init_trackers`` does, without an
    ``Accelerator``; call it on the main process only.

    A tracker named explicitly whose package is missing raises ``ImportError`` naming the package
    (Accelerate itself would drop it silently); ``"all"`` starts every tracker that is installed.
    """
    specs: list[Any] = [log_with] if isinstance(log_with, str) or not isinstance(log_with, Sequence) else list(log_with)
    available = {str(logger_type) for logger_type in get_available_trackers()}
    for spec in specs:
        if isinstance(spec, GeneralTracker) or spec == "all":
            continue
        if not isinstance(spec, str):
            raise TypeError(f"trackers are names or accelerate.tracking.GeneralTracker instances, got {spec!r}")
        if spec not in LOGGER_TYPE_TO_CLASS:
            raise ValueError(f"unknown tracker {spec!r}; Accelerate knows {sorted(LOGGER_TYPE_TO_CLASS)} and 'all'")
        if spec in TRACKER_PACKAGES and spec not in available:
            package = TRACKER_PACKAGES[spec]
            raise ImportError(f"the {spec!r} tracker needs the package {package!r}: pip install {package}")
    directory = str(logging_dir) if logging_dir is not None else None
    kwargs = init_kwargs or {}
    trackers: list[Any] = []
    for spec in filter_trackers(specs, directory):
        if isinstance(spec, GeneralTracker):
            trackers.append(spec)
            continue
        tracker_class: Any = LOGGER_TYPE_TO_CLASS[str(spec)]
        options = route_tracker_output(str(spec), directory, kwargs.get(str(spec), {}))
        if tracker_class.requires_logging_directory:
            trackers.append(tracker_class(project_name, directory, **options))
        else:
            trackers.append(tracker_class(project_name, **options))
    for tracker in trackers:
        tracker.start()
    if config is not None:
        for tracker in trackers:
            tracker.store_init_configuration(dict(config))
    return TrackerGroup(trackers)
