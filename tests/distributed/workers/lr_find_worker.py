"""``lr_find`` on two real processes (plain ``torchrun``, gloo).

    torchrun --nproc_per_node 2 tests/distributed/workers/lr_find_worker.py OUT_DIR

Each rank trains on its half of the least-squares problem of tests/test_lr_finder.py; the result (the
losses averaged over processes) must be the same on both ranks, the weights restored, and a normal
``train`` afterwards must still synchronise the ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pta import DefaultTrainer
from pta.lr_finder import lr_find
from tests._helpers import manual_seed
from tests.distributed.workers._common import accelerator_options, run_worker


def least_squares(n: int = 4096) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=generator)
    y = x @ torch.randn(8, 1, generator=generator) + 0.01 * torch.randn(n, 1, generator=generator)
    return TensorDataset(x, y)


def main(out_dir: Path) -> dict[str, Any]:
    manual_seed(0)
    model = nn.Linear(8, 1)
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=(),
                             accelerator_options=accelerator_options())
    before = [p.detach().clone() for p in model.parameters()]
    result = lr_find(trainer, least_squares(), start_lr=1e-5, end_lr=10.0, num_steps=100, per_device_batch_size=32)
    restored = all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    trainer.train(least_squares(512), 1, per_device_batch_size=32)
    return {
        "world_size": trainer.run_config.num_processes,
        "lrs": torch.tensor(result.lrs), "losses": torch.tensor(result.losses),
        "suggestion": result.suggestion, "diverged": result.diverged, "restored": restored,
        "weights_after_train": torch.cat([p.detach().flatten() for p in trainer.get_model().parameters()]),
    }


if __name__ == "__main__":
    run_worker(main)
