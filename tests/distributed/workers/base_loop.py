"""The loop's multi-process duties (pta/base.py): per-process seeds, and a stop raised at an epoch-level event.

    torchrun --nproc_per_node 2 tests/distributed/workers/base_loop.py OUT_DIR

A trainer with ``seed=3`` records a random draw at ``on_training_run_start`` (``seed=`` seeds each process
differently, as Accelerate's ``set_seed(device_specific=True)``). Rank 1 raises ``StopTrainingError`` at the
first ``on_train_epoch_end``: the epoch-level events are agreement points, so both ranks stop there, after
the first epoch's 4 steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from typing_extensions import override

from pta import DefaultTrainer
from pta.callbacks import StopTrainingError, TrainerCallback
from pta.protocols import TrainerLike
from tests._helpers import mlp, regression_data
from tests.distributed.workers._common import accelerator_options, rank, run_worker

STEPS_PER_EPOCH = 4
"""32 samples, 2 processes, batches of 4."""


class Observer(TrainerCallback):
    def __init__(self) -> None:
        self.draw: list[float] = []
        self.steps = 0
        self.stop_events = 0

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.draw = torch.rand(3).tolist()  # pyright: ignore[reportUnknownMemberType]  # Tensor.tolist() is untyped

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.steps += 1

    @override
    def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if rank() == 1:
            raise StopTrainingError("rank 1 stops at the epoch's end")

    @override
    def on_stop_training_error(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.stop_events += 1


def main(out_dir: Path) -> dict[str, Any]:
    model = mlp(seed=0)
    observer = Observer()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.01), callbacks=[observer],
                             accelerator_options=accelerator_options(), interrupt_state_dir=None, seed=3)
    trainer.train(regression_data(32, seed=1), num_epochs=3, per_device_batch_size=4)
    return {"draw": observer.draw, "steps": observer.steps, "stop_events": observer.stop_events,
            "epoch": trainer.run_history.current_epoch}


if __name__ == "__main__":
    run_worker(main)
