"""pytorch-accelerated's scheduler contract and states on pta (issue 11): user subclasses of
StatefulSchedulerBase, pa-written states, previous_checkpoint_step, continuation, setting errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.optim import SGD
from typing_extensions import override

from pta.schedulers import CosineLrScheduler, StatefulSchedulerBase, WSDLrScheduler


class UpdateCountAsLr(StatefulSchedulerBase):
    """A user scheduler written for pytorch-accelerated: the lr is the update count it is given."""

    @override
    def get_updated_values(self, num_updates: int) -> float:
        return float(num_updates)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"num_updates": self._num_updates}

    @override
    def load_state_dict(self, state_dict: Any) -> None:
        self._num_updates = state_dict["num_updates"]


def lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    return [float(group["lr"]) for group in optimizer.param_groups]


def two_group_optimizer(lr: float = 0.5) -> SGD:
    layer = nn.Linear(2, 1)
    groups: list[dict[str, Any]] = [{"params": [layer.weight]}, {"params": [layer.bias], "lr": lr / 10}]
    return SGD(groups, lr=lr)


def test_user_stateful_scheduler_keeps_pa_step_contract() -> None:
    optimizer = two_group_optimizer()
    scheduler = UpdateCountAsLr(optimizer)
    assert lrs(optimizer) == [0.5, 0.05]  # the first update uses the groups' own lrs
    seen: list[list[float]] = []
    for _ in range(3):
        scheduler.step()
        seen.append(lrs(optimizer))
    assert seen == [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]


def test_apply_initial_values_schedules_the_first_update() -> None:
    optimizer = two_group_optimizer()
    scheduler = UpdateCountAsLr(optimizer)
    scheduler.apply_initial_values()
    assert lrs(optimizer) == [0.0, 0.0] and scheduler.num_updates == 0
    scheduler.step()
    assert lrs(optimizer) == [1.0, 1.0]


def test_cosine_states_use_pa_update_index() -> None:
    def make() -> CosineLrScheduler:
        return CosineLrScheduler(two_group_optimizer(), total_num_epochs=2, num_update_steps_per_epoch=5,
                                 num_warmup_epochs=1)

    fresh = make()
    assert fresh.state_dict()["num_updates"] == -1  # what pytorch-accelerated saves before the first step()
    stepped = make()
    for _ in range(3):
        stepped.step()
    assert stepped.state_dict()["num_updates"] == 2
    restored = make()
    restored.load_state_dict(stepped.state_dict())
    assert restored.num_updates == 3 and lrs(restored.optimizer) == lrs(stepped.optimizer)
    pa_state = {key: value for key, value in fresh.state_dict().items() if key != "base_lr_values"}
    from_pa = make()
    for _ in range(2):
        from_pa.step()
    from_pa.load_state_dict(pa_state)  # written by pytorch-accelerated before its first step()
    assert from_pa.num_updates == 0 and lrs(from_pa.optimizer) == lrs(make().optimizer)


def pa_wsd_state(scheduler: WSDLrScheduler) -> dict[str, Any]:
    """What pytorch-accelerated's WSDLrScheduler.state_dict() returns: its public attributes, no update count."""
    state = {key: value for key, value in scheduler.state_dict().items() if key != "num_updates"}
    state.update(previous_checkpoint_step=None, param_group_field="lr",
                 checkpoint_decay_info=scheduler.get_decay_info())
    return state


def test_wsd_loads_a_pa_state_and_keeps_its_position() -> None:
    source = WSDLrScheduler(two_group_optimizer(), total_steps=40, decay_phase_ratio=0.25, num_warmup_steps=4)
    target = WSDLrScheduler(two_group_optimizer(), total_steps=20, decay_phase_ratio=0.1)
    for _ in range(7):
        target.step()
    target.load_state_dict(pa_wsd_state(source))
    assert target.total_steps == 40 and target.decay_phase_ratio == 0.25 and target.num_updates == 7
    reference = WSDLrScheduler(two_group_optimizer(), total_steps=40, decay_phase_ratio=0.25, num_warmup_steps=4)
    for _ in range(7):
        reference.step()
    assert lrs(target.optimizer) == lrs(reference.optimizer)


def test_wsd_previous_checkpoint_step() -> None:
    scheduler = WSDLrScheduler(two_group_optimizer(), total_steps=40, decay_phase_ratio=0.25, num_checkpoints=2)
    assert [info["pre_decay_step"] for info in scheduler.get_decay_info()] == [15, 35]
    seen: list[int | None] = []
    for _ in range(40):
        seen.append(scheduler.previous_checkpoint_step)
        scheduler.step()
    assert seen[:16] == [None] * 15 + [14] and seen[35] == 34 and seen[-1] == 34
    continuation = WSDLrScheduler(two_group_optimizer(), total_steps=40, is_continuation_from_checkpoint=True)
    continuation.load_state_dict(scheduler.state_dict())
    assert continuation.previous_checkpoint_step is None


@pytest.mark.parametrize("settings", [{"decay_phase_ratio": 1.5}, {"total_steps": 0}, {"lr_min": -0.1}])
def test_invalid_scheduler_settings_are_also_assertion_errors(settings: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"total_steps": 100, **settings}
    with pytest.raises(AssertionError):  # what pytorch-accelerated's asserts raise
        WSDLrScheduler(two_group_optimizer(), **arguments)
    with pytest.raises(ValueError, match=next(iter(settings))):
        WSDLrScheduler(two_group_optimizer(), **arguments)


def test_wsd_continuation_takes_the_saved_settings_and_its_own_length() -> None:
    first = WSDLrScheduler(two_group_optimizer(), total_steps=100, decay_phase_ratio=0.3, num_checkpoints=2, lr_min=0.2)
    for _ in range(35):
        first.step()
    segment = WSDLrScheduler(two_group_optimizer(), total_steps=60, decay_phase_ratio=0.1,
                             is_continuation_from_checkpoint=True)
    segment.load_state_dict(first.state_dict())
    assert (segment.total_steps, segment.decay_phase_ratio, segment.num_checkpoints, segment.lr_min) == (60, 0.3, 2, 0.2)
    assert segment.get_checkpoint_steps() == [30, 60] and segment.num_updates == 0
    assert segment.is_continuation_from_checkpoint and segment.previous_checkpoint_step is None
