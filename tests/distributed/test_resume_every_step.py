"""Issue 10 item 2: a 2-process run resumes bit-identically from every save position (one batch left
in the epoch included), with and without accumulation, a scheduler and dataloader workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.distributed._launch import run_torchrun
from tests.distributed.workers._common import load_results

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("config", ["plain", "full"])
def test_two_process_resume_from_every_position_is_exact(tmp_path: Path, config: str) -> None:
    run_torchrun("resume_every_step.py", str(tmp_path), config, timeout=240)
    for process_rank, result in enumerate(load_results(tmp_path)):
        reference = result["reference"]
        assert len(result["names"]) == 2 * (4 + 2)  # 4 steps and 2 epoch-level points per epoch
        inexact: list[str] = []
        for name in result["names"]:
            resumed = result["resumed"][name]
            same_params = all(torch.equal(a, b) for a, b in zip(reference["params"], resumed["params"], strict=True))
            if not same_params or resumed["history"] != reference["history"]:
                inexact.append(name)
        assert not inexact, f"rank {process_rank}: inexact resume from {inexact}"
