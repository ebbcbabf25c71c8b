"""Train a DefaultTrainer for one epoch and print what the launch really gave this process.

Prints ``RANK r/N distributed=<bool> checksum=<sum of the final weights>``: a real N-process run has
N lines with ranks 0..N-1 and one checksum (DDP keeps the weights in sync); a launch that silently
started fewer processes, or processes that do not synchronise, shows up in these lines.

    python tests/launch_scripts/check_ranks.py
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 tests/launch_scripts/check_ranks.py
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pta import DefaultTrainer, set_seed


def train_and_report() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)
    data = TensorDataset(x, x.sum(1, keepdim=True))
    set_seed(0)
    model = nn.Linear(4, 1)
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05), callbacks=())
    trainer.train(data, num_epochs=1, per_device_batch_size=8)
    config = trainer.run_config
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    checksum = float(sum(float(p.detach().double().sum()) for p in trainer.get_model().parameters()))
    line = f"RANK {rank}/{config.num_processes} distributed={config.is_distributed} checksum={checksum:.12f}"
    print(line, flush=True)


if __name__ == "__main__":
    train_and_report()
    sys.stdout.flush()
    os._exit(0)  # gloo sometimes aborts at interpreter exit; the work is done
