"""2 processes: resume mid-epoch, predict() in dataset order, a cosine schedule ending at its minimum."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset
from typing_extensions import override

from pta import DefaultTrainer, TrainerCallback, reset_accelerate_state
from pta.protocols import TrainerLike
from pta.schedulers import CosineLrScheduler
from tests._helpers import manual_seed
from tests.distributed.workers._common import accelerator_options, run_worker

LR_MIN = 1e-4


def data(n: int = 52) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True))


class Stop(TrainerCallback):
    def __init__(self, directory: Path, at: int) -> None:
        self.directory, self.at = directory, at

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if trainer.num_updates == self.at:
            trainer.save_training_state(self.directory)
            raise KeyboardInterrupt


def run(callbacks: list[TrainerCallback], resume_from: Path | None = None) -> DefaultTrainer | None:
    reset_accelerate_state()
    manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 1))
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05), callbacks=callbacks,
                             accelerator_options=accelerator_options())
    try:
        trainer.train(data(), 3, eval_dataset=data(37), per_device_batch_size=4, resume_from=resume_from,
                      create_scheduler_fn=CosineLrScheduler.create_scheduler_fn(lr_min=LR_MIN))
    except KeyboardInterrupt:
        return None
    return trainer


def main(out_dir: Path) -> dict[str, Any]:
    reference = run([])
    assert reference is not None
    run([Stop(out_dir / "state", at=9)])  # 7 updates per epoch on each process: mid-epoch 2
    resumed = run([], out_dir / "state")
    assert resumed is not None and resumed.optimizer is not None
    predictions = resumed.predict(data(37), per_device_batch_size=4)
    return {
        "reference": [p.detach() for p in reference.get_model().parameters()],
        "resumed": [p.detach() for p in resumed.get_model().parameters()],
        "history": {name: resumed.run_history.get_metric_values(name) for name in ("train_loss_epoch", "eval_loss_epoch")},
        "reference_history": {name: reference.run_history.get_metric_values(name)
                              for name in ("train_loss_epoch", "eval_loss_epoch")},
        "predictions": predictions,
        "final_lr": resumed.optimizer.param_groups[0]["lr"],
        "num_processes": resumed.run_config.num_processes,
    }


if __name__ == "__main__":
    run_worker(main)
