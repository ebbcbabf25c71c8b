"""Saves complete, resumable training states at regular intervals and keeps only the newest ones."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from typing_extensions import override

from pta.callbacks._trainer_access import UpdateCounter, background_saves, check_positive, training_states
from pta.callbacks.base import TrainerCallback
from pta.protocols import TrainerLike
from pta.state import META_FILE, remove_state

_STATE_NAME = re.compile(r"(step|epoch)_\d+|final")


class SaveTrainingStateCallback(TrainerCallback):
    """Saves the complete training state (``trainer.save_training_state``) every N optimizer updates,
    every N epochs and/or at the end of training, into ``save_dir``; resume with
    ``trainer.train(..., resume_from="<save_dir>/<name>")`` or ``resume_from="<save_dir>/latest"``.

    States are named ``step_<updates>`` (the run's optimizer-update count, which continues after a
    resume, so names never collide with those of the run that was resumed), ``epoch_<epoch>`` (saved at
    ``on_train_epoch_end``, as in pytorch-accelerated: a resume runs the epoch's evaluation, then goes on) and
    ``final``. Saves happen after the optimizer update of the step (pta's ``on_train_step_end``).

    Only the ``max_checkpoints`` (default 5) most recently written states in ``save_dir`` are kept,
    counting states an earlier (resumed) run wrote there under these names; the main process alone
    deletes the older ones, each first renamed to a hidden ``.<name>.deleting`` (removed by later saves
    if a crash interrupts the deletion), so no incomplete state is ever visible.

    With ``background=True`` each save returns to training once its files are written, and the main
    process makes them durable and renames the state into place in a thread meanwhile (it calls
    ``trainer.save_training_state_in_background``, not ``save_training_state``). An old state is deleted
    only once a newer one is committed (at the next save, and at the end of the run): until then
    ``save_dir`` may hold one state more than ``max_checkpoints``.

    For the best model by a metric use :class:`SaveBestModelCallback`; both can be used together.

    :param save_dir: the directory for the training states
    :param save_every_n_epochs: save after every N epochs (``None``: never)
    :param save_every_n_steps: save after every N optimizer updates (``None``: never)
    :param save_at_end: save ``final`` when the training run ends
    :param max_checkpoints: keep at most this many states (``None``: keep all, which can fill a disk)
    :param background: commit each state in the background while training goes on
    """

    def __init__(
        self,
        save_dir: str | Path = "training_states",
        save_every_n_epochs: int | None = None,
        save_every_n_steps: int | None = None,
        save_at_end: bool = True,
        max_checkpoints: int | None = 5,
        *,
        background: bool = False,
    ) -> None:
        check_positive("save_every_n_epochs", save_every_n_epochs, allow_none=True)
        check_positive("save_every_n_steps", save_every_n_steps, allow_none=True)
        check_positive("max_checkpoints", max_checkpoints, allow_none=True)
        self.save_dir = Path(save_dir)
        self.save_every_n_epochs = save_every_n_epochs
        self.save_every_n_steps = save_every_n_steps
        self.save_at_end = save_at_end
        self.max_checkpoints = max_checkpoints
        self.background = background
        self._saved_checkpoints: list[Path] = []
        self._updates = UpdateCounter()

    def _existing_states(self) -> list[Path]:
        """Complete states this callback's names in ``save_dir``, oldest first (by when they were written)."""
        if not self.save_dir.is_dir():
            return []
        found = [child for child in self.save_dir.iterdir()
                 if _STATE_NAME.fullmatch(child.name) and (child / META_FILE).is_file()]
        return sorted(found, key=lambda child: (child / META_FILE).stat().st_mtime)

    def _save(self, trainer: TrainerLike, name: str) -> None:
        output_dir = self.save_dir / name
        self.save_dir.mkdir(parents=True, exist_ok=True)
        kwargs = {"global_step": self._updates.count}
        if self.background:
            self._wait_and_clean_up(trainer)  # the previous state is committed before an older one goes
            background_saves(trainer, type(self).__name__).save_training_state_in_background(
                str(output_dir), checkpoint_kwargs=kwargs)
        else:
            training_states(trainer, type(self).__name__).save_training_state(str(output_dir), checkpoint_kwargs=kwargs)
        if output_dir in self._saved_checkpoints:
            self._saved_checkpoints.remove(output_dir)
        self._saved_checkpoints.append(output_dir)
        note = " (committing in the background)" if self.background else ""
        trainer.print(f"\nSaved training state to {output_dir}{note}")
        if not self.background:
            self._cleanup_old_checkpoints(trainer)

    def _wait_and_clean_up(self, trainer: TrainerLike) -> None:
        background_saves(trainer, type(self).__name__).wait_for_save()
        self._cleanup_old_checkpoints(trainer)

    def _cleanup_old_checkpoints(self, trainer: TrainerLike) -> None:
        if self.max_checkpoints is None:
            return
        while len(self._saved_checkpoints) > self.max_checkpoints:
            old_dir = self._saved_checkpoints.pop(0)
            if trainer.is_world_main_process and old_dir.exists():
                remove_state(old_dir)
                trainer.print(f"Removed old training state: {old_dir}")

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        (background_saves if self.background else training_states)(trainer, type(self).__name__)
        self._updates.start(trainer)
        self._saved_checkpoints = self._existing_states()

    @override
    def on_train_step_end(self, trainer: TrainerLike, step: int, **kwargs: Any) -> None:
        updated = self._updates.step_end(trainer, step)
        if updated and self.save_every_n_steps is not None and self._updates.count % self.save_every_n_steps == 0:
            self._save(trainer, f"step_{self._updates.count}")

    @override
    def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        # as pytorch-accelerated: before the epoch's evaluation, which a resume from this state then runs
        epoch = trainer.run_history.current_epoch
        if self.save_every_n_epochs is not None and epoch % self.save_every_n_epochs == 0:
            self._save(trainer, f"epoch_{epoch}")

    @override
    def on_training_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if self.save_at_end:
            self._save(trainer, "final")
        if self.background:
            self._wait_and_clean_up(trainer)
