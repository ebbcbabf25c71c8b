"""``lr_find`` on two CPU processes: both see one result and the known good learning rate (issue 12, item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.distributed._launch import run_torchrun
from tests.distributed.workers._common import load_results

pytestmark = pytest.mark.slow


def test_lr_find_on_two_processes(tmp_path: Path) -> None:
    run_torchrun("lr_find_worker.py", str(tmp_path), timeout=240)
    zero, one = load_results(tmp_path)
    assert zero["world_size"] == one["world_size"] == 2
    assert torch.equal(zero["lrs"], one["lrs"]) and torch.equal(zero["losses"], one["losses"])
    assert zero["suggestion"] == one["suggestion"] and zero["suggestion"] is not None
    assert 0.02 <= zero["suggestion"] <= 0.8 and zero["diverged"]
    assert zero["restored"] and one["restored"]
    assert torch.equal(zero["weights_after_train"], one["weights_after_train"])  # DDP still in step
