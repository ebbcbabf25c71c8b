"""How many steps apart the processes agree (``pta._agreement.StopAgreement``): a fixed
``agreement_interval``, or about ``PERIOD_S`` of training estimated from the steps since the last
agreement. The 2-process behaviour is in tests/distributed/test_base_loop.py."""

from __future__ import annotations

import time

import pytest
import torch

from pta import ConfigurationError, DefaultTrainer
from pta._agreement import PERIOD_S, StopAgreement
from tests._helpers import linear_model, regression_data


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)  # the module pta._agreement reads
    return clock


def test_the_default_is_adaptive() -> None:
    assert DefaultTrainer.agreement_interval is None
    agreement = StopAgreement(1)
    assert (agreement.every, agreement.next_step) == (1, 0)  # the first step is timed before anything else


def test_a_fixed_interval_is_proposed_whatever_the_step_time(clock: Clock) -> None:
    agreement = StopAgreement(1, interval=10)
    agreement._last = (clock.now, 10)
    clock.now += 100.0
    assert agreement._proposal(20) == 10
    assert agreement.next_step == 9


@pytest.mark.parametrize(("step_s", "expected"), [(0.004, round(PERIOD_S / 0.004)), (0.5, 2), (3.0, 1), (1e-6, 10_000)])
def test_the_proposal_is_the_steps_in_about_a_second(clock: Clock, step_s: float, expected: int) -> None:
    agreement = StopAgreement(1)
    agreement._last = (clock.now, 5)  # agreed after 5 steps of this epoch
    clock.now += 10 * step_s
    assert agreement._proposal(15) == expected  # between 1 and 10,000 steps


def test_nothing_is_timed_across_an_epoch_boundary_or_from_an_epoch_level_agreement(clock: Clock) -> None:
    agreement = StopAgreement(1)
    agreement.every = 250
    agreement._last = (clock.now, 200)  # the last agreement was late in the previous epoch
    clock.now += 0.001
    assert agreement._proposal(3) == 250  # 3 steps into this epoch: keep what was agreed
    agreement._last = (clock.now, None)  # an epoch-level agreement
    assert agreement._proposal(3) == 250
    assert agreement._proposal(None) == 250


@pytest.mark.parametrize("interval", [0, -3, 2.5, True])
def test_a_bad_agreement_interval_is_refused_before_training(interval: object) -> None:
    class Trainer(DefaultTrainer):
        pass

    Trainer.agreement_interval = interval  # type: ignore[assignment]  # the bad value under test
    model = linear_model()
    trainer = Trainer(model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ConfigurationError, match=r"agreement_interval must be a positive integer"):
        trainer.train(regression_data(8), 1, per_device_batch_size=4)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
