"""Compute torchmetrics metrics in a callback, across processes, and record them in the run history.

Each evaluation step's predictions and targets are gathered from all processes with
``trainer.gather`` (each sample once: padding steps contribute nothing) and fed to the metric on every
process; the metric's own cross-process sync is switched off (``sync_on_compute=False``) because the
data is already complete. The epoch's value goes into the run history, so the default
``LogMetricsCallback`` prints it and loggers (``TrackerCallback``, ``CSVLoggerCallback``) record it.

    pip install torchmetrics
    python examples/metrics_torchmetrics.py
    torchrun --nproc_per_node 2 examples/metrics_torchmetrics.py
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from quickstart import digits_datasets, make_model
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from typing_extensions import override

from pta import DefaultTrainer, TrainerCallback, set_seed
from pta._types import BatchOutput
from pta.callbacks import get_default_callbacks
from pta.protocols import TrainerLike


class ClassificationMetricsCallback(TrainerCallback):
    """Accuracy and macro F1 over each evaluation epoch, recorded as ``accuracy`` and ``f1``."""

    def __init__(self, num_classes: int) -> None:
        self.metrics = MetricCollection(
            {
                "accuracy": MulticlassAccuracy(num_classes=num_classes, average="micro", sync_on_compute=False),
                "f1": MulticlassF1Score(num_classes=num_classes, average="macro", sync_on_compute=False),
            }
        )

    def _move(self, trainer: TrainerLike) -> None:
        self.metrics.to(trainer.device)

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._move(trainer)

    @override
    def on_evaluation_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._move(trainer)

    @override
    def on_eval_step_end(
        self, trainer: TrainerLike, *, batch_output: BatchOutput, batch: Any, **kwargs: Any
    ) -> None:
        if "model_outputs" not in batch_output:  # optional in BatchOutput; pta's own eval step returns it
            raise KeyError("ClassificationMetricsCallback needs the model_outputs of calculate_eval_batch_loss")
        predictions = trainer.gather(batch_output["model_outputs"].argmax(dim=-1))
        targets = trainer.gather(batch[1])
        self.metrics.update(predictions, targets)

    @override
    def on_eval_epoch_end(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        for name, value in self.metrics.compute().items():
            trainer.run_history.update_metric(name, float(value))
        self.metrics.reset()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--no-progress-bar", action="store_true")
    args = parser.parse_args(argv)

    set_seed(0)
    train_set, test_set = digits_datasets()
    model = make_model()
    # Before the default callbacks, so that LogMetricsCallback already sees the epoch's metrics.
    callbacks: list[TrainerCallback | type[TrainerCallback]] = [
        ClassificationMetricsCallback(num_classes=10), *get_default_callbacks(progress_bar=not args.no_progress_bar)
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    trainer: DefaultTrainer = DefaultTrainer(model, nn.CrossEntropyLoss(), optimizer, callbacks=callbacks, seed=0)
    trainer.train(train_set, num_epochs=args.epochs, eval_dataset=test_set, per_device_batch_size=32)
    history = trainer.run_history
    return {name: float(history.get_latest_metric(name)) for name in ("accuracy", "f1", "eval_loss_epoch")}


if __name__ == "__main__":
    main()
