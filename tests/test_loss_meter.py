"""The running loss sums (``pta._meter.LossMeter``): exact, and one tensor operation per step."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.profiler import profile

from pta._meter import LossMeter


def _losses(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return list(torch.rand(n, generator=g) * 3)


@pytest.mark.parametrize("steps", [1, 63, 64, 65, 200])
def test_the_total_is_the_float64_sum_of_loss_times_weight(steps: int) -> None:
    meter = LossMeter()
    weights = [32 if i % 50 else 7 for i in range(steps)]  # a weight change flushes the block
    losses = _losses(steps)
    for loss, weight in zip(losses, weights, strict=True):
        meter.add(loss, weight)
    expected = sum(float(loss) * weight for loss, weight in zip(losses, weights, strict=True))
    assert meter.total is not None and meter.total.dtype == torch.float64
    assert float(meter.total) == pytest.approx(expected, rel=1e-12)
    assert meter.count == sum(weights)


def test_reading_the_total_midway_and_setting_it_keep_the_sum() -> None:
    meter = LossMeter()
    losses = _losses(10)
    for loss in losses[:5]:
        meter.add(loss, 2)
    midway = meter.total
    assert midway is not None
    assert float(midway) == pytest.approx(2 * float(sum(losses[:5])), rel=1e-12)
    restored = LossMeter()  # what a resume does: total and count from the saved state, then more steps
    restored.add(torch.tensor(100.0), 1)  # pending work that the restore must drop
    restored.total, restored.count = midway.clone(), meter.count
    for loss in losses[5:]:
        meter.add(loss, 2)
        restored.add(loss, 2)
    final, restored_final = meter.total, restored.total
    assert final is not None and restored_final is not None
    assert torch.equal(final, restored_final) and meter.count == restored.count == 20
    meter.reset()
    assert (meter.total, meter.count) == (None, 0)


def test_a_step_costs_no_tensor_operation() -> None:
    """``add`` only keeps the loss's ``.data``, which dispatches nothing: the sum is taken once per
    block of 64 steps (before: a ``detach`` and a type-promoting ``add_`` every step, a few
    microseconds of dispatch each); what it keeps holds no autograd graph."""
    meter = LossMeter()
    loss = torch.tensor(1.5, requires_grad=True) * 2
    with profile() as recorded:
        for _ in range(LossMeter.BLOCK - 1):
            meter.add(loss, 8)
    events: list[Any] = list(recorded.events() or ())  # torch.profiler's events are untyped
    names = [event.name for event in events if event.cpu_parent is None]  # top-level operations
    assert names == []
    assert all(kept.grad_fn is None and not kept.requires_grad for kept in meter._pending)
    assert meter.total is not None and float(meter.total) == 1.5 * 2 * 8 * (LossMeter.BLOCK - 1)


def test_weights_that_change_every_step_cost_what_they_did_before() -> None:
    """A loss of another weight than the block's is added at once (one add_), not by flushing the
    block every step."""
    meter = LossMeter()
    loss = torch.tensor(1.5, requires_grad=True) * 2
    meter.add(loss, 8)  # the block's weight
    meter.add(loss, 9)  # the first of another weight starts the float64 sum
    with profile() as recorded:
        for weight in range(10, 30):
            meter.add(loss, weight)
    events: list[Any] = list(recorded.events() or ())
    names = [event.name for event in events if event.cpu_parent is None]
    assert names == ["aten::add_"] * 20
    assert meter.total is not None and float(meter.total) == 3.0 * sum(range(8, 30))
