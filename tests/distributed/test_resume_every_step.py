"""Issue 10 item 2: a 2-process run resumes bit-identically from every save position (one batch left
in the epoch included), with and without accumulation, a scheduler and dataloader workers."""

from __future__ import annotations

import pytest
import torch

from tests.distributed._launch import ScenarioLaunch
from tests.distributed.workers import resume_every_step as worker

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("scenario", [
    pytest.param(f"{worker.__name__}:{config}", marks=pytest.mark.two_process_scenario(f"{worker.__name__}:{config}"),
                 id=config) for config in ("plain", "full")
])
def test_two_process_resume_from_every_position_is_exact(two_process_scenarios: ScenarioLaunch, scenario: str) -> None:
    for process_rank, result in enumerate(two_process_scenarios.results(scenario)):
        reference = result["reference"]
        assert len(result["names"]) == 2 * (4 + 2)  # 4 steps and 2 epoch-level points per epoch
        inexact: list[str] = []
        for name in result["names"]:
            resumed = result["resumed"][name]
            same_params = all(torch.equal(a, b) for a, b in zip(reference["params"], resumed["params"], strict=True))
            if not same_params or resumed["history"] != reference["history"]:
                inexact.append(name)
        assert not inexact, f"rank {process_rank}: inexact resume from {inexact}"
