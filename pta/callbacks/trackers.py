"""Logs the run history to experiment trackers (TensorBoard, W&B, MLflow, ...) through Accelerate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from typing_extensions import override

from pta._accelerate import (
    TRACKER_PACKAGES,
    ExperimentTracker,
    TrackerConfigValue,
    TrackerGroup,
    TrackerSpec,
    start_trackers,
)
from pta._types import BatchOutput
from pta.callbacks._numbers import as_number
from pta.callbacks._step_metrics import StepMetrics
from pta.callbacks.base import TrainerCallback
from pta.protocols import TrainerLike
from pta.tracking import RunHistory

__all__ = [
    "TRACKER_PACKAGES", "ExperimentTracker", "TrackerCallback", "TrackerConfigValue", "TrackerSpec", "as_number",
]


class TrackerCallback(TrainerCallback):
    """Logs every metric of the run history to Accelerate's experiment trackers, on the main process.

    ::

        TrackerCallback("tensorboard", project_dir="runs", run_name="exp1", config={"lr": 3e-3})

    ``log_with`` takes any tracker Accelerate supports (``"tensorboard"``, ``"wandb"``, ``"mlflow"``,
    ``"comet_ml"``, ``"aim"``, ``"clearml"``, ``"dvclive"``, ``"swanlab"``, ``"trackio"``), a list of
    them, ``"all"`` (every one installed) or instances of ``accelerate.tracking.GeneralTracker``
    subclasses. A tracker named here whose package is missing raises ``ImportError`` when the run starts.

    After each epoch (training and evaluation done, other callbacks' metrics included) every metric
    that received a value since the last log is logged with its latest value at ``step = epoch``; what
    a run stopped early recorded is logged at its end. Metrics added by other callbacks with
    ``trainer.run_history.update_metric`` are logged too; values that are not numbers are skipped.
    ``trainer.evaluate()`` runs are logged at their end (``evaluation_loss``, step 1).

    Every ``log_every_n_updates`` optimizer updates (default 50; ``None``: never) it also logs, at
    ``step = trainer.num_updates``: ``train_loss_step`` (the main process's mean loss over those updates),
    ``lr`` (``lr_group_<i>`` per param group when there are several) and ``samples_per_second`` (all
    processes). The loss is read from the device once per N updates, never on the steps in between.

    Trackers start with each run (``run_name`` is Accelerate's project name: TensorBoard writes to
    ``project_dir/run_name``) and are finished when it ends. Every tracker writes under ``project_dir``:
    MLflow's store and artifacts (``project_dir/mlflow.db``, ``project_dir/mlartifacts``; unless
    ``MLFLOW_TRACKING_URI`` is set), W&B, DVCLive and SwanLab files, Aim's repository. A resumed run logs
    only new values. ``init_kwargs`` maps a tracker name to its own options, e.g. ``{"wandb": {"entity": "me"}}``
    (an output location given there wins).
    """

    def __init__(
        self,
        log_with: TrackerSpec | Sequence[TrackerSpec],
        project_dir: str | Path | None = "runs",
        run_name: str = "pta",
        config: Mapping[str, TrackerConfigValue] | None = None,
        init_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        log_every_n_updates: int | None = 50,
    ) -> None:
        self.log_with = log_with
        self.log_every_n_updates = log_every_n_updates
        self._steps = StepMetrics(log_every_n_updates) if log_every_n_updates is not None else None
        self.project_dir = project_dir
        self.run_name = run_name
        self.config = dict(config) if config is not None else None
        self.init_kwargs = init_kwargs
        self._trackers: TrackerGroup | None = None
        self._logged_counts: dict[str, int] = {}

    @property
    def trackers(self) -> TrackerGroup | None:
        """The trackers of the run in progress on the main process (``None`` elsewhere and between runs)."""
        return self._trackers

    def get_tracker(self, name: str, unwrap: bool = False) -> Any:
        """The running tracker called ``name``; ``unwrap=True`` gives the library's object (e.g. TensorBoard's
        ``SummaryWriter``, a W&B run) for logging images or tables yourself. Main process only."""
        if self._trackers is None:
            raise RuntimeError("trackers exist on the main process while a run is in progress")
        return self._trackers.get(name, unwrap=unwrap)

    # ------------------------------------------------------------------ events
    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._start(trainer)

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, **kwargs: Any) -> None:
        steps = self._steps
        if steps is None or self._trackers is None or not steps.due(trainer):
            return
        self._trackers.log(steps.collect(trainer, batch_output), step=trainer.num_updates)

    @override
    def on_training_run_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._log_new_values(trainer)

    @override
    def on_training_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._log_new_values(trainer)
        self._finish()

    @override
    def on_evaluation_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._start(trainer)

    @override
    def on_evaluation_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._log_new_values(trainer)
        self._finish()

    # ------------------------------------------------------------------ work
    def _start(self, trainer: TrainerLike) -> None:
        self._finish()  # a previous run that raised may have left its trackers open
        if not trainer.is_world_main_process:
            return
        self._trackers = start_trackers(self.log_with, self.run_name, self.project_dir, self.config, self.init_kwargs)
        if self._steps is not None:
            self._steps.start(trainer)
        history = trainer.run_history
        self._logged_counts = {name: len(history.get_metric_values(name)) for name in history.get_metric_names()}

    def _log_new_values(self, trainer: TrainerLike) -> None:
        if self._trackers is None:
            return
        values = new_metric_values(trainer.run_history, self._logged_counts)
        if values:
            self._trackers.log(values, step=trainer.run_history.current_epoch)

    def _finish(self) -> None:
        trackers, self._trackers = self._trackers, None
        if trackers is not None:
            trackers.finish()


def new_metric_values(history: RunHistory, logged_counts: dict[str, int]) -> dict[str, float | int]:
    """The latest value of every metric recorded since ``logged_counts`` (name -> values already seen),
    which is updated; values that are not real numbers are left out."""
    latest: dict[str, float | int] = {}
    for name in sorted(history.get_metric_names()):
        values = history.get_metric_values(name)
        if len(values) <= logged_counts.get(name, 0):
            continue
        logged_counts[name] = len(values)
        number = as_number(values[-1])
        if number is not None:
            latest[name] = number
    return latest
