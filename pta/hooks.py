"""The state every trainer shares and every hook of the loop, each a documented default.

``TrainerBase`` (pta.base) adds the loop itself; this module only keeps the file sizes sane. Mixins
and users subclass ``TrainerBase``, never ``TrainerHooks`` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, IterableDataset
from typing_extensions import override

from pta import _validation as check
from pta._accelerate import AcceleratorAdapter, prepared_batches
from pta._capabilities import NeedsAMPMixin, has_capability
from pta._composition import LOOP_MODULES, HookChainError, check_requires, check_trainer_class
from pta._data import inputs_and_targets, merge_dl_kwargs
from pta._meter import LossMeter, infer_batch_size
from pta._step_plan import CALL_EVERY_HOOK
from pta._types import AcceleratorKwargs, BatchOutput, BatchT, MixedPrecision
from pta.callbacks.base import CallbackHandler, TrainerCallback
from pta.interrupt import InterruptFlag
from pta.protocols import SchedulerFactory, SchedulerLike, TrainerLike
from pta.run_config import TrainerRunConfig
from pta.tracking import InMemoryRunHistory, RunHistory
from pta.utils import limit_batches_from_env, worker_init_fn

CallbackSpec = TrainerCallback | Callable[[], TrainerCallback]
"""A callback instance, or a class the trainer instantiates without arguments."""
T = TypeVar("T")


class TrainerHooks(Generic[BatchT]):
    """Shared state and hooks of ``TrainerBase``; docs/loop.md gives the order in which the loop calls them."""

    requires: ClassVar[tuple[type[TrainerHooks[Any]], ...]] = ()
    """Mixins this class needs in the same trainer; checked when a trainer is constructed."""
    default_callbacks: ClassVar[tuple[CallbackSpec, ...]] = ()
    # What a composition can do is declared by its mixins (``pta._capabilities``), not here: the
    # constructor's and train()'s overloads then tell the type checker which arguments it accepts.

    @override
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_trainer_class(cls)  # broken hook chains and misspelled hooks fail here, once per class

    def __init__(
        self,
        model: nn.Module,
        loss_func: Callable[..., Tensor] | None,
        optimizer: Optimizer | None,
        callbacks: Iterable[CallbackSpec] | None = None,
        run_history: RunHistory | None = None,
        *,
        mixed_precision: NeedsAMPMixin | None = None,  # AMPMixin's constructor accepts a precision
        seed: int | None = None,
        accelerator_options: AcceleratorKwargs | None = None,
        interrupt_state_dir: str | Path | None = "training_state/interrupted",
    ) -> None:
        check_requires(self)
        if mixed_precision is not None and not has_capability(self, "supports_mixed_precision"):
            raise check.needs_mixin("mixed_precision", "AMPMixin", type(self))
        self.model = model
        self.loss_func = loss_func
        self.optimizer = optimizer
        specs = list(self.default_callbacks if callbacks is None else callbacks)
        limit = limit_batches_from_env()
        if limit is not None:  # PT_ACC_LIMIT_BATCHES / pta.utils.LimitBatches, as in pytorch-accelerated
            from pta.callbacks.limits import LimitBatchesCallback

            specs.insert(0, LimitBatchesCallback(limit))
        self.callback_handler = CallbackHandler(cast("list[TrainerCallback | type[TrainerCallback]]", specs))
        self.run_history: RunHistory = run_history if run_history is not None else InMemoryRunHistory()
        # (NeedsAMPMixin has no instances: the value is a precision or None)
        self.mixed_precision: MixedPrecision | None = cast("MixedPrecision | None", mixed_precision)
        self.seed = seed
        self.accelerator_options = AcceleratorKwargs(**accelerator_options) if accelerator_options else AcceleratorKwargs()
        self.create_scheduler_fn: SchedulerFactory | None = None
        self.collate_fn: Callable[[list[Any]], Any] | None = None
        self.train_dataset: Any = None
        self.eval_dataset: Any = None
        self._train_dataloader: DataLoader[Any] | None = None
        self._eval_dataloader: DataLoader[Any] | None = None
        self._train_dl_kwargs: dict[str, Any] | None = None
        self._eval_dl_kwargs: dict[str, Any] | None = None
        self._run_config: TrainerRunConfig | None = None
        self._step_plan = CALL_EVERY_HOOK  # replaced at each epoch's start (pta._step_plan)
        self._train_loss = LossMeter()
        self._eval_loss = LossMeter()
        self._num_updates = 0
        self._user_num_updates: int | None = None  # what user code assigned to num_updates, if anything
        self._eval_step_is_padding = False
        self.interrupt_state_dir = interrupt_state_dir
        self._interrupt = InterruptFlag()
        self._first_epoch = 1  # the run history's epoch at which the current train() started
        self._epoch_phase = "train"  # "train", "eval" (training part done) or "done" (whole epoch done)
        self._batches_done = 0
        self._epoch_rng: dict[str, Any] | None = None
        self._resume: dict[str, Any] | None = None
        self._reached: set[str] = set()
        self._accelerator = self._create_accelerator()
        self.callback_handler.call_event("on_init_end", cast(TrainerLike, self))  # every instance is a TrainerBase

    # ------------------------------------------------------------------ hook chains
    def _call_chain(self, name: str, hook: Callable[[], T]) -> T:
        """Call a cooperative hook and fail loudly if an override did not reach ``TrainerBase``."""
        self._reached.discard(name)
        result = hook()
        self._require_reached(name)
        return result

    def _require_reached(self, name: str) -> None:
        if name not in self._reached:
            owners = [k.__name__ for k in type(self).__mro__ if name in vars(k) and k.__module__ not in LOOP_MODULES]
            raise HookChainError(
                f"{name}() did not reach TrainerBase.{name}(): one of the overrides in "
                f"{', '.join(owners)} is missing a call to super().{name}()"
            )

    def _mark(self, name: str) -> None:
        self._reached.add(name)

    # ------------------------------------------------------------------ accelerator
    def accelerator_kwargs(self) -> AcceleratorKwargs:
        """Builder for ``accelerate.Accelerator`` options; overrides call ``super()`` first and extend."""
        self._mark("accelerator_kwargs")
        return AcceleratorKwargs(**self.accelerator_options)

    def _create_accelerator(self) -> AcceleratorAdapter:
        accelerator = AcceleratorAdapter(self._call_chain("accelerator_kwargs", self.accelerator_kwargs))
        if accelerator.num_processes > 1 and not has_capability(self, "places_on_device"):
            raise check.needs_mixin("a multi-process launch", "DevicePlacementMixin", type(self))
        return accelerator

    if not TYPE_CHECKING:  # invisible to checkers, so that reading it is a type error where it is written
        # not __getattr__: CPython does not specialise attribute reads on a class that has one (slower loop)
        @property
        def scheduler(self) -> Any:
            if not has_capability(self, "supports_schedulers"):
                raise AttributeError(f"{type(self).__name__} has no scheduler: add SchedulerMixin to its bases "
                                     "(or use DefaultTrainer) and pass create_scheduler_fn to train()")
            return None  # SchedulerMixin's attribute (which overrides this) is what is read once it exists

    def _scheduler_or_none(self) -> SchedulerLike | None:
        """The run's scheduler, where the trainer has one (``SchedulerMixin``)."""
        return None

    # ------------------------------------------------------------------ public state
    @property
    def run_config(self) -> TrainerRunConfig:
        if self._run_config is None:
            raise RuntimeError("run_config exists once train() or evaluate() has started")
        return self._run_config

    @run_config.setter
    def run_config(self, config: TrainerRunConfig | None) -> None:
        """Assignable as in pytorch-accelerated (to call hooks outside a run); a run sets its own."""
        self._run_config = config

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are (``DevicePlacementMixin`` answers Accelerate's device)."""
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    @property
    def is_local_main_process(self) -> bool:
        return self._accelerator.is_local_main_process

    @property
    def is_world_main_process(self) -> bool:
        return self._accelerator.is_main_process

    @property
    def train_dataloader(self) -> DataLoader[Any] | None:
        """The run's training dataloader (prepared), or what a callback set in its place."""
        return self._train_dataloader

    @train_dataloader.setter
    def train_dataloader(self, dataloader: Iterable[Any] | None) -> None:
        """Replace the loader the loop reads from the next epoch on (e.g. a wrapper that limits batches)."""
        self._train_dataloader = cast("DataLoader[Any] | None", dataloader)  # any sized iterable of batches works

    @property
    def eval_dataloader(self) -> DataLoader[Any] | None:
        """The run's evaluation dataloader (prepared), or what a callback set in its place."""
        return self._eval_dataloader

    @eval_dataloader.setter
    def eval_dataloader(self, dataloader: Iterable[Any] | None) -> None:
        self._eval_dataloader = cast("DataLoader[Any] | None", dataloader)

    @property
    def num_updates(self) -> int:
        """Optimizer updates done in the current training run (continued across a resume).

        Assignable as in pytorch-accelerated, whose timm examples keep their own count in it: after
        ``trainer.num_updates = n`` it reads ``n`` (and ``+= 1`` works on it), while the loop keeps
        counting in its own state; assigning ``None`` makes it read the loop's count again."""
        return self._num_updates if self._user_num_updates is None else self._user_num_updates

    @num_updates.setter
    def num_updates(self, value: int | None) -> None:
        self._user_num_updates = value

    @property
    def eval_step_is_padding(self) -> bool:
        """True during an evaluation step that repeats a batch only to keep processes in step."""
        return self._eval_step_is_padding

    def get_model(self, keep_torch_compile: bool = True) -> nn.Module:
        """The user's model (without ``torch.compile``'s wrapper when ``keep_torch_compile=False``)."""
        if not keep_torch_compile and isinstance(self.model, torch._dynamo.eval_frame.OptimizedModule):
            return self.model._orig_mod
        return self.model

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` once per machine."""
        self._accelerator.print(*args, **kwargs)

    def gather(self, tensor: Tensor, padding_value: float | None = None) -> Tensor:
        """Concatenate ``tensor`` from all processes along dim 0, each process's rows exactly once.

        Shapes may differ along dim 0: rows are padded for the transfer and trimmed by the real sizes
        afterwards, so ``padding_value`` (kept for compatibility) is never needed.
        """
        return self._gather_rows(tensor)

    def _gather_rows(self, tensor: Tensor) -> Tensor:
        local = tensor.reshape(1) if tensor.ndim == 0 else tensor
        if self._accelerator.num_processes == 1:
            return local
        sizes = [int(n) for n in self._accelerator.gather(torch.tensor([local.shape[0]], device=local.device))]
        padded = self._accelerator.pad_across_processes(local)
        gathered = self._accelerator.gather(padded)
        width = padded.shape[0]
        return torch.cat([gathered[i * width : i * width + n] for i, n in enumerate(sizes)])

    # ------------------------------------------------------------------ dataloaders (user hooks)
    def get_default_train_dl_kwargs(self, batch_size: int) -> dict[str, Any]:
        # an IterableDataset has its own order: a DataLoader cannot shuffle it
        return {"shuffle": not isinstance(self.train_dataset, IterableDataset),
                "pin_memory": torch.cuda.is_available(), "batch_size": batch_size,
                "num_workers": 0, "worker_init_fn": worker_init_fn}

    def get_default_eval_dl_kwargs(self, batch_size: int) -> dict[str, Any]:
        return {"shuffle": False, "pin_memory": torch.cuda.is_available(), "batch_size": batch_size,
                "num_workers": 0, "worker_init_fn": worker_init_fn}

    def create_train_dataloader(self, batch_size: int, train_dl_kwargs: dict[str, Any] | None = None) -> DataLoader[Any]:
        self._train_dl_kwargs = merge_dl_kwargs(self.get_default_train_dl_kwargs(batch_size), train_dl_kwargs)
        return DataLoader(self.train_dataset, collate_fn=self.collate_fn, **self._train_dl_kwargs)

    def create_eval_dataloader(self, batch_size: int, eval_dl_kwargs: dict[str, Any] | None = None) -> DataLoader[Any]:
        self._eval_dl_kwargs = merge_dl_kwargs(self.get_default_eval_dl_kwargs(batch_size), eval_dl_kwargs)
        return DataLoader(self.eval_dataset, collate_fn=self.collate_fn, **self._eval_dl_kwargs)

    # ------------------------------------------------------------------ run-level hooks
    def prepare_components(self) -> None:
        """Wrap the model, optimizer and dataloaders for the hardware (``DevicePlacementMixin``)."""
        self._mark("prepare_components")

    def configure_run(self) -> None:
        """Set up per-run objects once ``run_config`` exists (scheduler, evaluation sharding)."""
        self._mark("configure_run")

    def create_scheduler(self) -> SchedulerLike:
        """Call ``create_scheduler_fn`` with the prepared optimizer (``SchedulerMixin`` resolves placeholders)."""
        if self.create_scheduler_fn is None or self.optimizer is None:
            raise RuntimeError("create_scheduler() needs create_scheduler_fn and an optimizer")
        return self.create_scheduler_fn(self.optimizer)

    def training_run_start(self) -> None:
        """Start of a training run; mixins create their per-run state here."""
        self._mark("training_run_start")

    def training_run_epoch_end(self) -> None:
        """After the training and evaluation epochs of one epoch."""

    def training_run_end(self) -> None:
        """End of a training run."""
        self._mark("training_run_end")

    def evaluation_run_start(self) -> None:
        """Start of an evaluation run."""
        self._mark("evaluation_run_start")

    def evaluation_run_end(self) -> None:
        """End of an evaluation run."""
        self._mark("evaluation_run_end")

    # ------------------------------------------------------------------ epoch and step hooks
    def train_epoch_start(self) -> None:
        """Start of a training epoch: puts the model in training mode."""
        self.model.train()
        self._mark("train_epoch_start")

    def train_epoch_end(self) -> None:
        """End of a training epoch, before its loss is recorded."""

    def eval_epoch_start(self) -> None:
        """Start of an evaluation epoch: puts the model in eval mode."""
        self.model.eval()
        self._mark("eval_epoch_start")

    def eval_epoch_end(self) -> None:
        """End of an evaluation epoch, before its loss is recorded."""

    def forward_context(self) -> AbstractContextManager[None]:
        """Context for the batch-loss hooks (``AMPMixin``: autocast)."""
        return nullcontext()

    def train_step_context(self, is_update_step: bool) -> AbstractContextManager[None]:
        """Context around forward and backward of one step (``GradAccumMixin``: ``no_sync`` between updates)."""
        return nullcontext()

    def is_update_step(self, step: int, num_batches: int | None) -> bool:
        """Whether the optimizer steps after batch ``step`` (``GradAccumMixin``: at window ends)."""
        return True

    def scale_loss(self, loss: Tensor, batch_output: BatchOutput, batch_size: int) -> Tensor:
        """The loss to back-propagate (``GradAccumMixin`` weights it within its window)."""
        return loss

    def _batch_loss(self, compute: Callable[[BatchT], BatchOutput], batch: BatchT) -> tuple[BatchOutput, Tensor, int]:
        if not self._step_plan.forward_context:
            result: Any = compute(batch)  # checked below: user hooks may return anything
        else:
            with self.forward_context():
                result = compute(batch)
        if result.__class__ is not dict or not isinstance(result.get("loss"), Tensor):  # the common case: no call
            result = check.check_batch_output(compute.__name__, result)
        size = result.get("batch_size")
        return result, result["loss"], int(size) if size is not None else infer_batch_size(batch)

    def calculate_train_batch_loss(self, batch: BatchT) -> BatchOutput:
        """Forward one training batch; the default treats the batch as ``(inputs, targets, ...)``."""
        xb, yb = inputs_and_targets(batch)
        outputs = self.model(xb)
        return {"loss": self._loss(outputs, yb), "model_outputs": outputs, "batch_size": yb.shape[0]}

    def calculate_eval_batch_loss(self, batch: BatchT) -> BatchOutput:
        """Forward one evaluation batch (already under ``torch.no_grad``)."""
        xb, yb = inputs_and_targets(batch)
        outputs = self.model(xb)
        return {"loss": self._loss(outputs, yb), "model_outputs": outputs, "batch_size": yb.shape[0]}

    def _loss(self, outputs: Any, targets: Any) -> Tensor:
        loss_func = self.loss_func
        if loss_func is None:
            raise TypeError("loss_func is None: pass one, or override calculate_*_batch_loss")
        if type(loss_func) not in check.SHAPE_AGNOSTIC_LOSS_TYPES:
            check.check_loss_shapes(loss_func, outputs, targets)
        return loss_func(outputs, targets)

    def backward_step(self, loss: Tensor) -> None:
        """Back-propagate ``loss`` (already weighted for gradient accumulation)."""
        self._accelerator.backward(loss)

    def before_optimizer_step(self) -> None:
        """Once per update, before ``optimizer_step``: clips gradients (after unscaling, via Accelerate)."""
        config = self.run_config
        if config.gradient_clip_value is not None:
            self._accelerator.clip_grad_value_(self.model.parameters(), config.gradient_clip_value)
        if config.gradient_clip_norm is not None:
            self._accelerator.clip_grad_norm_(self.model.parameters(), config.gradient_clip_norm)

    def optimizer_step(self) -> None:
        assert self.optimizer is not None
        self._accelerator.optimizer_step(self.optimizer)

    def optimizer_step_was_skipped(self) -> bool:
        """Whether the last optimizer step was skipped (``AMPMixin``: fp16 overflow)."""
        return False

    def scheduler_step(self) -> None:
        """Step the scheduler once per update that was not skipped."""
        if (scheduler := self._scheduler_or_none()) is not None:
            scheduler.step()

    def optimizer_zero_grad(self) -> None:
        assert self.optimizer is not None
        self._accelerator.zero_grad(self.optimizer)

    def iterate_eval_batches(self, dataloader: Iterable[BatchT]) -> Iterator[BatchT]:
        """The evaluation batches of this process (``DistributedEvalMixin`` keeps processes in step)."""
        return prepared_batches(dataloader)

    def reduce_epoch_loss(self, meter: LossMeter) -> float:
        """The epoch's mean loss weighted by batch size (``DistributedEvalMixin``: over all processes)."""
        if meter.total is None or meter.count == 0:
            return float("nan")
        return float((meter.total / meter.count).item())
