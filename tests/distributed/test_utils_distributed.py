"""pta.utils' process decorators on two real CPU processes (plain ``torchrun``, gloo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.distributed._launch import ScenarioLaunch, run_torchrun
from tests.distributed.workers import utils_worker as worker
from tests.distributed.workers._common import load_results

AFTER_TRAINER = f"{worker.__name__}:after_trainer"
pytestmark = [pytest.mark.slow, pytest.mark.two_process_scenario(AFTER_TRAINER)]

Results = list[dict[str, Any]]


@pytest.fixture(scope="module")
def after_trainer(two_process_scenarios: ScenarioLaunch) -> Results:
    return two_process_scenarios.results(AFTER_TRAINER)


def test_local_process_zero_first_runs_process_zero_before_the_others(after_trainer: Results) -> None:
    assert [r["zero_first"] for r in after_trainer] == ["wrote", "prepared by rank 0"]


def test_zero_only_decorators_return_none_on_other_processes(after_trainer: Results) -> None:
    assert [r["local_only"] for r in after_trainer] == [0, None]
    assert [r["world_only"] for r in after_trainer] == [0, None]


@pytest.mark.parametrize("name", ["local_only", "world_only", "zero_first"])
def test_a_failure_on_process_zero_leaves_no_process_waiting(after_trainer: Results, name: str) -> None:
    """pa's decorators skip process 0's barrier when the function raises: the next collective pairs
    process 0 with process 1's barrier and the job hangs until the process-group timeout."""
    zero, other = after_trainer
    assert zero[f"{name}_failing"] == "raised: failure on rank 0"
    assert other[f"{name}_failing"] == ("ran" if name == "zero_first" else None)
    for result in after_trainer:
        assert result[f"{name}_after"] == [(name, 0), (name, 1)]


def test_decorators_before_any_trainer(tmp_path: Path) -> None:
    """In a launch of its own: no trainer may have set up Accelerate before."""
    run_torchrun("utils_worker.py", str(tmp_path), "before_trainer")
    results = load_results(tmp_path)
    assert [r["world_only"] for r in results] == [0, None]
    assert [r["trainer"] for r in results] == ["created", "created"]
