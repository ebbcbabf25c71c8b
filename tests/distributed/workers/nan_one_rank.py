"""Claim 5: a NaN loss on rank 1 only stops both ranks together, without a hang or ``sys.exit``.

    torchrun --nproc_per_node 2 tests/distributed/workers/nan_one_rank.py OUT_DIR

Two runs: the default callbacks (the NaN check runs at the end of the epoch) and
``TerminateOnNaNCallback(check_every_n_steps=1)`` (the check runs every step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from typing_extensions import override

from pta import BatchOutput, DefaultTrainer
from pta.callbacks import NonFiniteLossError, TerminateOnNaNCallback, TrainerCallback, get_default_callbacks
from pta.protocols import TrainerLike
from tests._helpers import mlp, regression_data
from tests.distributed.workers._common import accelerator_options, rank, run_worker

TRAIN_SIZE, BATCH_SIZE, EPOCHS = 48, 4, 3
STEPS_PER_EPOCH = TRAIN_SIZE // (2 * BATCH_SIZE)
NAN_AT_STEP = 8
"""Global training step (counted from 1) whose loss is NaN on rank 1: step 2 of epoch 2."""


class NaNOnRankOneTrainer(DefaultTrainer):
    agreement_interval = 1  # agree after every step, so that both stop right after the NaN step

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_steps = 0

    @override
    def calculate_train_batch_loss(self, batch: Any) -> BatchOutput:
        output = super().calculate_train_batch_loss(batch)
        self.train_steps += 1
        if rank() == 1 and self.train_steps == NAN_AT_STEP:
            output["loss"] = output["loss"] * float("nan")
        return output


class Observer(TrainerCallback):
    def __init__(self) -> None:
        self.step_ends = 0
        self.stop_errors = 0
        self.eval_epochs = 0
        self.run_ends = 0

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.step_ends += 1

    @override
    def on_eval_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.eval_epochs += 1

    @override
    def on_stop_training_error(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.stop_errors += 1

    @override
    def on_training_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.run_ends += 1


def run(nan_callback: TerminateOnNaNCallback | type[TerminateOnNaNCallback]) -> dict[str, Any]:
    model = mlp(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    observer = Observer()
    others = [cb for cb in get_default_callbacks(progress_bar=False) if cb is not TerminateOnNaNCallback]
    # The observer comes first so that it sees on_training_run_end before the NaN callback raises there.
    trainer = NaNOnRankOneTrainer(model, nn.MSELoss(), optimizer, callbacks=[observer, *others, nan_callback],
                                  accelerator_options=accelerator_options())
    raised = "nothing"
    message = ""
    try:
        trainer.train(regression_data(TRAIN_SIZE, seed=1), num_epochs=EPOCHS, per_device_batch_size=BATCH_SIZE,
                      eval_dataset=regression_data(20, seed=2))
    except NonFiniteLossError as error:
        raised, message = "NonFiniteLossError", str(error)
    # Anything else (SystemExit included) propagates and fails the worker.
    return {
        "raised": raised,
        "message": message,
        "train_steps": trainer.train_steps,
        "step_ends": observer.step_ends,
        "stop_errors": observer.stop_errors,
        "eval_epochs": observer.eval_epochs,
        "run_ends": observer.run_ends,
        "current_epoch": trainer.run_history.current_epoch,
        "train_loss_epoch": trainer.run_history.get_metric_values("train_loss_epoch"),
        "num_processes": trainer.run_config.num_processes,
    }


def main(out_dir: Path) -> dict[str, Any]:
    return {
        "epoch_check": run(TerminateOnNaNCallback),
        "step_check": run(TerminateOnNaNCallback(check_every_n_steps=1)),
    }


if __name__ == "__main__":
    run_worker(main)
