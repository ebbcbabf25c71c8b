"""Saves the model whenever a watched metric improves, and loads the best one when the run ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typing_extensions import override

from pta.callbacks._trainer_access import is_improvement, latest_metric
from pta.callbacks.base import TrainerCallback
from pta.protocols import TrainerLike


class SaveBestModelCallback(TrainerCallback):
    """Saves a checkpoint (``trainer.save_checkpoint``) after every epoch whose ``watch_metric`` is the
    best so far, and loads the best checkpoint at the end of the run.

    The checkpoint is always the same format: ``model_state_dict``, ``optimizer_state_dict`` (if
    ``save_optimizer``), ``scheduler_state_dict`` (if ``save_scheduler`` and the run has a scheduler),
    ``{watch_metric: best value}`` and ``epoch``. A NaN value is never an improvement. A run that ends
    before any checkpoint was written (stopped early, or every value NaN) loads nothing.

    Every process takes the same decision: pta's losses are means over all processes, and for a metric
    recorded per process the main process's value is used (see ``docs/callbacks.md``). The best value
    is saved in training states (``state_dict``), so a resumed run keeps it.

    :param save_path: the checkpoint file (``.pt``)
    :param watch_metric: the run-history metric that decides which model is best
    :param greater_is_better: whether a higher ``watch_metric`` is better
    :param reset_on_train: forget the best value at the start of each training run
    :param save_optimizer: also save the optimizer's state
    :param save_scheduler: also save the scheduler's state
    :param load_saved_checkpoint: load the best checkpoint at the end of the training run
    """

    def __init__(
        self,
        save_path: str | Path = "best_model.pt",
        watch_metric: str = "eval_loss_epoch",
        greater_is_better: bool = False,
        reset_on_train: bool = True,
        save_optimizer: bool = True,
        save_scheduler: bool = True,
        load_saved_checkpoint: bool = True,
    ) -> None:
        self.save_path = save_path
        self.watch_metric = watch_metric
        self.greater_is_better = greater_is_better
        self.reset_on_train = reset_on_train
        self.save_optimizer = save_optimizer
        self.save_scheduler = save_scheduler
        self.load_saved_checkpoint = load_saved_checkpoint
        self.best_metric: float | None = None
        self.best_metric_epoch: int | None = None
        self.checkpoint_saved = False
        """Whether ``save_path`` holds a checkpoint written by this callback for the current best value."""

    def state_dict(self) -> dict[str, Any]:
        """Saved in training states, so that a resumed run compares with the best value found before."""
        return {"best_metric": self.best_metric, "best_metric_epoch": self.best_metric_epoch,
                "checkpoint_saved": self.checkpoint_saved}

    def load_state_dict(self, state_dict: dict[str, Any], /) -> None:
        self.best_metric = state_dict["best_metric"]
        self.best_metric_epoch = state_dict["best_metric_epoch"]
        self.checkpoint_saved = state_dict["checkpoint_saved"]

    def _save_if_best(self, trainer: TrainerLike) -> bool:
        current = latest_metric(trainer, self.watch_metric, type(self).__name__)
        if not is_improvement(current, self.best_metric, self.greater_is_better):
            return False
        self.best_metric, self.best_metric_epoch = current, trainer.run_history.current_epoch
        trainer.save_checkpoint(
            save_path=self.save_path,
            checkpoint_kwargs={self.watch_metric: current, "epoch": self.best_metric_epoch},
            save_optimizer=self.save_optimizer,
            save_scheduler=self.save_scheduler,
        )
        self.checkpoint_saved = True
        return True

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if self.reset_on_train:
            self.best_metric, self.best_metric_epoch, self.checkpoint_saved = None, None, False

    @override
    def on_training_run_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._save_if_best(trainer)

    @override
    def on_training_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if not self.load_saved_checkpoint:
            return
        if not self.checkpoint_saved:
            trainer.print(f"No checkpoint was saved for {self.watch_metric} in this run; keeping the current weights")
            return
        trainer.print(f"Loading checkpoint with {self.watch_metric}: {self.best_metric} "
                      f"from epoch {self.best_metric_epoch}")
        trainer.load_checkpoint(self.save_path)
