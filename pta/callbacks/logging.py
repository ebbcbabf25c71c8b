"""Reports the latest metric values; subclass and override ``log_metrics`` for other destinations."""

from __future__ import annotations

from typing import Any

from typing_extensions import override

from pta.callbacks.base import TrainerCallback
from pta.protocols import TrainerLike


class LogMetricsCallback(TrainerCallback):
    """Prints (once per machine) the latest value of every metric: metrics whose name contains
    ``train`` after each training epoch, all others after each evaluation epoch."""

    @override
    def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._log_latest(trainer, training=True)

    @override
    def on_eval_epoch_end(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        self._log_latest(trainer, training=False)

    def _log_latest(self, trainer: TrainerLike, *, training: bool) -> None:
        history = trainer.run_history
        names = sorted(name for name in history.get_metric_names() if ("train" in name) == training)
        self.log_metrics(trainer, {name: history.get_latest_metric(name) for name in names})

    def log_metrics(self, trainer: TrainerLike, metrics: dict[str, Any]) -> None:
        for name, value in metrics.items():
            trainer.print(f"\n{name}: {value}")
