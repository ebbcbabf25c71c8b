"""Shared fixtures: a clean Accelerate state per test, one thread for stable timings, and one 2-process
launch for the scenarios of all collected tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from tests.distributed._launch import ScenarioLaunch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def fresh_accelerate_state() -> Iterator[None]:
    """Accelerate keeps process-global state (precision, accumulation); reset it around every test."""
    from pta import reset_accelerate_state

    reset_accelerate_state()
    yield
    reset_accelerate_state()


@pytest.fixture(scope="session")
def two_process_scenarios(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ScenarioLaunch:
    """The scenarios named by ``two_process_scenario`` marks of the collected tests, in one launch of two
    processes (tests/distributed/workers/scenarios.py): a launch's start-up is most of a short scenario's time."""
    names = sorted({str(mark.args[0]) for item in request.session.items
                    for mark in item.iter_markers("two_process_scenario")})
    return ScenarioLaunch(tmp_path_factory.mktemp("two_process_scenarios"), names)
