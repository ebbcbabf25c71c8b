"""Stops a run when a watched metric stops improving."""

from __future__ import annotations

import math
from typing import Any

from typing_extensions import override

from pta.callbacks._trainer_access import check_positive, is_improvement, latest_metric
from pta.callbacks.base import StopTrainingError, TrainerCallback
from pta.protocols import TrainerLike


class EarlyStoppingCallback(TrainerCallback):
    """Raises ``StopTrainingError`` once ``watch_metric`` has not improved for ``early_stopping_patience``
    epochs in a row.

    After each epoch (``on_training_run_epoch_end``) the latest value is compared with the best so far:
    it is an improvement only if it is better by *more than* ``early_stopping_threshold`` (an absolute
    amount); then it becomes the best and the counter goes back to 0, otherwise the counter goes up (the
    best is kept, so small gains add up until they exceed the threshold). The first value only sets the
    best. A NaN value is never an improvement.

    Every process stops at the same epoch: pta's losses are means over all processes, and for a metric
    recorded per process the main process's value is used (see ``docs/callbacks.md``). The best value
    and the counter are saved in training states (``state_dict``), so a resumed run continues them.

    :param early_stopping_patience: epochs without improvement after which training stops (>= 1)
    :param early_stopping_threshold: the minimum change (>= 0) that counts as an improvement
    :param watch_metric: the run-history metric to watch
    :param greater_is_better: whether a higher ``watch_metric`` is better
    :param reset_on_train: forget the best value and the counter at the start of each training run
    """

    def __init__(
        self,
        early_stopping_patience: int = 1,
        early_stopping_threshold: float = 0.01,
        watch_metric: str = "eval_loss_epoch",
        greater_is_better: bool = False,
        reset_on_train: bool = True,
    ) -> None:
        check_positive("early_stopping_patience", early_stopping_patience)
        if not math.isfinite(early_stopping_threshold) or early_stopping_threshold < 0:
            raise ValueError(f"early_stopping_threshold must be a finite number >= 0, got {early_stopping_threshold!r}")
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = early_stopping_threshold
        self.watch_metric = watch_metric
        self.greater_is_better = greater_is_better
        self.reset_on_train = reset_on_train
        self.early_stopping_patience_counter = 0
        self.best_metric: float | None = None

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if self.reset_on_train:
            self.best_metric = None
            self.early_stopping_patience_counter = 0

    @override
    def on_training_run_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        current = latest_metric(trainer, self.watch_metric, type(self).__name__)
        if self.best_metric is None:
            self.best_metric = current
        elif is_improvement(current, self.best_metric, self.greater_is_better, self.early_stopping_threshold):
            trainer.print(f"\nImprovement of {abs(current - self.best_metric)} observed, resetting counter.")
            self.best_metric = current
            self.early_stopping_patience_counter = 0
            self._print_counter(trainer)
        else:
            trainer.print("\nNo improvement above threshold observed, incrementing counter.")
            self.early_stopping_patience_counter += 1
            self._print_counter(trainer)
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
            raise StopTrainingError(
                f"Stopping training due to no improvement of {self.watch_metric} "
                f"after {self.early_stopping_patience} epochs"
            )

    def state_dict(self) -> dict[str, Any]:
        """Saved in training states, so that a resumed run keeps its best value and patience count."""
        return {"best_metric": self.best_metric,
                "early_stopping_patience_counter": self.early_stopping_patience_counter}

    def load_state_dict(self, state_dict: dict[str, Any], /) -> None:
        self.best_metric = state_dict["best_metric"]
        self.early_stopping_patience_counter = state_dict["early_stopping_patience_counter"]

    def _print_counter(self, trainer: TrainerLike) -> None:
        trainer.print(f"Early stopping counter: {self.early_stopping_patience_counter}/{self.early_stopping_patience}")
