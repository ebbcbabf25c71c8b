"""Epoch losses are sample-weighted means over processes, even when the processes' batch sizes differ.

    torchrun --nproc_per_node 2 tests/distributed/workers/weighted_mean.py OUT_DIR

A batch sampler alternates batches of 4 samples and of 1 sample; Accelerate deals batches to the ranks in
turn, so rank 0 gets every 4-sample batch and rank 1 every single sample. With ``lr=0`` the weights never
change, so the pytest side computes each sample's loss, and the true mean, from the data alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override

from pta import DefaultTrainer
from pta.callbacks import TrainerCallback
from pta.protocols import TrainerLike
from tests._helpers import linear_model
from tests.distributed.workers._common import accelerator_options, run_worker

BIG, SMALL, ROUNDS = 4, 1, 4


def batches() -> list[list[int]]:
    """[0..3], [4], [5..8], [9], ...: a 4-sample batch then a 1-sample batch, ``ROUNDS`` times."""
    out: list[list[int]] = []
    start = 0
    for _ in range(ROUNDS):
        out += [list(range(start, start + BIG)), [start + BIG]]
        start += BIG + SMALL
    return out


def dataset() -> TensorDataset:
    """Targets of the single samples are far off, so their loss differs from the 4-sample batches' loss."""
    generator = torch.Generator().manual_seed(5)
    n = ROUNDS * (BIG + SMALL)
    x = torch.randn(n, 4, generator=generator)
    y = torch.randn(n, 1, generator=generator)
    for batch in batches()[1::2]:
        y[batch] += 10.0
    return TensorDataset(x, y)


class UnevenBatches(DefaultTrainer):
    @override
    def create_train_dataloader(self, batch_size: int, train_dl_kwargs: dict[str, Any] | None = None) -> DataLoader[Any]:
        return DataLoader(self.train_dataset, batch_sampler=batches())

    @override
    def create_eval_dataloader(self, batch_size: int, eval_dl_kwargs: dict[str, Any] | None = None) -> DataLoader[Any]:
        return DataLoader(self.eval_dataset, batch_sampler=batches())


class Sizes(TrainerCallback):
    def __init__(self) -> None:
        self.train: list[int] = []
        self.eval: list[int] = []

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, batch: Any, **kwargs: Any) -> None:
        self.train.append(int(batch[1].shape[0]))

    @override
    def on_eval_step_end(self, trainer: TrainerLike, *, batch: Any, **kwargs: Any) -> None:
        self.eval.append(int(batch[1].shape[0]))


def main(out_dir: Path) -> dict[str, Any]:
    model = linear_model()
    sizes = Sizes()
    trainer = UnevenBatches(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.0), callbacks=[sizes],
                            accelerator_options=accelerator_options())
    trainer.train(dataset(), num_epochs=1, eval_dataset=dataset(), per_device_batch_size=BIG)
    result = {
        "num_processes": trainer.run_config.num_processes,
        "train_loss_epoch": trainer.run_history.get_metric_values("train_loss_epoch"),
        "eval_loss_epoch": trainer.run_history.get_metric_values("eval_loss_epoch"),
    }
    trainer.evaluate(dataset(), per_device_batch_size=BIG)  # resets the run history
    return {**result, "evaluation_loss": trainer.run_history.get_metric_values("evaluation_loss"),
            "train_sizes": sizes.train, "eval_sizes": sizes.eval}


if __name__ == "__main__":
    run_worker(main)
