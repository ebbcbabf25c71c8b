"""Claims 6 and 7: what a launch looks like from the outside.

Split brain (claim 6). With pta's defaults plain ``torchrun`` on a CPU-only machine is a real gloo run
(``test_train_eval`` checks it), so the mismatch has to be provoked: ``accelerator_options={"cpu": False}``
turns pta's CPU default off, and Accelerate then gives every ``torchrun`` process
``DistributedType.NO`` / one process while ``torch.distributed`` is initialised with world size 2.
A single ``python`` process with ``WORLD_SIZE=2`` in its environment is the same mismatch without
``torch.distributed``. (With pta's default ``cpu=True`` such a lone process would instead wait in
``init_process_group`` for a rank 1 that never comes: a rendezvous timeout, not a split brain;
and ``accelerate launch --cpu --num_processes 2`` starts one process with no trace of the 2 in its
environment, so nothing inside the process can detect it.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import pta
import pta._launch_checks
from pta import LaunchError
from pta._launch_checks import check_world_size, fill_launch_defaults
from tests.distributed._launch import REPO_ROOT, run_python, run_torchrun
from tests.distributed.workers._common import load_results


# ---------------------------------------------------------------- claim 6: split brain, real launches
@pytest.mark.slow
def test_torchrun_with_accelerate_on_one_process_each_raises_launch_error(tmp_path: Path) -> None:
    run_torchrun("split_brain.py", str(tmp_path))
    for process_rank, result in enumerate(load_results(tmp_path)):
        assert result["raised"] == "LaunchError", f"rank {process_rank}: {result}"
        assert result["dist_initialized"] is True and result["dist_world_size"] == 2
        assert "WORLD_SIZE is 2" in result["message"]
        assert "1 process" in result["message"]
        assert "torchrun --nproc_per_node" in result["message"]


@pytest.mark.slow
def test_single_process_with_world_size_2_raises_launch_error(tmp_path: Path) -> None:
    run_python("split_brain.py", str(tmp_path), env={"WORLD_SIZE": "2"}, timeout=60)
    (result,) = load_results(tmp_path, nproc=1)
    assert result["raised"] == "LaunchError", result
    assert result["dist_initialized"] is False
    assert "WORLD_SIZE is 2" in result["message"]


# ---------------------------------------------------------------- claim 6: the check itself
@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pta._launch_checks, "has_accelerator_device", lambda: False)


@pytest.mark.usefixtures("no_gpu")
def test_a_multi_process_launch_without_gpu_selects_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert fill_launch_defaults({}) == {"cpu": True}
    assert fill_launch_defaults({"cpu": False}) == {"cpu": False}  # an explicit choice is kept
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert fill_launch_defaults({}) == {}
    monkeypatch.delenv("WORLD_SIZE")
    assert fill_launch_defaults({}) == {}


def test_check_world_size_compares_the_launch_with_accelerate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    check_world_size(1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_world_size(2)
    with pytest.raises(LaunchError, match=re.escape("WORLD_SIZE is 2 but Accelerate set up 1 process(es)")):
        check_world_size(1)


def test_check_world_size_compares_torch_distributed_with_accelerate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)  # pyright: ignore[reportUnknownLambdaType, reportUnknownArgumentType]  # `group` mirrors the untyped original
    with pytest.raises(LaunchError, match="torch.distributed world size is 2"):
        check_world_size(1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_world_size(2)


# ---------------------------------------------------------------- claim 7: the example, unchanged
@pytest.mark.slow
def test_quickstart_runs_unchanged_on_two_processes() -> None:
    completed = run_torchrun(REPO_ROOT / "examples" / "quickstart.py", "--epochs", "1", "--no-progress-bar",
                             timeout=150, check=False)
    if completed.returncode != 0 and "terminate called without an active exception" in completed.stdout:
        pytest.fail("a rank aborted at interpreter exit (gloo tearing down a live process group, "
                    f"DESIGN.md section 9) after the script finished:\n{completed.stdout[-6000:]}")
    assert completed.returncode == 0, completed.stdout[-12000:]
    accuracies = re.findall(r"test accuracy: ([0-9.]+)", completed.stdout)
    # trainer.print prints on the main process only: two lines would mean two "main" processes (split brain).
    assert len(accuracies) == 1, completed.stdout
    assert completed.stdout.count("Starting training run") == 1, completed.stdout
    assert 0.5 < float(accuracies[0]) <= 1.0, completed.stdout
