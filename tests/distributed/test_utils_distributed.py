"""pta.utils' process decorators on two real CPU processes (plain ``torchrun``, gloo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.distributed._launch import run_torchrun
from tests.distributed.workers._common import load_results

pytestmark = pytest.mark.slow

Results = list[dict[str, Any]]


def launch(out_dir: Path, mode: str) -> Results:
    run_torchrun("utils_worker.py", str(out_dir), mode)
    return load_results(out_dir)


@pytest.fixture(scope="module")
def after_trainer(tmp_path_factory: pytest.TempPathFactory) -> Results:
    return launch(tmp_path_factory.mktemp("utils_after_trainer"), "after_trainer")


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
    results = launch(tmp_path, "before_trainer")
    assert [r["world_only"] for r in results] == [0, None]
    assert [r["trainer"] for r in results] == ["created", "created"]
