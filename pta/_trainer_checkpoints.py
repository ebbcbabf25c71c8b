"""Checkpoints and training states: what a trainer writes to disk and reads back.

``TrainerCheckpoints`` sits between ``TrainerHooks`` (shared state and hooks, pta.hooks) and ``TrainerBase``
(the loop, pta.base); it only keeps those files to one concern each. Mixins and users subclass
``TrainerBase``, never this class directly. docs/training_state.md describes the training-state files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pta import _training_state as training_state
from pta._types import BatchT
from pta.checkpoint import CheckpointError, atomic_torch_save, load_torch_file, require_keys
from pta.hooks import TrainerHooks
from pta.interrupt import TrainingInterrupted


class TrainerCheckpoints(TrainerHooks[BatchT]):
    """``save_checkpoint`` / ``load_checkpoint`` (model weights, pytorch-accelerated's format) and
    ``save_training_state`` / ``load_training_state`` with their builder hooks (exact resume), and the
    save when a signal interrupts training."""

    _resume_allow_changes: frozenset[str] = frozenset()
    _pending_commit: training_state._BackgroundCommit | None = None  # a background save being committed

    def save_checkpoint(self, save_path: str | Path, checkpoint_kwargs: dict[str, Any] | None = None,
                        save_optimizer: bool = True, save_scheduler: bool = True, save_per_node: bool = True) -> None:
        """Write model (and optimizer/scheduler) state to one file, atomically."""
        checkpoint: dict[str, Any] = {"model_state_dict": self.get_model(keep_torch_compile=False).state_dict()}
        if save_optimizer and self.optimizer is not None:
            checkpoint["optimizer_state_dict"] = self.optimizer.state_dict()
        scheduler = self._scheduler_or_none()
        if save_scheduler and scheduler is not None:
            checkpoint["scheduler_state_dict"] = scheduler.state_dict()
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
                                    ("scheduler_state_dict", self._scheduler_or_none(), load_scheduler)):
            if wanted and key in checkpoint:
                if target is None:
                    raise CheckpointError(f"checkpoint {checkpoint_path} has {key} but the trainer has none; "
                                          f"pass load_{key.split('_')[0]}=False")
                target.load_state_dict(checkpoint[key])
        return checkpoint

    def save_training_state(self, output_dir: str | Path, checkpoint_kwargs: dict[str, Any] | None = None) -> Path:
        """Save everything needed to continue this run exactly, atomically, into ``output_dir``.

        Call it at any point of a run, e.g. from a callback's ``on_train_step_end``; every process must
        call it. Returns the directory. A failed save raises ``CheckpointError`` on every process and
        leaves earlier states intact. docs/training_state.md describes the files and guarantees.
        """
        return training_state.save_training_state(self, output_dir, checkpoint_kwargs)

    def save_training_state_in_background(self, output_dir: str | Path,
                                          checkpoint_kwargs: dict[str, Any] | None = None) -> Path:
        """``save_training_state`` that returns once every file is written: the main process makes them
        durable and renames the state into place (the commit) in a thread while training goes on, and
        the directory appears when that is done. The next save, ``load_training_state``, ``train()`` (at
        its start and end) and :meth:`wait_for_save` wait for it, and raise its ``CheckpointError``.
        """
        return training_state.save_training_state(self, output_dir, checkpoint_kwargs, background=True)

    def wait_for_save(self) -> None:
        """Wait until the state of the last ``save_training_state_in_background`` is committed;
        every process must call it. Raises ``CheckpointError`` on every process if the commit failed;
        returns at once when no save is pending."""
        training_state.wait_for_save(self)

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

    def _save_interrupted_state(self, signum: int) -> None:
        self._interrupt.acknowledge()  # the save may take long; it is no longer a process that hangs
        assert self.interrupt_state_dir is not None
        try:  # an earlier background save that failed must not prevent this one
            training_state.wait_for_save(self)
        except CheckpointError as error:
            self.print(f"\nAn earlier training state was not saved: {error}")
        try:
            directory = self.save_training_state(self.interrupt_state_dir)
        except CheckpointError as error:  # still stop as interrupted, carrying why nothing was saved
            self.print(f"\nInterrupted by signal {signum}, but the training state could not be saved: {error}")
            raise TrainingInterrupted(signum, None, save_error=error) from error
        self.print(f"\nInterrupted by signal {signum}: training state saved to {directory}.\n"
                   f"Resume with trainer.train(..., resume_from={str(directory)!r}) and the same arguments.")
        raise TrainingInterrupted(signum, str(directory))
