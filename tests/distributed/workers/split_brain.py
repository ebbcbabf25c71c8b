"""Claim 6: a launch where Accelerate sets up fewer processes than were launched raises LaunchError.

    torchrun --nproc_per_node 2 tests/distributed/workers/split_brain.py OUT_DIR
    WORLD_SIZE=2 python tests/distributed/workers/split_brain.py OUT_DIR

``accelerator_options={"cpu": False}`` switches off pta's CPU default, so on a machine without a GPU
Accelerate gives each process ``DistributedType.NO`` and one process (the "split brain"); under
``torchrun`` Accelerate still initialises ``torch.distributed`` (default backend) with world size 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pta import DefaultTrainer, LaunchError
from tests._helpers import linear_model
from tests.distributed.workers._common import accelerator_options, run_worker


def main(out_dir: Path) -> dict[str, Any]:
    model = linear_model()
    result: dict[str, Any] = {"raised": "nothing", "message": ""}
    try:
        DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=(),
                       accelerator_options=accelerator_options(cpu=False))
    except LaunchError as error:
        result["raised"], result["message"] = "LaunchError", str(error)
    initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
    result["dist_initialized"] = initialized
    result["dist_world_size"] = torch.distributed.get_world_size() if initialized else None
    return result


if __name__ == "__main__":
    run_worker(main)
