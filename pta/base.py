"""TrainerBase: the training and evaluation loops, and resume.

Alone it is a correct single-process, full-precision loop. Hooks and shared state: ``pta.hooks``;
checkpoints and training states: ``pta._trainer_checkpoints``. Mixins (``pta.mixins``) add one behaviour
each by overriding a few hooks, every override calling ``super()``. docs/loop.md gives the call order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal, overload

import torch
from torch.utils.data import DataLoader

from pta import _training_state as training_state
from pta import _validation as check
from pta._accelerate import set_seed
from pta._agreement import StopAgreement
from pta._autoresume import AUTO, auto_resume_dir
from pta._capabilities import (NeedsGradAccumMixin, NeedsSchedulerMixin, SupportsGradAccumulation,
                               SupportsGradAccumulationAndSchedulers, SupportsSchedulers)
from pta._data import length, model_inputs
from pta._epoch_batches import epoch_batches
from pta._fingerprint import check_allowed_changes
from pta._run_setup import build_run_config
from pta._step_plan import plan_steps
from pta._types import BatchT, DatasetLike
from pta.callbacks.base import EventName, StopTrainingError
from pta._composition import HookChainError, HookNameError
from pta._trainer_step import TrainerStep
from pta.interrupt import catch_interrupts
from pta.protocols import SchedulerFactory
from pta.run_config import TrainerRunConfig
from pta.state import read_meta, resolve_state_dir, restore_rng, sampler_generator

__all__ = ["HookChainError", "HookNameError", "TrainerBase"]


class TrainerBase(TrainerStep[BatchT]):
    """The loop over epochs and steps; see ``TrainerHooks`` for the state and hooks it calls and
    ``TrainerCheckpoints`` for checkpoints and training states."""

    agreement_interval: ClassVar[int | None] = None
    """Multi-process runs: steps between exchanges of stops, errors and signals (None: about every second)."""
    interrupt_grace_s: ClassVar[float] = 60.0
    """After SIGTERM/SIGINT, how long the loop may take to reach its next step boundary before the process
    exits anyway (blocked for good: a peer is gone, the launcher died); see ``pta.interrupt``."""

    # What a trainer accepts depends on its mixins (pta._capabilities): accumulation needs GradAccumMixin,
    # a scheduler SchedulerMixin. The implementation accepts all; check_train_arguments guards untyped code.
    @overload
    def train(self: SupportsGradAccumulationAndSchedulers, train_dataset: DatasetLike, num_epochs: int | None,
              eval_dataset: DatasetLike | None = None, per_device_batch_size: int = 8,
              max_num_train_steps: int | None = None,
              gradient_accumulation_steps: int = 1, gradient_clip_value: float | None = None,
              create_scheduler_fn: SchedulerFactory | None = None,
              train_dataloader_kwargs: dict[str, Any] | None = None,
              eval_dataloader_kwargs: dict[str, Any] | None = None,
              reset_run_history: bool = True, collate_fn: Callable[[list[Any]], Any] | None = None,
              resume_from: str | Path | None = None, *, gradient_clip_norm: float | None = None,
              resume_allow_changes: Iterable[str] = ()) -> None: ...

    @overload
    def train(self: SupportsGradAccumulation, train_dataset: DatasetLike, num_epochs: int | None,
              eval_dataset: DatasetLike | None = None, per_device_batch_size: int = 8,
              max_num_train_steps: int | None = None, gradient_accumulation_steps: int = 1,
              gradient_clip_value: float | None = None, create_scheduler_fn: NeedsSchedulerMixin | None = None,
              train_dataloader_kwargs: dict[str, Any] | None = None,
              eval_dataloader_kwargs: dict[str, Any] | None = None,
              reset_run_history: bool = True, collate_fn: Callable[[list[Any]], Any] | None = None,
              resume_from: str | Path | None = None, *, gradient_clip_norm: float | None = None,
              resume_allow_changes: Iterable[str] = ()) -> None: ...

    @overload
    def train(self: SupportsSchedulers, train_dataset: DatasetLike, num_epochs: int | None,
              eval_dataset: DatasetLike | None = None, per_device_batch_size: int = 8,
              max_num_train_steps: int | None = None,
              gradient_accumulation_steps: Literal[1] | NeedsGradAccumMixin = 1,
              gradient_clip_value: float | None = None,
              create_scheduler_fn: SchedulerFactory | None = None,
              train_dataloader_kwargs: dict[str, Any] | None = None,
              eval_dataloader_kwargs: dict[str, Any] | None = None,
              reset_run_history: bool = True, collate_fn: Callable[[list[Any]], Any] | None = None,
              resume_from: str | Path | None = None, *, gradient_clip_norm: float | None = None,
              resume_allow_changes: Iterable[str] = ()) -> None: ...

    @overload
    def train(self, train_dataset: DatasetLike, num_epochs: int | None,
              eval_dataset: DatasetLike | None = None, per_device_batch_size: int = 8,
              max_num_train_steps: int | None = None,
              gradient_accumulation_steps: Literal[1] | NeedsGradAccumMixin = 1,
              gradient_clip_value: float | None = None,
              create_scheduler_fn: NeedsSchedulerMixin | None = None,
              train_dataloader_kwargs: dict[str, Any] | None = None,
              eval_dataloader_kwargs: dict[str, Any] | None = None,
              reset_run_history: bool = True, collate_fn: Callable[[list[Any]], Any] | None = None,
              resume_from: str | Path | None = None, *, gradient_clip_norm: float | None = None,
              resume_allow_changes: Iterable[str] = ()) -> None: ...

    def train(self: Any, train_dataset: DatasetLike, num_epochs: int | None,
              eval_dataset: DatasetLike | None = None, per_device_batch_size: int = 8,
              max_num_train_steps: int | None = None,
              gradient_accumulation_steps: int | NeedsGradAccumMixin = 1, gradient_clip_value: float | None = None,
              create_scheduler_fn: SchedulerFactory | NeedsSchedulerMixin | None = None,
              train_dataloader_kwargs: dict[str, Any] | None = None,
              eval_dataloader_kwargs: dict[str, Any] | None = None,
              reset_run_history: bool = True, collate_fn: Callable[[list[Any]], Any] | None = None,
              resume_from: str | Path | None = None, *, gradient_clip_norm: float | None = None,
              resume_allow_changes: Iterable[str] = ()) -> None:
        """Train for ``num_epochs`` epochs (or exactly ``max_num_train_steps`` optimizer updates, which
        then wins), evaluating on ``eval_dataset`` after every epoch. With ``reset_run_history=False``
        they come after the epochs already in the run history, as in pytorch-accelerated.

        ``resume_from`` continues a run from a ``save_training_state`` directory (``"<dir>/latest"``: the
        newest complete state in it) with the same arguments; ``"auto"``: from the most advanced state in
        the run's state directories, or fresh when there is none (``torchrun --max-restarts``). A state
        of a different kind of run is refused, except for the settings named in ``resume_allow_changes``
        (``"per_device_batch_size"``, ``"gradient_accumulation_steps"``, ``"dataset_length"``).
        """
        TrainerBase._train(self, **{k: v for k, v in locals().items() if k != "self"})

    def _train(self, train_dataset: DatasetLike, num_epochs: int | None, eval_dataset: DatasetLike | None,
               per_device_batch_size: int, max_num_train_steps: int | None, gradient_accumulation_steps: int,
               gradient_clip_value: float | None, create_scheduler_fn: SchedulerFactory | None,
               train_dataloader_kwargs: dict[str, Any] | None, eval_dataloader_kwargs: dict[str, Any] | None,
               reset_run_history: bool, collate_fn: Callable[[list[Any]], Any] | None,
               resume_from: str | Path | None, gradient_clip_norm: float | None,
               resume_allow_changes: Iterable[str]) -> None:
        check.check_train_arguments(self, locals())
        training_state.wait_for_save(self)  # a state saved in the background may be the one to resume from
        self._resume_allow_changes = check_allowed_changes(resume_allow_changes)
        auto = isinstance(resume_from, str) and resume_from == AUTO
        resume_dir = resolve_state_dir(resume_from) if resume_from is not None and not auto else None
        if resume_dir is not None:
            read_meta(resume_dir)  # a missing or corrupt state fails before any work
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.create_scheduler_fn, self.collate_fn = create_scheduler_fn, collate_fn
        self._start_run()
        if auto:
            resume_dir = auto_resume_dir(self, self._agreement)
        if reset_run_history and resume_dir is None:
            self.run_history.reset()
        self._first_epoch = self.run_history.current_epoch  # num_epochs counts from here (pa: num_epochs more)
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
        with training_state.commits_awaited(self):  # train() returns with every state it saved committed
            self._run_training(resume_dir)

    def evaluate(
        self,
        dataset: DatasetLike | None = None,
        per_device_batch_size: int = 8,
        dataloader_kwargs: dict[str, Any] | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        """One evaluation epoch over ``dataset``; records ``evaluation_loss`` (the run history is reset)."""
        self._start_eval_only_run(dataset, per_device_batch_size, dataloader_kwargs, collate_fn)
        self.run_history.reset()
        self._call_chain("evaluation_run_start", self.evaluation_run_start)
        self.callback_handler.call_event("on_evaluation_run_start", self)
        try:
            self._run_eval_epoch(self.eval_dataloader or (), metric_name="evaluation_loss")  # callbacks may swap it
        except StopTrainingError as error:
            self._on_stop(error)
        self._call_chain("evaluation_run_end", self.evaluation_run_end)
        self.callback_handler.call_event("on_evaluation_run_end", self)

    def predict(
        self,
        dataset: DatasetLike,
        per_device_batch_size: int = 8,
        dataloader_kwargs: dict[str, Any] | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> torch.Tensor:
        """The model's outputs for every sample of ``dataset``, in dataset order, on the CPU.

        Every process returns the same tensor; in distributed runs each sample appears exactly once
        (no padding duplicates). Override ``predict_step`` to change what a batch yields. No callback
        events are fired and the run history is left alone.
        """
        dataloader = self._start_eval_only_run(dataset, per_device_batch_size, dataloader_kwargs, collate_fn)
        self.model.eval()
        outputs: list[torch.Tensor] = []
        with torch.no_grad():
            for batch in self.iterate_eval_batches(dataloader):
                with self.forward_context():
                    prediction = self.predict_step(batch)
                outputs.append(self.gather(prediction).cpu())
        self.model = self.get_model()
        return torch.cat(outputs)

    def predict_step(self, batch: BatchT) -> torch.Tensor:
        """The model's output for one batch (rows along dim 0); the default feeds ``batch[0]`` (or the
        whole batch when it is not a list or tuple) to the model."""
        inputs = model_inputs(batch)
        output: torch.Tensor = self.model(inputs)
        return output

    def run_intermediate_evaluation(self) -> None:
        """Evaluate in the middle of a training epoch (records ``intermediate_eval_loss``), outside the
        autograd graph of the current step, then put the model back in training mode."""
        if self._eval_dataloader is None:
            raise RuntimeError("run_intermediate_evaluation() needs an eval_dataset passed to train()")
        self._run_eval_epoch(self._eval_dataloader, metric_name="intermediate_eval_loss", is_intermediate=True)
        self.model.train()

    def run_evaluation_epoch(self, metric_name: str = "eval_loss_epoch") -> None:
        """One evaluation epoch over ``eval_dataloader``, recorded as ``metric_name``, with the callbacks of
        ``callback_handler`` (a callback may swap in its own handler, e.g. to evaluate EMA weights)."""
        if self._eval_dataloader is None:
            raise RuntimeError("run_evaluation_epoch() needs an eval_dataset passed to train()")
        self._run_eval_epoch(self._eval_dataloader, metric_name=metric_name)

    # ------------------------------------------------------------------ the loop
    def _start_eval_only_run(self, dataset: Any, batch_size: int, dataloader_kwargs: dict[str, Any] | None,
                             collate_fn: Callable[[list[Any]], Any] | None) -> DataLoader[Any]:
        """What ``evaluate`` and ``predict`` share: checks, then a prepared run; returns its dataloader."""
        check.check_dataset("dataset", dataset)
        check.check_positive_int("per_device_batch_size", batch_size)
        self.eval_dataset, self.collate_fn = dataset, collate_fn
        self._start_run()
        self._train_dataloader = None
        self._eval_dataloader = self.create_eval_dataloader(batch_size, dataloader_kwargs)
        self._call_chain("prepare_components", self.prepare_components)
        self._run_config = self._create_run_config(batch_size, 1, 1, None, None, None)
        self._call_chain("configure_run", self.configure_run)
        assert self._eval_dataloader is not None
        return self._eval_dataloader

    def _start_run(self) -> None:
        check.check_seed(self.seed)  # evaluate() and predict() come here too
        self._accelerator = self._create_accelerator()
        if self.seed is not None:
            set_seed(self.seed, device_specific=True)
        self._num_updates, self._batches_done, self._epoch_phase = 0, 0, "train"
        self._resume, self._epoch_rng = None, None
        self._agreement = StopAgreement(self._accelerator.num_processes, self.agreement_interval)

    def _create_run_config(self, batch_size: int, num_epochs: int | None, accumulation: int,
                           max_steps: int | None, clip_value: float | None, clip_norm: float | None) -> TrainerRunConfig:
        num_batches = length(self._train_dataloader) if self._train_dataloader is not None else None
        return build_run_config(self._accelerator, self._train_dl_kwargs, self._eval_dl_kwargs, num_batches,
                                batch_size, num_epochs, accumulation, max_steps, clip_value, clip_norm)

    def _run_training(self, resume_dir: Path | None) -> None:
        with catch_interrupts(self.interrupt_state_dir is not None, self.interrupt_grace_s) as self._interrupt:
            self._call_chain("training_run_start", self.training_run_start)
            if resume_dir is not None:  # after training_run_start, which creates the mixins' per-run state
                self.load_training_state(resume_dir)
                self.print(f"Resuming from {resume_dir} (epoch {self.run_history.current_epoch}, "
                           f"{self._batches_done} batches into it, {self._num_updates} updates done)")
            self._agreed_event("on_training_run_start")
            if self._resume is not None:  # after the event, at which callbacks set up their per-run state
                states = self._resume.get("callbacks", {})
                training_state.load_callback_states(self.callback_handler.callbacks, states)
            while self.run_history.current_epoch < self._first_epoch + self.run_config.num_epochs:
                try:
                    reached_max = self._run_epoch()
                except StopTrainingError as error:
                    self._on_stop(error)
                    break
                if reached_max:
                    self.print(f"Reached max_num_train_steps={self.run_config.max_num_train_steps} optimizer updates")
                    break
            self._agreement.agree()  # the final save below is done by all processes or by none
            self._call_chain("training_run_end", self.training_run_end)
            self.callback_handler.call_event("on_training_run_end", self)

    def _run_epoch(self) -> bool:
        """Train and evaluate one epoch (or what a resumed state left of it); returns "max steps reached"."""
        resume = self._resume  # a train-phase resume stays pending (for saves) until its epoch's batches are set up
        phase = resume["phase"] if resume else "train"
        self._resume = resume if phase == "train" else None
        reached_max = self._max_steps_reached()
        if resume is not None and phase != "train":
            restore_rng(resume["rng"], sampler_generator(self._train_dataloader))
        if phase == "done":  # saved at the very end of the epoch: only the epoch count is left to advance
            self._next_epoch()
            return reached_max
        if phase == "train":
            reached_max = self._run_train_epoch(resume)
        if phase in ("train", "eval") and self._eval_dataloader is not None:
            self._epoch_phase = "eval"
            self._run_eval_epoch(self._eval_dataloader, metric_name="eval_loss_epoch")
        self._epoch_phase = "done"
        self.training_run_epoch_end()
        self._agreed_event("on_training_run_epoch_end")
        self._next_epoch()
        return reached_max

    def _next_epoch(self) -> None:
        self.run_history._increment_epoch()
        self._epoch_phase, self._batches_done, self._epoch_rng = "train", 0, None  # None: no shuffle drawn yet

    def _max_steps_reached(self) -> bool:
        limit = self.run_config.max_num_train_steps
        return limit is not None and self._num_updates >= limit

    def _on_stop(self, error: StopTrainingError) -> None:
        self.print(error)
        self.callback_handler.call_event("on_stop_training_error", self)

    def _run_train_epoch(self, resume: dict[str, Any] | None) -> bool:
        """One training epoch, or its rest after a resume; returns whether ``max_num_train_steps`` was reached."""
        dataloader, handler = self._train_dataloader, self.callback_handler
        events = handler.event_methods()  # the step events' calls, made here as call_event makes them
        assert dataloader is not None
        self._call_chain("train_epoch_start", self.train_epoch_start)
        if resume is None:
            self._train_loss.reset()
        handler.call_event("on_train_epoch_start", self)
        num_batches, limit = length(dataloader), self.run_config.max_num_train_steps
        reached_max, distributed = False, self._agreement.distributed
        plan = self._step_plan = plan_steps(self)
        self._epoch_rng, batches = epoch_batches(dataloader, resume, self.train_dataset)
        self._resume = None
        for step, batch in batches:
            for method in events["on_train_step_start"]:
                method(self)
            if plan.default_update:
                batch_output, is_update = self._default_update(batch), True
            else:
                batch_output, is_update = self._hooked_step(plan, step, num_batches, batch)
            if is_update:
                self._num_updates += 1
                reached_max = limit is not None and self._num_updates >= limit
            self._batches_done = step + 1
            if distributed:
                signum = self._agreed_event("on_train_step_end", step >= self._agreement.next_step,
                                            batch_output=batch_output, batch=batch, step=step)
            else:  # nothing to agree on: the event itself, as _agreed_event would call it
                for method in events["on_train_step_end"]:
                    method(self, batch_output=batch_output, batch=batch, step=step)
                signum = self._interrupt.signum or 0
            if signum:
                self._save_interrupted_state(signum)
            if reached_max:
                break
        self.train_epoch_end()
        self.run_history.update_metric("train_loss_epoch", self.reduce_epoch_loss(self._train_loss))
        self._epoch_phase = "eval"
        self._agreed_event("on_train_epoch_end")
        return reached_max

    def _run_eval_epoch(self, dataloader: Iterable[Any], *, metric_name: str, is_intermediate: bool = False) -> None:
        handler = self.callback_handler
        events = handler.event_methods()
        self._step_plan = plan_steps(self)
        self._call_chain("eval_epoch_start", self.eval_epoch_start)
        self._eval_loss.reset()
        handler.call_event("on_eval_epoch_start", self, is_intermediate=is_intermediate)
        with torch.no_grad():
            for batch in self.iterate_eval_batches(dataloader):
                for method in events["on_eval_step_start"]:
                    method(self)
                batch_output, loss, size = self._batch_loss(self.calculate_eval_batch_loss, batch)
                if not self._eval_step_is_padding:
                    self._eval_loss.add(loss, size)
                for method in events["on_eval_step_end"]:
                    method(self, batch_output=batch_output, batch=batch)
        self._eval_step_is_padding = False
        self.eval_epoch_end()
        self.run_history.update_metric(metric_name, self.reduce_epoch_loss(self._eval_loss))
        self._agreed_event("on_eval_epoch_end", is_intermediate=is_intermediate)

    # ------------------------------------------------------------------ stops and interrupts
    def _agreed_event(self, event: EventName, agree: bool = True, /, **kwargs: Any) -> int:
        """Dispatch an event after which processes may diverge; in multi-process runs they agree (if
        ``agree``, else a stop or error is held for the next agreement): one raised on one process is
        raised on all (``pta._agreement``). Returns the highest pending signal number."""
        agreement = self._agreement
        if not agreement.distributed:  # nothing to agree on, no host sync
            self.callback_handler.call_event(event, self, **kwargs)
            return self._interrupt.signum or 0
        try:  # callbacks after one that raised still run, as on the other processes
            self.callback_handler.call_event_all(event, self, **kwargs)
        except Exception as error:  # noqa: BLE001 - held back and re-raised by agree(), on every process
            agreement.hold(error)
        return agreement.agree(self._interrupt.signum or 0, kwargs.get("step")) if agree else 0
