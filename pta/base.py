"""TrainerBase: the training and evaluation loops, training states and resume.

Alone it is a correct single-process, full-precision loop. Its hooks and shared state live in
``pta.hooks``; mixins (``pta.mixins``) add one behaviour each by overriding a few hooks, every
override calling ``super()``. docs/loop.md gives the order of hooks and callback events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader

from pta import _training_state as training_state
from pta import _validation as check
from pta._accelerate import set_seed, skip_first_batches
from pta._data import length
from pta._fingerprint import check_allowed_changes
from pta._types import BatchT
from pta.callbacks.base import StopTrainingError
from pta.checkpoint import CheckpointError
from pta.hooks import HookChainError, TrainerHooks
from pta.interrupt import TrainingInterrupted, catch_interrupts
from pta.protocols import SchedulerFactory
from pta.run_config import TrainerRunConfig
from pta.state import capture_rng, read_meta, resolve_state_dir, restore_rng, sampler_generator

__all__ = ["HookChainError", "TrainerBase"]


class TrainerBase(TrainerHooks[BatchT]):
    """The loop over epochs and steps; see ``TrainerHooks`` for the state and hooks it calls."""

    interrupt_check_every: ClassVar[int] = 10
    """In multi-process runs, how many steps apart the processes agree on a pending SIGTERM/SIGINT."""
    _resume_allow_changes: frozenset[str] = frozenset()

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
        resume_allow_changes: Iterable[str] = (),
    ) -> None:
        """Train for ``num_epochs`` epochs (or exactly ``max_num_train_steps`` optimizer updates, which
        then wins), evaluating on ``eval_dataset`` after every epoch. With ``reset_run_history=False``
        they come after the epochs already in the run history, as in pytorch-accelerated.

        ``resume_from`` continues a run from a directory written by ``save_training_state`` (or
        ``"<dir>/latest"`` for the newest complete state in ``<dir>``) with the same arguments: only the
        work the interrupted call had left is done. A state saved by a different kind of run (batch size,
        accumulation, dataset length, process count, optimizer, parameters, stateful callbacks) is
        refused; ``resume_allow_changes`` names the settings whose change you accept
        (``"per_device_batch_size"``, ``"gradient_accumulation_steps"``, ``"dataset_length"``).
        """
        check.check_train_arguments(self, locals())
        self._resume_allow_changes = check_allowed_changes(resume_allow_changes)
        resume_dir = resolve_state_dir(resume_from) if resume_from is not None else None
        if resume_dir is not None:
            read_meta(resume_dir)  # a missing or corrupt state fails before any work
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.create_scheduler_fn, self.collate_fn, self.scheduler = create_scheduler_fn, collate_fn, None
        if reset_run_history and resume_dir is None:
            self.run_history.reset()
        self._start_run()
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
        self._run_training(resume_dir)

    def evaluate(
        self,
        dataset: Any = None,
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
        dataset: Any,
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
        outputs = []
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
        inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
        output: torch.Tensor = self.model(inputs)
        return output

    def run_intermediate_evaluation(self) -> None:
        """Evaluate in the middle of a training epoch (records ``intermediate_eval_loss``), outside the
        autograd graph of the current step, then put the model back in training mode."""
        if self._eval_dataloader is None:
            raise RuntimeError("run_intermediate_evaluation() needs an eval_dataset passed to train()")
        self._run_eval_epoch(self._eval_dataloader, metric_name="intermediate_eval_loss", is_intermediate=True)
        self.model.train()

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
        self._num_updates, self._batches_done, self._epoch_phase, self._resume = 0, 0, "train", None

    def _create_run_config(self, batch_size: int, num_epochs: int | None, accumulation: int,
                           max_steps: int | None, clip_value: float | None, clip_norm: float | None) -> TrainerRunConfig:
        acc = self._accelerator
        train_bs = (self._train_dl_kwargs or {}).get("batch_size", batch_size)
        eval_bs = (self._eval_dl_kwargs or {}).get("batch_size", train_bs)
        num_batches = length(self._train_dataloader) if self._train_dataloader is not None else None
        updates = -(-num_batches // accumulation) if num_batches else 0
        if max_steps is not None and updates:
            num_epochs = -(-max_steps // updates)
        return TrainerRunConfig(
            num_epochs=num_epochs or 1, train_per_device_batch_size=train_bs, train_dl_kwargs=self._train_dl_kwargs,
            eval_per_device_batch_size=eval_bs, eval_dl_kwargs=self._eval_dl_kwargs,
            gradient_accumulation_steps=accumulation, gradient_clip_value=clip_value, gradient_clip_norm=clip_norm,
            train_total_batch_size=train_bs * acc.num_processes * accumulation if train_bs else None,
            eval_total_batch_size=eval_bs * acc.num_processes if eval_bs else None,
            num_update_steps_per_epoch=updates, num_local_update_steps_per_epoch=updates,
            max_num_train_steps=max_steps, is_local_process_zero=acc.is_local_main_process,
            is_world_process_zero=acc.is_main_process, is_distributed=acc.is_distributed,
            mixed_precision=acc.mixed_precision, num_processes=acc.num_processes,
        )

    def _run_training(self, resume_dir: Path | None) -> None:
        with catch_interrupts(self.interrupt_state_dir is not None) as self._interrupt:
            self._call_chain("training_run_start", self.training_run_start)
            if resume_dir is not None:  # after training_run_start, which creates the mixins' per-run state
                self.load_training_state(resume_dir)
                self.print(f"Resuming from {resume_dir} (epoch {self.run_history.current_epoch}, "
                           f"{self._batches_done} batches into it, {self._num_updates} updates done)")
            self.callback_handler.call_event("on_training_run_start", self)
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
            self._call_chain("training_run_end", self.training_run_end)
            self.callback_handler.call_event("on_training_run_end", self)

    def _run_epoch(self) -> bool:
        """Train and evaluate one epoch (or what a resumed state left of it); returns "max steps reached"."""
        resume, self._resume = self._resume, None
        phase = resume["phase"] if resume else "train"
        reached_max = self._max_steps_reached()
        if resume is not None and phase != "train":
            restore_rng(resume["rng"], sampler_generator(self._train_dataloader))
        if phase == "done":  # saved at the very end of the epoch: only the epoch count is left to advance
            self.run_history._increment_epoch()
            self._epoch_phase, self._batches_done = "train", 0
            return reached_max
        if phase == "train":
            reached_max = self._run_train_epoch(resume)
        if phase in ("train", "eval") and self._eval_dataloader is not None:
            self._epoch_phase = "eval"
            self._run_eval_epoch(self._eval_dataloader, metric_name="eval_loss_epoch")
        self._epoch_phase = "done"
        self.training_run_epoch_end()
        self.callback_handler.call_event("on_training_run_epoch_end", self)
        self.run_history._increment_epoch()
        self._epoch_phase, self._batches_done = "train", 0
        return reached_max

    def _max_steps_reached(self) -> bool:
        limit = self.run_config.max_num_train_steps
        return limit is not None and self._num_updates >= limit

    def _on_stop(self, error: StopTrainingError) -> None:
        self.print(error)
        self.callback_handler.call_event("on_stop_training_error", self)

    def _run_train_epoch(self, resume: dict[str, Any] | None) -> bool:
        """One training epoch, or its rest after a resume; returns whether ``max_num_train_steps`` was reached."""
        dataloader, handler = self._train_dataloader, self.callback_handler
        assert dataloader is not None
        self._call_chain("train_epoch_start", self.train_epoch_start)
        if resume is None:
            self._train_loss.reset()
        handler.call_event("on_train_epoch_start", self)
        num_batches = length(dataloader)
        reached_max = False
        for step, batch in self._train_batches(dataloader, resume):
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
                reached_max = self._max_steps_reached()
            self._batches_done = step + 1
            handler.call_event("on_train_step_end", self, batch_output=batch_output, batch=batch, step=step)
            if self._interrupt_requested(step):
                self._save_interrupted_state()
            if reached_max:
                break
        self.train_epoch_end()
        self.run_history.update_metric("train_loss_epoch", self.reduce_epoch_loss(self._train_loss))
        self._epoch_phase = "eval"
        handler.call_event("on_train_epoch_end", self)
        return reached_max

    def _train_batches(self, dataloader: Iterable[Any], resume: dict[str, Any] | None) -> Iterator[tuple[int, Any]]:
        """Enumerate the epoch's batches; after a resume, skip the batches already trained (by index,
        without loading them) and put every RNG back where the interrupted run had it."""
        generator = sampler_generator(dataloader)
        if resume is None:
            self._epoch_rng, start = capture_rng(generator, self.train_dataset), 0
        else:
            self._epoch_rng, start = resume["epoch_rng"], resume["batches_done"]
            restore_rng(self._epoch_rng, generator, self.train_dataset)  # the epoch's data order again
        loader = skip_first_batches(dataloader, start) if start else dataloader  # type: ignore[arg-type]  # any DataLoader
        resumed = resume is None
        for index, batch in enumerate(loader):
            if not resumed:
                restore_rng(resume["rng"], generator)  # type: ignore[index]  # resume is set here
                resumed = True
            yield start + index, batch
        if not resumed:
            restore_rng(resume["rng"], generator)  # type: ignore[index]  # nothing was left of the epoch

    def _run_eval_epoch(self, dataloader: Iterable[Any], *, metric_name: str, is_intermediate: bool = False) -> None:
        handler = self.callback_handler
        self._call_chain("eval_epoch_start", self.eval_epoch_start)
        self._eval_loss.reset()
        handler.call_event("on_eval_epoch_start", self, is_intermediate=is_intermediate)
        with torch.no_grad():
            for batch in self.iterate_eval_batches(dataloader):
                handler.call_event("on_eval_step_start", self)
                batch_output, loss, size = self._batch_loss(self.calculate_eval_batch_loss, batch)
                if not self._eval_step_is_padding:
                    self._eval_loss.add(loss, size)
                handler.call_event("on_eval_step_end", self, batch_output=batch_output, batch=batch)
        self._eval_step_is_padding = False
        self.eval_epoch_end()
        self.run_history.update_metric(metric_name, self.reduce_epoch_loss(self._eval_loss))
        handler.call_event("on_eval_epoch_end", self, is_intermediate=is_intermediate)

    # ------------------------------------------------------------------ interrupts
    def _interrupt_requested(self, step: int) -> bool:
        local = self._interrupt.signum or 0
        if self._accelerator.num_processes == 1:
            return local != 0
        if (step + 1) % self.interrupt_check_every:
            return False
        signums = self._accelerator.gather(torch.tensor([local], device=self.device))
        self._interrupt.signum = int(signums.max().item()) or None
        return self._interrupt.signum is not None

    def _save_interrupted_state(self) -> None:
        signum = self._interrupt.signum or 0
        assert self.interrupt_state_dir is not None
        try:
            directory = self.save_training_state(self.interrupt_state_dir)
        except CheckpointError as error:  # still stop as interrupted, carrying why nothing was saved
            self.print(f"\nInterrupted by signal {signum}, but the training state could not be saved: {error}")
            raise TrainingInterrupted(signum, None, save_error=error) from error
        self.print(f"\nInterrupted by signal {signum}: training state saved to {directory}.\n"
                   f"Resume with trainer.train(..., resume_from={str(directory)!r}) and the same arguments.")
        raise TrainingInterrupted(signum, str(directory))

    # ------------------------------------------------------------------ training states
    def save_training_state(self, output_dir: str | Path, checkpoint_kwargs: dict[str, Any] | None = None) -> Path:
        """Save everything needed to continue this run exactly, atomically, into ``output_dir``.

        Call it at any point of a run, e.g. from a callback's ``on_train_step_end``; every process must
        call it. Returns the directory. A failed save raises ``CheckpointError`` on every process and
        leaves earlier states intact. docs/training_state.md describes the files and guarantees.
        """
        return training_state.save_training_state(self, output_dir, checkpoint_kwargs)

    def load_training_state(self, input_dir: str | Path) -> dict[str, Any]:
        """Restore a state written by ``save_training_state`` into the prepared run; ``train(resume_from=...)``
        calls it. It first checks the files' checksums and that the state was saved by the same kind
        of run (``train(resume_allow_changes=...)`` accepts some changes). Callbacks' states are
        restored after ``on_training_run_start``. Returns the state's metadata and ``checkpoint_kwargs``."""
        return training_state.load_training_state(self, input_dir, self._resume_allow_changes)

    def training_state_dict(self) -> dict[str, Any]:
        """Builder of this process's resumable state; mixins call ``super()`` first and add their keys."""
        self._mark("training_state_dict")
        history_state = getattr(self.run_history, "state_dict", None)
        return {
            "epoch": self.run_history.current_epoch, "first_epoch": self._first_epoch, "phase": self._epoch_phase,
            "batches_done": self._batches_done, "num_updates": self._num_updates,
            "train_loss": (self._train_loss.total, self._train_loss.count), "epoch_rng": self._epoch_rng,
            "run_history": history_state() if callable(history_state) else None,
        }

    def load_training_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``training_state_dict`` built; mixins call ``super()`` first."""
        self._mark("load_training_state_dict")
        load_history = getattr(self.run_history, "load_state_dict", None)
        if callable(load_history) and state["run_history"] is not None:
            load_history(state["run_history"])
        self.run_history._set_epoch(state["epoch"])
        self._first_epoch = int(state["first_epoch"])
        self._epoch_phase, self._batches_done, self._num_updates = state["phase"], state["batches_done"], state["num_updates"]
        self._train_loss.total, self._train_loss.count = state["train_loss"]
