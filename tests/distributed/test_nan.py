"""Claim 5: a NaN loss on ONE rank stops both ranks at the same point, cleanly, with NonFiniteLossError."""

from __future__ import annotations

from typing import Any

import pytest

from tests.distributed._launch import ScenarioLaunch
from tests.distributed.workers import nan_one_rank as worker

SCENARIO = f"{worker.__name__}:main"
pytestmark = [pytest.mark.slow, pytest.mark.two_process_scenario(SCENARIO)]

Results = list[dict[str, Any]]


@pytest.fixture(scope="module")
def results(two_process_scenarios: ScenarioLaunch) -> Results:
    # A rank that stopped alone would leave the other waiting in a collective: the launch would hit the
    # process-group timeout (an error) or its own timeout (a failed test), never pass.
    return two_process_scenarios.results(SCENARIO)


@pytest.mark.parametrize(("run", "steps"), [
    # Checked at the end of epoch 2: both ranks finish its 6 steps, then stop before evaluating it.
    ("epoch_check", 2 * worker.STEPS_PER_EPOCH),
    # Checked every step: both stop right after the step whose loss was NaN on rank 1.
    ("step_check", worker.NAN_AT_STEP),
])
def test_nan_on_one_rank_stops_both_ranks_at_the_same_step(results: Results, run: str, steps: int) -> None:
    for process_rank, result in enumerate(results):
        outcome = result[run]
        assert outcome["num_processes"] == 2
        assert outcome["raised"] == "NonFiniteLossError", f"rank {process_rank}: {outcome}"
        assert "NaN or infinite" in outcome["message"] and "epoch 2" in outcome["message"]
        assert outcome["train_steps"] == outcome["step_ends"] == steps, f"rank {process_rank}: {outcome}"
        assert outcome["stop_errors"] == 1
        assert outcome["run_ends"] == 1  # the run closed normally before the error was raised
        assert outcome["eval_epochs"] == 1  # epoch 1's evaluation ran, epoch 2's did not
        assert outcome["current_epoch"] == 2
    rank0, rank1 = (r[run] for r in results)
    assert rank0 == {**rank1, "train_loss_epoch": rank0["train_loss_epoch"]}
    assert len(rank0["train_loss_epoch"]) == len(rank1["train_loss_epoch"])
