"""Issue 10 item 2: resume a 2-process run from EVERY save position and compare bit for bit.

    torchrun --nproc_per_node 2 tests/distributed/workers/resume_every_step.py OUT_DIR CONFIG

CONFIG ``plain``: 2 epochs of 4 batches per process, the last one short (30 samples, 4 per batch).
CONFIG ``full``: the same with gradient accumulation 3 (a short last window), a StepLR scheduler and
``num_workers=2``. The reference run saves a training state after every step and after every epoch;
each state is then resumed in this process and must end with the reference's parameters and history.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset
from typing_extensions import override

from pta import DefaultTrainer, TrainerCallback, reset_accelerate_state
from pta.protocols import TrainerLike
from tests._helpers import manual_seed
from tests.distributed.workers._common import accelerator_options, run_worker

EPOCHS, BATCH_SIZE, TRAIN_SIZE = 2, 4, 30


def data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g))


class SaveEverywhere(TrainerCallback):
    def __init__(self, directory: Path) -> None:
        self.directory, self.names = directory, list[str]()

    def _save(self, trainer: TrainerLike, name: str) -> None:
        trainer.save_training_state(self.directory / name)
        self.names.append(name)

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._save(trainer, f"e{trainer.run_history.current_epoch}_s{kwargs['step']}")

    @override
    def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._save(trainer, f"e{trainer.run_history.current_epoch}_train_end")

    @override
    def on_training_run_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._save(trainer, f"e{trainer.run_history.current_epoch}_end")


def run(config: str, callbacks: list[TrainerCallback], resume_from: Path | None = None) -> dict[str, Any]:
    reset_accelerate_state()
    manual_seed(1234 if resume_from is None else 99)  # a resumed run starts from an unrelated RNG state
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 1))
    manual_seed(0)
    model.load_state_dict({k: torch.randn_like(v) * 0.3 for k, v in model.state_dict().items()})
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.AdamW(model.parameters(), lr=1e-2),
                             callbacks=callbacks, accelerator_options=accelerator_options(), seed=5)
    full = config == "full"
    trainer.train(
        data(TRAIN_SIZE, 0), EPOCHS, eval_dataset=data(13, 1), per_device_batch_size=BATCH_SIZE,
        gradient_accumulation_steps=3 if full else 1, resume_from=resume_from,
        create_scheduler_fn=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.8) if full else None,
        train_dataloader_kwargs={"num_workers": 2} if full else None,
    )
    history = trainer.run_history
    return {"params": [p.detach().clone() for p in trainer.get_model().parameters()],
            "history": {name: history.get_metric_values(name) for name in sorted(history.get_metric_names())}}


def every_position(out_dir: Path, config: str) -> dict[str, Any]:
    saver = SaveEverywhere(out_dir / "states")
    reference = run(config, [saver])
    resumed = {name: run(config, [], out_dir / "states" / name) for name in saver.names}
    return {"reference": reference, "resumed": resumed, "names": saver.names}


def plain(out_dir: Path) -> dict[str, Any]:
    return every_position(out_dir, "plain")


def full(out_dir: Path) -> dict[str, Any]:
    return every_position(out_dir, "full")


if __name__ == "__main__":
    run_worker({"plain": plain, "full": full}[sys.argv[2]])
