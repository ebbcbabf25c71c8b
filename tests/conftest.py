"""Shared fixtures: a clean Accelerate state per test and one thread for stable timings."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def fresh_accelerate_state() -> Iterator[None]:
    """Accelerate keeps process-global state (precision, accumulation); reset it around every test."""
    from pta import reset_accelerate_state

    reset_accelerate_state()
    yield
    reset_accelerate_state()
