"""Issue 12 on two CPU processes: ``lr_find`` (item 6) and the refused FSDP plugin (item 7)."""

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


def test_fsdp_plugin_under_torchrun_on_cpu_is_refused(tmp_path: Path) -> None:
    """Accelerate would wrap the model in DDP and ignore the plugin (issue 12, item 7)."""
    run_torchrun("fsdp_cpu_worker.py", str(tmp_path), timeout=180)
    for result in load_results(tmp_path):
        assert result["error"] is not None and "fsdp_plugin" in result["error"]
        assert "silently be DDP on CPU" in result["error"]
