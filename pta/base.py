"""TrainerBase: the shared state, the loop skeleton and every hook (docs/loop.md gives the call order).

Alone it is a correct single-process, full-precision loop. Mixins (``pta.mixins``) add one behaviour
each by overriding a few hooks; every override calls ``super()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ClassVar, Generic, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from pta import _validation as check
from pta._accelerate import AcceleratorAdapter, set_seed
from pta._meter import LossMeter, infer_batch_size
from pta._types import AcceleratorKwargs, BatchOutput, BatchT, MixedPrecision
from pta.callbacks.base import CallbackHandler, StopTrainingError, TrainerCallback
from pta.checkpoint import CheckpointError, atomic_torch_save, load_torch_file, require_keys
from pta.protocols import SchedulerFactory, SchedulerLike
from pta.run_config import TrainerRunConfig
from pta.tracking import InMemoryRunHistory, RunHistory
from pta.utils import worker_init_fn

CallbackSpec = TrainerCallback | type[TrainerCallback]


class HookChainError(RuntimeError):
    """An override of a cooperative hook did not call ``super()``, so a mixin's behaviour was skipped."""


class TrainerBase(Generic[BatchT]):
    """Owns the state and the loop; see docs/loop.md for the order of hooks and callback events."""

    requires: ClassVar[tuple[type[TrainerBase[Any]], ...]] = ()
    """Mixins this class needs in the same trainer; checked when a trainer is constructed."""
    default_callbacks: ClassVar[tuple[CallbackSpec, ...]] = ()
    # What the composition can do; each mixin switches its own capability on.
    places_on_device: ClassVar[bool] = False
    accumulates_gradients: ClassVar[bool] = False
    supports_mixed_precision: ClassVar[bool] = False
    supports_schedulers: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        loss_func: Callable[..., Tensor] | None,
        optimizer: Optimizer | None,
        callbacks: Iterable[CallbackSpec] | None = None,
        run_history: RunHistory | None = None,
        *,
        mixed_precision: MixedPrecision | None = None,
        seed: int | None = None,
        accelerator_options: AcceleratorKwargs | None = None,
    ) -> None:
        self._check_composition()
        if mixed_precision is not None and not self.supports_mixed_precision:
            raise check.needs_mixin("mixed_precision", "AMPMixin", type(self))
        self.model = model
        self.loss_func = loss_func
        self.optimizer = optimizer
        self.callback_handler = CallbackHandler(self.default_callbacks if callbacks is None else callbacks)
        self.run_history: RunHistory = run_history if run_history is not None else InMemoryRunHistory()
        self.mixed_precision = mixed_precision
        self.seed = seed
        self.accelerator_options = AcceleratorKwargs(**accelerator_options) if accelerator_options else AcceleratorKwargs()
        self.create_scheduler_fn: SchedulerFactory | None = None
        self.scheduler: SchedulerLike | None = None
        self.collate_fn: Callable[[list[Any]], Any] | None = None
        self.train_dataset: Any = None
        self.eval_dataset: Any = None
        self._train_dataloader: DataLoader[Any] | None = None
        self._eval_dataloader: DataLoader[Any] | None = None
        self._train_dl_kwargs: dict[str, Any] | None = None
        self._eval_dl_kwargs: dict[str, Any] | None = None
        self._run_config: TrainerRunConfig | None = None
        self._train_loss = LossMeter()
        self._eval_loss = LossMeter()
        self._num_updates = 0
        self._eval_step_is_padding = False
        self._reached: set[str] = set()
        self._accelerator = self._create_accelerator()
        self.callback_handler.call_event("on_init_end", self)

    # ------------------------------------------------------------------ composition checks
    def _check_composition(self) -> None:
        for klass in type(self).__mro__:
            for needed in vars(klass).get("requires", ()):
                if not isinstance(self, needed):
                    raise check.ConfigurationError(
                        f"{klass.__name__} needs {needed.__name__}, which {type(self).__name__} lacks: "
                        f"add {needed.__name__} to the bases of {type(self).__name__}"
                    )

    def _call_chain(self, name: str, hook: Callable[[], None]) -> None:
        """Call a cooperative hook and fail loudly if an override did not reach ``TrainerBase``."""
        self._reached.discard(name)
        hook()
        self._require_reached(name)

    def _require_reached(self, name: str) -> None:
        if name not in self._reached:
            owners = [k.__name__ for k in type(self).__mro__ if name in vars(k) and k is not TrainerBase]
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
        self._reached.discard("accelerator_kwargs")
        kwargs = self.accelerator_kwargs()
        self._require_reached("accelerator_kwargs")
        accelerator = AcceleratorAdapter(kwargs)
        if accelerator.num_processes > 1 and not self.places_on_device:
            raise check.needs_mixin("a multi-process launch", "DevicePlacementMixin", type(self))
        return accelerator

    # ------------------------------------------------------------------ public state
    @property
    def run_config(self) -> TrainerRunConfig:
        if self._run_config is None:
            raise RuntimeError("run_config exists once train() or evaluate() has started")
        return self._run_config

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
        return self._train_dataloader

    @property
    def eval_dataloader(self) -> DataLoader[Any] | None:
        return self._eval_dataloader

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
        sizes = self._accelerator.gather(torch.tensor([local.shape[0]], device=local.device)).tolist()
        padded = self._accelerator.pad_across_processes(local)
        gathered = self._accelerator.gather(padded)
        width = padded.shape[0]
        return torch.cat([gathered[i * width : i * width + n] for i, n in enumerate(sizes)])

    # ------------------------------------------------------------------ dataloaders (user hooks)
    def get_default_train_dl_kwargs(self, batch_size: int) -> dict[str, Any]:
        return {"shuffle": True, "pin_memory": torch.cuda.is_available(), "batch_size": batch_size,
                "num_workers": 0, "worker_init_fn": worker_init_fn}

    def get_default_eval_dl_kwargs(self, batch_size: int) -> dict[str, Any]:
        return {**self.get_default_train_dl_kwargs(batch_size), "shuffle": False}

    def create_train_dataloader(self, batch_size: int, train_dl_kwargs: dict[str, Any] | None = None) -> DataLoader[Any]:
        self._train_dl_kwargs = _merge_dl_kwargs(self.get_default_train_dl_kwargs(batch_size), train_dl_kwargs)
        return DataLoader(self.train_dataset, collate_fn=self.collate_fn, **self._train_dl_kwargs)

    def create_eval_dataloader(self, batch_size: int, eval_dl_kwargs: dict[str, Any] | None = None) -> DataLoader[Any]:
        self._eval_dl_kwargs = _merge_dl_kwargs(self.get_default_eval_dl_kwargs(batch_size), eval_dl_kwargs)
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
        with self.forward_context():
            result: object = compute(batch)
        if not isinstance(result, Mapping) or "loss" not in result:
            keys = f" with keys {sorted(result)}" if isinstance(result, Mapping) else ""
            raise TypeError(
                f"{compute.__name__} must return a dict with a 'loss' tensor (a BatchOutput), "
                f"got {type(result).__name__}{keys}"
            )
        batch_output = cast(BatchOutput, result)
        size = batch_output.get("batch_size")
        return batch_output, batch_output["loss"], int(size) if size is not None else infer_batch_size(batch)

    def calculate_train_batch_loss(self, batch: BatchT) -> BatchOutput:
        """Forward one training batch; the default treats the batch as ``(inputs, targets, ...)``."""
        xb, yb = _inputs_and_targets(batch)
        outputs = self.model(xb)
        return {"loss": self._loss(outputs, yb), "model_outputs": outputs, "batch_size": yb.size(0)}

    def calculate_eval_batch_loss(self, batch: BatchT) -> BatchOutput:
        """Forward one evaluation batch (already under ``torch.no_grad``)."""
        xb, yb = _inputs_and_targets(batch)
        outputs = self.model(xb)
        return {"loss": self._loss(outputs, yb), "model_outputs": outputs, "batch_size": yb.size(0)}

    def _loss(self, outputs: Any, targets: Any) -> Tensor:
        if self.loss_func is None:
            raise TypeError("loss_func is None: pass one, or override calculate_*_batch_loss")
        return self.loss_func(outputs, targets)

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
        self.optimizer.step()

    def optimizer_step_was_skipped(self) -> bool:
        """Whether the last optimizer step was skipped (``AMPMixin``: fp16 overflow)."""
        return False

    def scheduler_step(self) -> None:
        """Step the scheduler once per update that was not skipped."""
        if self.scheduler is not None:
            self.scheduler.step()

    def optimizer_zero_grad(self) -> None:
        assert self.optimizer is not None
        self.optimizer.zero_grad()

    def iterate_eval_batches(self, dataloader: Iterable[BatchT]) -> Iterator[BatchT]:
        """The evaluation batches of this process (``DistributedEvalMixin`` keeps processes in step)."""
        return iter(dataloader)

    def eval_loop_context(self) -> AbstractContextManager[Any]:
        """Context around the whole evaluation loop."""
        return nullcontext()

    def reduce_epoch_loss(self, meter: LossMeter) -> float:
        """The epoch's mean loss weighted by batch size (``DistributedEvalMixin``: over all processes)."""
        if meter.total is None or meter.count == 0:
            return float("nan")
        return float((meter.total / meter.count).item())

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, save_path: str | Path, checkpoint_kwargs: dict[str, Any] | None = None,
                        save_optimizer: bool = True, save_scheduler: bool = True, save_per_node: bool = True) -> None:
        """Write model (and optimizer/scheduler) state to one file, atomically."""
        checkpoint: dict[str, Any] = {"model_state_dict": self.get_model(keep_torch_compile=False).state_dict()}
        if save_optimizer and self.optimizer is not None:
            checkpoint["optimizer_state_dict"] = self.optimizer.state_dict()
        if save_scheduler and self.scheduler is not None:
            checkpoint["scheduler_state_dict"] = self.scheduler.state_dict()
        checkpoint.update(checkpoint_kwargs or {})
        self._accelerator.wait_for_everyone()
        if self.is_local_main_process if save_per_node else self.is_world_main_process:
            atomic_torch_save(checkpoint, save_path)
        self._accelerator.wait_for_everyone()

    def load_checkpoint(self, checkpoint_path: str | Path, load_optimizer: bool = True,
                        load_scheduler: bool = True, *, weights_only: bool = True) -> dict[str, Any]:
        """Load a file written by ``save_checkpoint``; returns the whole dict (extra keys included).

        ``weights_only=False`` allows arbitrary pickled objects: only for files you trust.
        """
        self._accelerator.wait_for_everyone()
        checkpoint = require_keys(load_torch_file(checkpoint_path, weights_only=weights_only),
                                  checkpoint_path, ("model_state_dict",))
        try:
            self.get_model(keep_torch_compile=False).load_state_dict(checkpoint["model_state_dict"])
        except RuntimeError as error:
            raise CheckpointError(f"checkpoint {checkpoint_path} does not fit the model: {error}") from error
        for key, target, wanted in (("optimizer_state_dict", self.optimizer, load_optimizer),
                                    ("scheduler_state_dict", self.scheduler, load_scheduler)):
            if wanted and key in checkpoint:
                if target is None:
                    raise CheckpointError(f"checkpoint {checkpoint_path} has {key} but the trainer has none; "
                                          f"pass load_{key.split('_')[0]}=False")
                target.load_state_dict(checkpoint[key])
        return checkpoint

    # ------------------------------------------------------------------ entry points
    def train(
        self,
        train_dataset: Any,
        num_epochs: int | None,
        eval_dataset: Any = None,
        per_device_batch_size: int = 8,
        max_num_train_steps: int | None = None,
        gradient_accumulation_steps: int = 1,
        gradient_clip_value: float | None = None,
        create_scheduler_fn: SchedulerFactory | None = None,
        train_dataloader_kwargs: dict[str, Any] | None = None,
        eval_dataloader_kwargs: dict[str, Any] | None = None,
        reset_run_history: bool = True,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        resume_from: str | Path | None = None,
        *,
        gradient_clip_norm: float | None = None,
    ) -> None:
        """Train for ``num_epochs`` (or exactly ``max_num_train_steps`` optimizer updates, which then wins),
        evaluating on ``eval_dataset`` after every epoch. See docs/loop.md for the order of hooks."""
        check.check_dataset("train_dataset", train_dataset)
        check.check_epochs(num_epochs, max_num_train_steps)
        check.check_positive_int("per_device_batch_size", per_device_batch_size)
        check.check_positive_int("gradient_accumulation_steps", gradient_accumulation_steps)
        check.check_positive_float("gradient_clip_value", gradient_clip_value)
        check.check_positive_float("gradient_clip_norm", gradient_clip_norm)
        check.check_scheduler_factory(create_scheduler_fn)
        if eval_dataset is not None:
            check.check_dataset("eval_dataset", eval_dataset)
        if self.optimizer is None:
            raise check.ConfigurationError("train() needs an optimizer: pass optimizer= to the trainer")
        if gradient_accumulation_steps > 1 and not self.accumulates_gradients:
            raise check.needs_mixin("gradient_accumulation_steps > 1", "GradAccumMixin", type(self))
        if create_scheduler_fn is not None and not self.supports_schedulers:
            raise check.needs_mixin("create_scheduler_fn", "SchedulerMixin", type(self))
        if resume_from is not None:
            raise NotImplementedError("resume_from is not supported yet")

        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.create_scheduler_fn, self.collate_fn, self.scheduler = create_scheduler_fn, collate_fn, None
        if reset_run_history:
            self.run_history.reset()
        self._start_run()
        self._train_dataloader = self.create_train_dataloader(per_device_batch_size, train_dataloader_kwargs)
        self._eval_dataloader = (
            self.create_eval_dataloader(per_device_batch_size, eval_dataloader_kwargs)
            if eval_dataset is not None else None
        )
        self._call_chain("prepare_components", self.prepare_components)
        self._run_config = self._create_run_config(
            per_device_batch_size, num_epochs, gradient_accumulation_steps, max_num_train_steps,
            gradient_clip_value, gradient_clip_norm,
        )
        self._call_chain("configure_run", self.configure_run)
        self._run_training()

    def evaluate(
        self,
        dataset: Any = None,
        per_device_batch_size: int = 8,
        dataloader_kwargs: dict[str, Any] | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        """One evaluation epoch over ``dataset``; records ``evaluation_loss`` (the run history is reset)."""
        check.check_dataset("dataset", dataset)
        check.check_positive_int("per_device_batch_size", per_device_batch_size)
        self.eval_dataset, self.collate_fn = dataset, collate_fn
        self.run_history.reset()
        self._start_run()
        self._train_dataloader = None
        self._eval_dataloader = self.create_eval_dataloader(per_device_batch_size, dataloader_kwargs)
        self._call_chain("prepare_components", self.prepare_components)
        self._run_config = self._create_run_config(per_device_batch_size, 1, 1, None, None, None)
        self._call_chain("configure_run", self.configure_run)
        self._call_chain("evaluation_run_start", self.evaluation_run_start)
        self.callback_handler.call_event("on_evaluation_run_start", self)
        try:
            self._run_eval_epoch(self._eval_dataloader, metric_name="evaluation_loss")
        except StopTrainingError as error:
            self._on_stop(error)
        self._call_chain("evaluation_run_end", self.evaluation_run_end)
        self.callback_handler.call_event("on_evaluation_run_end", self)

    # ------------------------------------------------------------------ the loop
    def _start_run(self) -> None:
        self._accelerator = self._create_accelerator()
        if self.seed is not None:
            set_seed(self.seed, device_specific=True)
        self._num_updates = 0

    def _create_run_config(self, batch_size: int, num_epochs: int | None, accumulation: int,
                           max_steps: int | None, clip_value: float | None, clip_norm: float | None) -> TrainerRunConfig:
        acc = self._accelerator
        train_bs = (self._train_dl_kwargs or {}).get("batch_size", batch_size)
        eval_bs = (self._eval_dl_kwargs or {}).get("batch_size", train_bs)
        num_batches = _length(self._train_dataloader) if self._train_dataloader is not None else None
        updates = -(-num_batches // accumulation) if num_batches else 0
        if max_steps is not None and updates:
            num_epochs = -(-max_steps // updates)
        epochs = num_epochs if num_epochs is not None else 1
        return TrainerRunConfig(
            num_epochs=epochs, train_per_device_batch_size=train_bs, train_dl_kwargs=self._train_dl_kwargs,
            eval_per_device_batch_size=eval_bs, eval_dl_kwargs=self._eval_dl_kwargs,
            gradient_accumulation_steps=accumulation, gradient_clip_value=clip_value, gradient_clip_norm=clip_norm,
            train_total_batch_size=train_bs * acc.num_processes * accumulation if train_bs else None,
            eval_total_batch_size=eval_bs * acc.num_processes if eval_bs else None,
            num_update_steps_per_epoch=updates, num_local_update_steps_per_epoch=updates,
            max_num_train_steps=max_steps, is_local_process_zero=acc.is_local_main_process,
            is_world_process_zero=acc.is_main_process, is_distributed=acc.is_distributed,
            mixed_precision=acc.mixed_precision, num_processes=acc.num_processes,
        )

    def _run_training(self) -> None:
        self._call_chain("training_run_start", self.training_run_start)
        self.callback_handler.call_event("on_training_run_start", self)
        first_epoch = self.run_history.current_epoch
        for _ in range(first_epoch, self.run_config.num_epochs + 1):
            try:
                reached_max = self._run_train_epoch()
                if self._eval_dataloader is not None:
                    self._run_eval_epoch(self._eval_dataloader, metric_name="eval_loss_epoch")
                self.training_run_epoch_end()
                self.callback_handler.call_event("on_training_run_epoch_end", self)
                self.run_history._increment_epoch()
            except StopTrainingError as error:
                self._on_stop(error)
                break
            if reached_max:
                self.print(f"Reached max_num_train_steps={self.run_config.max_num_train_steps} optimizer updates")
                break
        self._call_chain("training_run_end", self.training_run_end)
        self.callback_handler.call_event("on_training_run_end", self)

    def _on_stop(self, error: StopTrainingError) -> None:
        self.print(error)
        self.callback_handler.call_event("on_stop_training_error", self)

    def _run_train_epoch(self) -> bool:
        """One training epoch; returns whether ``max_num_train_steps`` was reached."""
        dataloader, handler = self._train_dataloader, self.callback_handler
        assert dataloader is not None
        self._call_chain("train_epoch_start", self.train_epoch_start)
        self._train_loss.reset()
        handler.call_event("on_train_epoch_start", self)
        num_batches = _length(dataloader)
        max_updates = self.run_config.max_num_train_steps
        reached_max = False
        for step, batch in enumerate(dataloader):
            handler.call_event("on_train_step_start", self)
            is_update = self.is_update_step(step, num_batches)
            with self.train_step_context(is_update):
                batch_output, loss, size = self._batch_loss(self.calculate_train_batch_loss, batch)
                self._train_loss.add(loss, size)
                self.backward_step(self.scale_loss(loss, batch_output, size))
            if is_update:
                self.before_optimizer_step()
                self.optimizer_step()
                if not self.optimizer_step_was_skipped():
                    self.scheduler_step()
                self.optimizer_zero_grad()
                self._num_updates += 1
                reached_max = max_updates is not None and self._num_updates >= max_updates
            handler.call_event("on_train_step_end", self, batch_output=batch_output, batch=batch, step=step)
            if reached_max:
                break
        self.train_epoch_end()
        self.run_history.update_metric("train_loss_epoch", self.reduce_epoch_loss(self._train_loss))
        handler.call_event("on_train_epoch_end", self)
        return reached_max

    def _run_eval_epoch(self, dataloader: Iterable[Any], *, metric_name: str, is_intermediate: bool = False) -> None:
        handler = self.callback_handler
        self._call_chain("eval_epoch_start", self.eval_epoch_start)
        self._eval_loss.reset()
        handler.call_event("on_eval_epoch_start", self, is_intermediate=is_intermediate)
        with torch.no_grad(), self.eval_loop_context():
            for batch in self.iterate_eval_batches(dataloader):
                handler.call_event("on_eval_step_start", self)
                batch_output, loss, size = self._batch_loss(self.calculate_eval_batch_loss, batch)
                if not self._eval_step_is_padding:
                    self._eval_loss.add(loss, size)
                handler.call_event("on_eval_step_end", self, batch_output=batch_output, batch=batch)
        self._eval_step_is_padding = False
        self.eval_epoch_end()
        self.run_history.update_metric(
            "intermediate_eval_loss" if is_intermediate else metric_name, self.reduce_epoch_loss(self._eval_loss)
        )
        handler.call_event("on_eval_epoch_end", self, is_intermediate=is_intermediate)

    def run_intermediate_evaluation(self) -> None:
        """Evaluate on the eval set in the middle of a training epoch, then return the model to training mode.

        Records ``intermediate_eval_loss``; runs outside the autograd graph of the current step.
        """
        if self._eval_dataloader is None:
            raise RuntimeError("run_intermediate_evaluation() needs an eval_dataset passed to train()")
        self._run_eval_epoch(self._eval_dataloader, metric_name="intermediate_eval_loss", is_intermediate=True)
        self.model.train()


def _merge_dl_kwargs(defaults: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    overrides = overrides or {}
    if "sampler" in overrides:
        defaults.pop("shuffle", None)
    if "batch_sampler" in overrides:
        for key in ("shuffle", "batch_size", "drop_last", "sampler"):
            defaults.pop(key, None)
    merged = {**defaults, **overrides}
    if not merged.get("num_workers"):
        merged.pop("worker_init_fn", None)
    return merged


def _length(obj: object) -> int | None:
    """``len(obj)``, or ``None`` for iterables without one (a DataLoader over an IterableDataset)."""
    try:
        return len(obj)  # type: ignore[arg-type]  # probing: TypeError means "no length"
    except TypeError:
        return None


def _inputs_and_targets(batch: Any) -> tuple[Any, Tensor]:
    if isinstance(batch, (list, tuple)) and len(batch) >= 2 and isinstance(batch[1], Tensor):
        return batch[0], batch[1]
    raise TypeError(
        "the default calculate_*_batch_loss expects batches of (inputs, targets, ...) with tensor targets, "
        f"got {type(batch).__name__}; override calculate_train_batch_loss / calculate_eval_batch_loss"
    )

