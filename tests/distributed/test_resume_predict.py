"""2 CPU processes: exact resume, predict() in dataset order without duplicates, schedule ends at its minimum."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.distributed._launch import ScenarioLaunch
from tests.distributed.workers import resume_predict as worker

SCENARIO = f"{worker.__name__}:main"
pytestmark = [pytest.mark.slow, pytest.mark.two_process_scenario(SCENARIO)]


@pytest.fixture(scope="module")
def results(two_process_scenarios: ScenarioLaunch) -> list[dict[str, Any]]:
    return two_process_scenarios.results(SCENARIO)


def test_resume_under_two_processes_matches_the_uninterrupted_run(results: list[dict[str, Any]]) -> None:
    # Bit-identical too: each process restores its own RNG states and sampler position, and gloo's
    # all-reduce of two ranks adds in the same order every time.
    for result in results:
        assert result["num_processes"] == 2
        for a, b in zip(result["reference"], result["resumed"], strict=True):
            assert torch.equal(a, b)
        assert result["history"] == result["reference_history"]
    for a, b in zip(results[0]["resumed"], results[1]["resumed"], strict=True):
        assert torch.equal(a, b)


def test_predict_gives_every_sample_once_in_dataset_order(results: list[dict[str, Any]]) -> None:
    for result in results:
        predictions = result["predictions"]
        assert predictions.shape == (37, 1)  # 37 samples in batches of 4 on 2 processes: uneven
        assert torch.equal(predictions, results[0]["predictions"])
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.2), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    model.load_state_dict(dict(zip(model.state_dict(), results[0]["resumed"], strict=True)))
    with torch.no_grad():
        expected = model.eval()(worker.data(37).tensors[0])
    torch.testing.assert_close(results[0]["predictions"], expected, rtol=1e-6, atol=1e-6)


def test_cosine_schedule_ends_at_its_minimum_on_both_processes(results: list[dict[str, Any]]) -> None:
    assert [r["final_lr"] for r in results] == pytest.approx([worker.LR_MIN, worker.LR_MIN], rel=1e-9)
