"""An ``fsdp_plugin`` under plain ``torchrun`` on CPU: Accelerate would run DDP; pta must refuse.

    torchrun --nproc_per_node 2 tests/distributed/workers/fsdp_cpu_worker.py OUT_DIR
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate.utils.dataclasses import FullyShardedDataParallelPlugin  # pyright: ignore[reportMissingTypeStubs]  # accelerate ships no type information
from torch import nn

from pta import ConfigurationError, DefaultTrainer
from tests.distributed.workers._common import accelerator_options, run_worker


def main(out_dir: Path) -> dict[str, Any]:
    model = nn.Linear(4, 1)
    try:
        DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=(),
                       accelerator_options=accelerator_options(fsdp_plugin=FullyShardedDataParallelPlugin()))
    except ConfigurationError as error:
        return {"error": str(error)}
    return {"error": None}


if __name__ == "__main__":
    run_worker(main)
