"""The loop's multi-process duties (pta/base.py): per-process seeds, and a stop raised at an epoch-level event.

    torchrun --nproc_per_node 2 tests/distributed/workers/base_loop.py OUT_DIR

A trainer with ``seed=3`` records a random draw at ``on_training_run_start`` (``seed=`` seeds each process
differently, as Accelerate's ``set_seed(device_specific=True)``). Rank 1 raises ``StopTrainingError`` at the
first ``on_train_epoch_end``: the epoch-level events are agreement points, so both ranks stop there, after
the first epoch's 4 steps.

Then a run of 2 epochs of 100 steps in which rank 1's steps are 3 ms slower: without a fixed
``agreement_interval`` the processes agree about once a second, at the same steps on both ranks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

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


class RecordAgreements(TrainerCallback):
    """Records (epoch, step index or None) of every agreement of the run."""

    def __init__(self) -> None:
        self.agreements: list[tuple[int, int | None]] = []

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        agreement = cast(DefaultTrainer, trainer)._agreement
        agree = agreement.agree

        def recording(signum: int = 0, step: int | None = None) -> int:
            self.agreements.append((trainer.run_history.current_epoch, step))
            return agree(signum, step)

        agreement.agree = recording  # type: ignore[method-assign]  # a recording wrapper, same signature

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if rank() == 1:
            time.sleep(0.003)


def adaptive_agreements() -> list[tuple[int, int | None]]:
    model = mlp(seed=0)
    recorder = RecordAgreements()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.01), callbacks=[recorder],
                             accelerator_options=accelerator_options(), interrupt_state_dir=None)
    trainer.train(regression_data(800, seed=1), num_epochs=2, per_device_batch_size=4)
    return recorder.agreements


def main(out_dir: Path) -> dict[str, Any]:
    model = mlp(seed=0)
    observer = Observer()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.01), callbacks=[observer],
                             accelerator_options=accelerator_options(), interrupt_state_dir=None, seed=3)
    trainer.train(regression_data(32, seed=1), num_epochs=3, per_device_batch_size=4)
    return {"draw": observer.draw, "steps": observer.steps, "stop_events": observer.stop_events,
            "epoch": trainer.run_history.current_epoch, "agreements": adaptive_agreements()}


if __name__ == "__main__":
    run_worker(main)
