"""Console progress: start/end messages and tqdm bars, on the main process only."""

from __future__ import annotations

import time
from collections.abc import Sized
from typing import Any

from tqdm.auto import tqdm
from typing_extensions import override

from pta._types import BatchOutput
from pta.callbacks.base import TrainerCallback
from pta.protocols import TrainerLike


class PrintProgressCallback(TrainerCallback):
    """Prints a line when runs and epochs start and when runs end."""

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        trainer.print("\nStarting training run")

    @override
    def on_train_epoch_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        trainer.print(f"\nStarting epoch {trainer.run_history.current_epoch}")

    @override
    def on_training_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        trainer.print("Finishing training run")

    @override
    def on_eval_epoch_start(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        trainer.print("\nStarting eval epoch")

    @override
    def on_evaluation_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        trainer.print("\nStarting evaluation run")

    @override
    def on_evaluation_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        trainer.print("Finishing evaluation run")


class ProgressBarCallback(TrainerCallback):
    """A tqdm bar per training and evaluation epoch on the local main process.

    The training bar shows the latest loss, read from the device at most once every
    ``loss_refresh_seconds`` (never once per step: that would make every step wait for the device).
    """

    def __init__(self, loss_refresh_seconds: float = 1.0) -> None:
        self.loss_refresh_seconds = loss_refresh_seconds
        self.pbar: Any = None
        self.eval_pbar: Any = None
        self._last_refresh = 0.0

    @staticmethod
    def _bar(trainer: TrainerLike, loader: object, desc: str) -> Any:
        return tqdm(total=len(loader) if isinstance(loader, Sized) else None, desc=desc,
                    disable=not trainer.is_local_main_process, leave=False, dynamic_ncols=True)

    @override
    def on_train_epoch_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.pbar = self._bar(trainer, trainer.train_dataloader, f"epoch {trainer.run_history.current_epoch}")
        self._last_refresh = time.monotonic()

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, **kwargs: Any) -> None:
        self.pbar.update(1)
        if not self.pbar.disable:
            now = time.monotonic()
            if now - self._last_refresh >= self.loss_refresh_seconds:
                self._last_refresh = now
                self.pbar.set_postfix(loss=f"{batch_output['loss'].item():.4f}", refresh=False)

    @override
    def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.pbar.close()

    @override
    def on_eval_epoch_start(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        self.eval_pbar = self._bar(trainer, trainer.eval_dataloader, "eval")

    @override
    def on_eval_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, **kwargs: Any) -> None:
        self.eval_pbar.update(1)

    @override
    def on_eval_epoch_end(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        self.eval_pbar.close()
