"""The process decorators of ``pta.utils`` on two real processes.

    torchrun --nproc_per_node 2 tests/distributed/workers/utils_worker.py OUT_DIR after_trainer
    torchrun --nproc_per_node 2 tests/distributed/workers/utils_worker.py OUT_DIR before_trainer

``after_trainer``: a trainer exists (Accelerate is set up for gloo on CPU), then every decorator runs,
including functions that raise on process 0; collectives afterwards show that no process skipped or
added a barrier. ``before_trainer``: the decorators run before any trainer exists (e.g. downloading a
dataset first, the usual order in a script), then a trainer is created.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pta import DefaultTrainer, LaunchError
from pta.utils import local_process_zero_first, local_process_zero_only, world_process_zero_only
from tests._helpers import linear_model
from tests.distributed.workers._common import accelerator_options, rank, run_worker


def make_trainer() -> DefaultTrainer[Any]:
    model = linear_model()
    return DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=(),
                          accelerator_options=accelerator_options())


def fail() -> str:
    raise RuntimeError(f"failure on rank {rank()}")


def gathered(tag: str) -> list[Any]:
    """Every rank's ``(tag, rank)``: a collective that pairs up only if both ranks passed equal barriers."""
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, (tag, rank()))  # pyright: ignore[reportUnknownMemberType]  # torch leaves its parameters unannotated
    return out


def after_trainer(out_dir: Path) -> dict[str, Any]:
    make_trainer()
    shared = out_dir / "shared.txt"

    @local_process_zero_first
    def prepare() -> str:
        if rank() == 0:
            time.sleep(1.0)  # the other process must wait for this, not race it
            shared.write_text("prepared by rank 0")
            return "wrote"
        return shared.read_text() if shared.exists() else "missing"

    result: dict[str, Any] = {"zero_first": prepare()}
    result["local_only"] = local_process_zero_only(rank)()
    result["world_only"] = world_process_zero_only(rank)()
    for name, decorator in (("local_only", local_process_zero_only), ("world_only", world_process_zero_only),
                            ("zero_first", local_process_zero_first)):
        try:
            result[f"{name}_failing"] = decorator(fail if rank() == 0 else lambda: "ran")()
        except RuntimeError as error:
            result[f"{name}_failing"] = f"raised: {error}"
        result[f"{name}_after"] = gathered(name)
    return result


def before_trainer(out_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"world_only": world_process_zero_only(rank)(), "trainer": "created"}
    try:
        make_trainer()
    except LaunchError as error:
        result["trainer"] = f"LaunchError: {error}"
    return result


if __name__ == "__main__":
    run_worker(after_trainer if sys.argv[2] == "after_trainer" else before_trainer)
