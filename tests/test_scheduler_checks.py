"""The schedulers' shared checks and base-class behaviour, pinned value by value (issue #14's mutants)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import nn
from torch.optim import Optimizer
from typing_extensions import override

from pta import TrainerPlaceholderValues
from pta.schedulers import CosineLrScheduler, SchedulerBase, WSDLrScheduler
from pta.schedulers.scheduler_base import ScheduledValues
from tests.test_schedulers import lrs_of
from tests.test_schedulers import run as used_lrs


def optimizer(*bases: float) -> Optimizer:
    return torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in bases])


def cosine(opt: Optimizer, **kwargs: Any) -> CosineLrScheduler:
    kwargs.setdefault("total_num_epochs", 5)
    kwargs.setdefault("num_update_steps_per_epoch", 4)
    return CosineLrScheduler(opt, **kwargs)


# ------------------------------------------------------------------------------------------- group lr checks
@pytest.mark.parametrize("bad", [math.nan, math.inf, -0.1])
def test_a_non_finite_or_negative_group_lr_is_refused_naming_the_group(bad: float) -> None:
    with pytest.raises(ValueError, match=rf"^param_groups\[1\]\['initial_lr'\] must be a finite number >= 0, got {bad!r}"):
        cosine(optimizer(0.1, bad), lr_min=0.0)


def test_group_lrs_of_zero_and_above_one_are_accepted() -> None:
    scheduler = cosine(optimizer(0.0, 2.0), min_lr_ratio=0.5)
    assert lrs_of(scheduler.optimizer) == [0.0, 2.0]


# ------------------------------------------------------------------------------------------- number checks
@pytest.mark.parametrize("bad", [1.5, True, "3"])
def test_a_restored_num_updates_that_is_not_an_int_is_refused(bad: object) -> None:
    scheduler = WSDLrScheduler(optimizer(0.1), total_steps=20)
    state = scheduler.state_dict()
    state["num_updates"] = bad
    with pytest.raises(ValueError, match="^num_updates must be a non-negative integer"):
        scheduler.load_state_dict(state)


def test_a_placeholder_for_a_number_is_refused_with_the_placeholder_hint() -> None:
    with pytest.raises(ValueError, match="^num_warmup_epochs must be a finite number >= 0.*unresolved TrainerPlaceholderValues"):
        cosine(optimizer(0.1), num_warmup_epochs=TrainerPlaceholderValues.NUM_EPOCHS)


@pytest.mark.parametrize("ratio", [-0.5, math.nan])
def test_a_negative_ratio_is_refused_naming_it(ratio: float) -> None:
    with pytest.raises(ValueError, match="^min_lr_ratio must be a finite number >= 0"):
        cosine(optimizer(0.1), min_lr_ratio=ratio)


def test_ratios_of_exactly_one_and_zero_are_accepted() -> None:
    assert cosine(optimizer(0.1), min_lr_ratio=1.0).get_updated_values(19) == [0.1]
    assert cosine(optimizer(0.1), min_lr_ratio=0.0).get_updated_values(19) == [0.0]


@pytest.mark.parametrize("ratio", [1.5, 2.5])
def test_a_ratio_above_one_is_refused_naming_it(ratio: float) -> None:
    with pytest.raises(ValueError, match=rf"^warmup_starting_lr_ratio must be between 0 and 1, got {ratio!r}"):
        cosine(optimizer(0.1), num_warmup_epochs=1, warmup_starting_lr_ratio=ratio)


# ------------------------------------------------------------------------------------------ SchedulerBase
class Fixed(SchedulerBase):
    """A scheduler returning preset values, to pin the base class alone."""

    def __init__(self, opt: Optimizer, values: ScheduledValues, param_group_field: str = "lr") -> None:
        self.values = values
        self.asked: list[int] = []
        super().__init__(opt, param_group_field=param_group_field)

    @override
    def get_updated_values(self, num_updates: int) -> ScheduledValues:
        self.asked.append(num_updates)
        return self.values


def test_step_update_asks_for_the_given_count_and_applies_per_group_values() -> None:
    scheduler = Fixed(optimizer(0.1, 0.2), [0.5, 0.25])
    scheduler.step_update(7)
    assert scheduler.asked == [7]
    assert lrs_of(scheduler.optimizer) == [0.5, 0.25]


def test_none_leaves_the_groups_unchanged() -> None:
    scheduler = Fixed(optimizer(0.1, 0.2), None)
    scheduler.step_update(3)
    assert lrs_of(scheduler.optimizer) == [0.1, 0.2]


def test_a_wrong_number_of_values_is_refused_naming_the_scheduler() -> None:
    scheduler = Fixed(optimizer(0.1, 0.2), [0.5, 0.25, 0.1])
    with pytest.raises(ValueError, match="^Fixed produced 3 values for 2 parameter groups"):
        scheduler.step_update(1)


def test_another_field_is_scheduled_and_its_start_kept_under_initial_name() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    scheduler = Fixed(opt, 0.5, param_group_field="momentum")
    assert scheduler.param_group_field == "momentum"
    assert scheduler.base_lr_values == [0.9]
    scheduler.step_update(1)
    assert opt.param_groups[0]["momentum"] == 0.5
    assert opt.param_groups[0]["initial_momentum"] == 0.9
    assert opt.param_groups[0]["lr"] == 0.1


def test_load_state_dict_restores_attributes_but_never_the_optimizer() -> None:
    scheduler = Fixed(optimizer(0.1), 0.5)
    opt = scheduler.optimizer
    state = scheduler.state_dict()
    assert "optimizer" not in state
    scheduler.load_state_dict({**state, "values": 0.75, "optimizer": "not an optimizer"})
    assert scheduler.optimizer is opt
    assert scheduler.values == 0.75


# --------------------------------------------------------------------------------- restored base lr values
def test_a_restored_state_keeps_the_saved_base_lrs() -> None:
    saved = cosine(optimizer(0.1, 0.03)).state_dict()
    restored = cosine(optimizer(0.2, 0.06))
    restored.load_state_dict(saved)
    assert restored.base_lr_values == [0.1, 0.03]
    assert lrs_of(restored.optimizer) == [0.1, 0.03]


@pytest.mark.parametrize("bad", [[0.1], 0.1])
def test_saved_base_lrs_for_other_groups_are_refused(bad: Sequence[float] | float) -> None:
    scheduler = cosine(optimizer(0.1, 0.03))
    state = scheduler.state_dict()
    state["base_lr_values"] = bad
    with pytest.raises(ValueError, match=r"^the saved base_lr_values .* do not match the optimizer's 2 parameter groups"):
        scheduler.load_state_dict(state)


def test_a_state_without_base_lrs_keeps_the_groups_own() -> None:
    scheduler = cosine(optimizer(0.1, 0.03))
    state = scheduler.state_dict()
    del state["base_lr_values"]
    restored = cosine(optimizer(0.2, 0.06))
    restored.load_state_dict(state)
    assert restored.base_lr_values == [0.2, 0.06]


# ------------------------------------------------------------------------------ pytorch-accelerated's formulas
def pa_cosine_reference(n: int, base: float, start: float, init: float, minimum: float) -> float:
    """pytorch-accelerated 0.1.61's cosine value for 20 updates, 5 of warmup, 2 of cooldown, k_decay 1."""
    decay_iterations = 20 - (5 + 2)
    if n < 5:
        return start + n * ((base - init) / 5)
    if n < decay_iterations:
        return minimum + 0.5 * (base - minimum) * (1 + math.cos(math.pi * (n - 5) / decay_iterations))
    return minimum


@pytest.mark.parametrize("start", [{"warmup_starting_lr": 0.01}, {"warmup_starting_lr_ratio": 0.5}])
def test_cosine_pa_compatible_follows_pas_formula_with_a_minimum_and_a_warmup_start(start: dict[str, float]) -> None:
    scheduler = cosine(optimizer(0.1, 0.04), num_warmup_epochs=1.25, num_cooldown_epochs=0.5, lr_min=0.01,
                       pa_compatible=True, **start)
    init = start.get("warmup_starting_lr", 1e-6)
    for n in range(25):
        expected = [pa_cosine_reference(n, base, start.get("warmup_starting_lr_ratio", 0) * base or init, init, 0.01)
                    for base in (0.1, 0.04)]
        assert scheduler.get_updated_values(n) == pytest.approx(expected, rel=1e-12, abs=1e-15), n


def test_cosine_pa_compatible_without_warmup_starts_at_the_group_lr() -> None:
    scheduler = cosine(optimizer(0.1), lr_min=0.01, pa_compatible=True)
    assert scheduler.get_updated_values(0) == [0.1]


# -------------------------------------------------------------------------------------------- WSD states
def wsd(opt: Optimizer, pa: bool) -> WSDLrScheduler:
    return WSDLrScheduler(opt, total_steps=40, num_warmup_steps=4, num_checkpoints=2, lr_min=0.1, pa_compatible=pa)


@pytest.mark.parametrize("pa", [False, True])
@pytest.mark.parametrize("at", [0, 1, 2, 7, 22])
def test_wsd_state_round_trip_keeps_the_position_in_both_countings(pa: bool, at: int) -> None:
    original = wsd(optimizer(0.1, 0.03), pa)
    used_lrs(original, at)
    restored = wsd(optimizer(0.1, 0.03), pa)
    restored.load_state_dict(original.state_dict())
    assert restored.num_updates == original.num_updates == (at - 1 if pa else at)
    assert restored.get_current_step() == at - 1
    assert used_lrs(restored, 45 - at) == used_lrs(original, 45 - at)


@pytest.mark.parametrize("pa", [False, True])
@pytest.mark.parametrize("at", [0, 1, 5])
def test_a_wsd_state_without_num_updates_keeps_this_schedulers_position(pa: bool, at: int) -> None:
    """States written by pytorch-accelerated carry no position: the loading scheduler keeps its own."""
    reference = wsd(optimizer(0.1, 0.03), pa)
    expected = used_lrs(reference, 45)
    scheduler = wsd(optimizer(0.1, 0.03), pa)
    first = used_lrs(scheduler, at)
    position = scheduler.num_updates
    state = scheduler.state_dict()
    del state["num_updates"]
    scheduler.load_state_dict(state)
    assert scheduler.num_updates == position
    assert first + used_lrs(scheduler, 45 - at) == expected


@pytest.mark.parametrize("bad", [-1, 1.5])
def test_a_pa_compatible_wsd_refuses_a_bad_saved_position_naming_it(bad: object) -> None:
    scheduler = wsd(optimizer(0.1), pa=True)
    state = scheduler.state_dict()
    state["num_updates"] = bad
    with pytest.raises(ValueError, match="^num_updates must be a non-negative integer"):
        scheduler.load_state_dict(state)


def test_a_wsd_state_with_a_bad_total_is_refused_naming_it() -> None:
    scheduler = wsd(optimizer(0.1), pa=False)
    state = scheduler.state_dict()
    state["total_steps"] = 0
    with pytest.raises(ValueError, match="^total_steps must be a positive integer, got 0"):
        scheduler.load_state_dict(state)


# ------------------------------------------------------------------------------------------ cosine extras
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lr_min": -1e-3}, "^lr_min must be a finite number >= 0"),
    ({"warmup_starting_lr": -1e-3}, "^warmup_starting_lr must be a finite number >= 0"),
    ({"lr_min": 0.05}, r"^lr_min=0.05 is above the lr of param_groups\[1\] \(0.03\)"),
    ({"num_warmup_epochs": 1, "warmup_starting_lr": 0.05}, r"^warmup_starting_lr=0.05 is above the lr of param_groups\[1\]"),
    ({"k_decay": math.inf}, "^k_decay must be a finite number > 0, got inf"),
])
def test_cosine_refuses_bad_settings_with_messages_naming_them(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cosine(optimizer(0.1, 0.03), **kwargs)


def test_cosine_with_a_single_decay_update_uses_the_minimum_for_it() -> None:
    scheduler = cosine(optimizer(0.1), total_num_epochs=1, num_update_steps_per_epoch=1, lr_min=0.01)
    assert lrs_of(scheduler.optimizer) == [0.01]


@pytest.mark.parametrize("warmup", [0, 1])
def test_a_pa_compatible_cosine_restored_before_its_first_update_starts_as_pa_does(warmup: int) -> None:
    saved = cosine(optimizer(0.1), num_warmup_epochs=warmup, warmup_starting_lr=0.01, pa_compatible=True)
    expected = [lrs_of(saved.optimizer)]
    for _ in range(6):
        saved.step()
        expected.append(lrs_of(saved.optimizer))
    restored = cosine(optimizer(0.1), num_warmup_epochs=warmup, warmup_starting_lr=0.01, pa_compatible=True)
    restored.step()
    restored.load_state_dict(cosine(optimizer(0.1), num_warmup_epochs=warmup, warmup_starting_lr=0.01,
                                    pa_compatible=True).state_dict())
    assert restored.num_updates == -1
    assert lrs_of(restored.optimizer) == ([0.01] if warmup else [0.1])
    got = [lrs_of(restored.optimizer)]
    for _ in range(6):
        restored.step()
        got.append(lrs_of(restored.optimizer))
    assert got == expected


# ---------------------------------------------------------------------------------------------- WSD extras
def test_wsd_defaults_are_one_checkpoint_and_the_sqrt_decay() -> None:
    scheduler = WSDLrScheduler(optimizer(0.1), total_steps=100, lr_min=0.01)
    assert scheduler.get_checkpoint_steps() == [100]
    # update 95 is the 6th of 10 decay updates: progress 0.6 of the sqrt decay
    assert scheduler.get_updated_values(95) == pytest.approx([0.1 * (0.01 + 0.99 * (1 - math.sqrt(0.6)))], rel=1e-12)


def test_wsd_warmup_running_into_the_decay_warns_at_the_callers_line() -> None:
    with pytest.warns(UserWarning, match=r"^num_warmup_steps=95 runs into the first decay phase, which starts after 90 "
                      r"updates: .*use fewer warmup steps for a full decay$") as caught:
        WSDLrScheduler(optimizer(0.1), total_steps=100, num_warmup_steps=95)
    assert [w.filename for w in caught] == [__file__]


def test_wsd_warmup_may_start_at_the_group_lr_but_not_above_it() -> None:
    assert lrs_of(WSDLrScheduler(optimizer(0.1), total_steps=100, num_warmup_steps=5, warmup_starting_lr=0.1).optimizer) == [0.1]
    with pytest.raises(ValueError, match=r"^warmup_starting_lr=0.2 is above the lr of param_groups\[0\] \(0.1\)"):
        WSDLrScheduler(optimizer(0.1), total_steps=100, num_warmup_steps=5, warmup_starting_lr=0.2)


def pa_wsd_reference(n: int, bases: list[float], sqrt: bool, lr_min: float, ratio: float) -> list[float]:
    """pytorch-accelerated 0.1.61's WSD lrs for checkpoints [10, 20] and 3 warmup updates from 0.01."""
    if n < 3:
        return [0.01 + (n / 3) * (base - 0.01) for base in bases]
    index = next((i for i, checkpoint in enumerate([10, 20]) if n < checkpoint), 0)
    period_start = [0, 10][index]
    period_length, into_period = [10, 20][index] - period_start, n - period_start
    decay_steps = int(period_length * ratio)
    decay_start = period_length - decay_steps
    if into_period < decay_start:
        return list(bases)
    progress = min((into_period - decay_start) / decay_steps, 1.0) if decay_steps else 1.0
    factor = lr_min + (1 - lr_min) * (1 - math.sqrt(progress)) if sqrt else 1.0 / (progress / lr_min + 1.0 - progress)
    return [base * factor for base in bases]


@pytest.mark.parametrize("sqrt", [True, False])
@pytest.mark.parametrize("ratio", [0.3, 0.05])
def test_wsd_pa_compatible_follows_pas_formula(sqrt: bool, ratio: float) -> None:
    scheduler = WSDLrScheduler(optimizer(0.1, 0.03), total_steps=40, num_warmup_steps=3, num_checkpoints=2, lr_min=0.2,
                               decay_phase_ratio=ratio, warmup_starting_lr=0.01, use_inverse_sqrt_decay=sqrt,
                               pa_compatible=True)
    assert scheduler.get_checkpoint_steps() == [10, 20]
    for n in range(45):
        expected = pa_wsd_reference(n, [0.1, 0.03], sqrt, 0.2, ratio)
        assert scheduler.get_updated_values(n) == pytest.approx(expected, rel=1e-12, abs=1e-15), n


def test_wsd_current_phase_is_the_period_of_the_latest_update() -> None:
    scheduler = wsd(optimizer(0.1), pa=False)
    assert scheduler.get_checkpoint_steps() == [20, 40]
    first, second = scheduler.get_decay_info()
    assert scheduler.get_current_phase_info() == first
    used_lrs(scheduler, 20)
    assert scheduler.get_current_phase_info() == first
    used_lrs(scheduler, 1)
    assert scheduler.get_current_phase_info() == second
