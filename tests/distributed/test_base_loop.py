"""pta/base.py on two real CPU processes: per-process seeds, and stops agreed at epoch-level events."""

from __future__ import annotations

from typing import Any

import pytest

from tests.distributed._launch import ScenarioLaunch
from tests.distributed.workers import base_loop as worker

SCENARIO = f"{worker.__name__}:main"
pytestmark = [pytest.mark.slow, pytest.mark.two_process_scenario(SCENARIO)]


@pytest.fixture(scope="module")
def results(two_process_scenarios: ScenarioLaunch) -> list[dict[str, Any]]:
    return two_process_scenarios.results(SCENARIO)


def test_seed_gives_each_process_its_own_random_stream(results: list[dict[str, Any]]) -> None:
    rank0, rank1 = (result["draw"] for result in results)
    assert len(rank0) == len(rank1) == 3
    assert rank0 != rank1


def test_a_stop_at_the_epoch_end_on_one_rank_stops_both_there(results: list[dict[str, Any]]) -> None:
    for result in results:
        assert (result["steps"], result["stop_events"], result["epoch"]) == (worker.STEPS_PER_EPOCH, 1, 1)


def test_without_a_fixed_interval_the_ranks_agree_about_once_a_second_at_the_same_steps(
    results: list[dict[str, Any]]
) -> None:
    rank0, rank1 = ([tuple(a) for a in result["agreements"]] for result in results)
    assert rank0 == rank1
    between_steps = [step for _, step in rank0 if step is not None]
    # 200 steps of a few ms: the first two steps time the rest (every 10 steps, the old default, was 20)
    assert 1 <= len(between_steps) <= 4, rank0
    assert (1, 0) in rank0 and (2, None) in rank0  # timed from the first steps; epoch-level points stay
