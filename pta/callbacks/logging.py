"""One compact console line per epoch; subclass and override ``log_metrics`` for other destinations."""

from __future__ import annotations

import time
from typing import Any

from typing_extensions import override

from pta.callbacks._console import dataset_length, format_count, format_duration, format_metrics
from pta.callbacks.base import TrainerCallback
from pta.protocols import TrainerLike


class LogMetricsCallback(TrainerCallback):
    """Prints (once per machine, flushed) one line per epoch with every metric recorded in it at about
    4 significant digits, the epoch's time, the training throughput and the time left for the run::

        epoch 3/15  train_loss_epoch 0.2134  eval_loss_epoch 0.1002  |  0.61s, 2,358 samples/s, 7.9s left

    Samples/s counts training samples over all processes during the training part of the epoch; the
    time left is the mean epoch time so far times the epochs left. ``trainer.evaluate()`` prints one
    ``evaluation`` line; intermediate evaluations print theirs when they end.

    ``log_metrics(trainer, metrics)`` receives, after each epoch (training and evaluation done, metrics
    of other callbacks included), the latest value of every metric recorded in that epoch; override it
    to send them elsewhere (the default prints the line above).
    """

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._run_start = self._epoch_start = self._train_seconds = 0.0
        self._epochs_done = 0
        self._updates_at_start = 0
        self._first_epoch = 1
        self._num_epochs = 1
        self._line_prefix = ""
        self._suffix = ""

    # ------------------------------------------------------------------ training runs
    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        history = trainer.run_history
        self._seen = {name: len(history.get_metric_values(name)) for name in history.get_metric_names()}
        self._run_start = time.perf_counter()
        self._epochs_done = 0
        # the epoch train() started at (a resumed run restores it), so "k/n" counts this call's epochs
        self._first_epoch = int(getattr(trainer, "_first_epoch", history.current_epoch))
        self._num_epochs = trainer.run_config.num_epochs

    @override
    def on_train_epoch_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._epoch_start = time.perf_counter()
        self._updates_at_start = trainer.num_updates

    @override
    def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._train_seconds = time.perf_counter() - self._epoch_start
        self._suffix = self._throughput(trainer)

    @override
    def on_eval_epoch_end(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        if is_intermediate:
            self._line_prefix = f"intermediate eval (update {trainer.num_updates})"
            self.log_metrics(trainer, self._new_metrics(trainer, only="intermediate"))

    @override
    def on_training_run_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._epochs_done += 1
        epoch = trainer.run_history.current_epoch - self._first_epoch + 1
        self._line_prefix = f"epoch {epoch:>{len(str(self._num_epochs))}}/{self._num_epochs}"  # aligned in logs
        elapsed = time.perf_counter() - self._run_start
        left = self._num_epochs - epoch
        timing = [format_duration(time.perf_counter() - self._epoch_start), self._suffix]
        if left > 0 and self._epochs_done:
            timing.append(f"{format_duration(elapsed / self._epochs_done * left)} left")
        self._timing = ", ".join(part for part in timing if part)
        self.log_metrics(trainer, self._new_metrics(trainer))
        self._timing = ""

    @override
    def on_training_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        remaining = self._new_metrics(trainer)  # what a run stopped mid-epoch recorded
        if remaining:
            self._line_prefix = f"epoch {trainer.run_history.current_epoch - self._first_epoch + 1} (stopped)"
            self.log_metrics(trainer, remaining)

    # ------------------------------------------------------------------ evaluation runs
    @override
    def on_evaluation_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._seen = {}
        self._epoch_start = time.perf_counter()

    @override
    def on_evaluation_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._line_prefix = "evaluation"
        self._timing = format_duration(time.perf_counter() - self._epoch_start)
        self.log_metrics(trainer, self._new_metrics(trainer))
        self._timing = ""

    # ------------------------------------------------------------------ output
    _timing = ""

    def log_metrics(self, trainer: TrainerLike, metrics: dict[str, Any]) -> None:
        """Print ``metrics`` on one line (override to log them elsewhere)."""
        line = f"{self._line_prefix}  {format_metrics(metrics)}".rstrip()
        if self._timing:
            line = f"{line}  |  {self._timing}"
        trainer.print(line, flush=True)

    def _new_metrics(self, trainer: TrainerLike, only: str = "") -> dict[str, Any]:
        """The latest value of every metric (containing ``only``) recorded since the last call, sorted
        with the training metrics first."""
        history = trainer.run_history
        new: dict[str, Any] = {}
        names = sorted(history.get_metric_names(), key=lambda name: ("train" not in name, name))
        for name in names:
            values = history.get_metric_values(name)
            if only in name and len(values) > self._seen.get(name, 0):
                self._seen[name] = len(values)
                new[name] = values[-1]
        return new

    def _throughput(self, trainer: TrainerLike) -> str:
        config = trainer.run_config
        updates = trainer.num_updates - self._updates_at_start
        total = dataset_length(trainer.train_dataloader)
        if updates == config.num_update_steps_per_epoch and total is not None:
            samples = total  # a whole epoch: every sample once, over all processes
        else:
            samples = updates * (config.train_total_batch_size or 0)
        if not samples or self._train_seconds <= 0:
            return ""
        return f"{format_count(samples / self._train_seconds)} samples/s"
