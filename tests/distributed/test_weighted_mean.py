"""Two processes with different batch sizes: every epoch loss is the mean over samples, not the mean of
the processes' means (nor of the batches' means)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests._helpers import linear_model
from tests.distributed._launch import ScenarioLaunch
from tests.distributed.workers import weighted_mean as worker

SCENARIO = f"{worker.__name__}:main"
pytestmark = [pytest.mark.slow, pytest.mark.two_process_scenario(SCENARIO)]

METRICS = ("train_loss_epoch", "eval_loss_epoch", "evaluation_loss")


@pytest.fixture(scope="module")
def results(two_process_scenarios: ScenarioLaunch) -> list[dict[str, Any]]:
    return two_process_scenarios.results(SCENARIO)


def per_sample_losses() -> torch.Tensor:
    x, y = worker.dataset().tensors
    with torch.no_grad():  # lr=0: the weights the workers used are the initial ones
        losses: torch.Tensor = ((linear_model()(x) - y) ** 2).squeeze(1)
        return losses


def test_the_ranks_really_had_different_batch_sizes(results: list[dict[str, Any]]) -> None:
    assert [r["num_processes"] for r in results] == [2, 2]
    for key in ("train_sizes", "eval_sizes"):
        assert results[0][key] == [worker.BIG] * worker.ROUNDS * (2 if key == "eval_sizes" else 1)
        assert results[1][key] == [worker.SMALL] * worker.ROUNDS * (2 if key == "eval_sizes" else 1)


@pytest.mark.parametrize("metric", METRICS)
def test_epoch_loss_is_the_mean_over_all_samples(results: list[dict[str, Any]], metric: str) -> None:
    losses = per_sample_losses()
    rank_of_sample = torch.tensor([rank for rank, size in enumerate((worker.BIG, worker.SMALL)) for _ in range(size)]
                                  * worker.ROUNDS)
    sample_mean = float(losses.mean())
    mean_of_rank_means = float((losses[rank_of_sample == 0].mean() + losses[rank_of_sample == 1].mean()) / 2)
    # the setup separates the two: a mean of per-process means is off by far more than the tolerance
    assert abs(sample_mean - mean_of_rank_means) > 0.1 * sample_mean
    for result in results:
        (value,) = result[metric]
        assert value == pytest.approx(sample_mean, rel=1e-5)
