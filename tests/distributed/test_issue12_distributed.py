"""Issue 12 on two CPU processes: ``lr_find`` (item 6) and the refused FSDP plugin (item 7)."""

from __future__ import annotations

import pytest
import torch

from tests.distributed._launch import ScenarioLaunch
from tests.distributed.workers import fsdp_cpu_worker, lr_find_worker

pytestmark = pytest.mark.slow

LR_FIND = f"{lr_find_worker.__name__}:main"
FSDP_ON_CPU = f"{fsdp_cpu_worker.__name__}:main"


@pytest.mark.two_process_scenario(LR_FIND)
def test_lr_find_on_two_processes(two_process_scenarios: ScenarioLaunch) -> None:
    zero, one = two_process_scenarios.results(LR_FIND)
    assert zero["world_size"] == one["world_size"] == 2
    assert torch.equal(zero["lrs"], one["lrs"]) and torch.equal(zero["losses"], one["losses"])
    assert zero["suggestion"] == one["suggestion"] and zero["suggestion"] is not None
    assert 0.02 <= zero["suggestion"] <= 0.8 and zero["diverged"]
    assert zero["restored"] and one["restored"]
    assert torch.equal(zero["weights_after_train"], one["weights_after_train"])  # DDP still in step


@pytest.mark.two_process_scenario(FSDP_ON_CPU)
def test_fsdp_plugin_under_torchrun_on_cpu_is_refused(two_process_scenarios: ScenarioLaunch) -> None:
    """Accelerate would wrap the model in DDP and ignore the plugin (issue 12, item 7)."""
    for result in two_process_scenarios.results(FSDP_ON_CPU):
        assert result["error"] is not None and "fsdp_plugin" in result["error"]
        assert "silently be DDP on CPU" in result["error"]
