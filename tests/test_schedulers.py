"""pta.schedulers and TrainerWithTimmScheduler: exact curves, exact resume, clear errors, real runs.

Convention under test: the lr in the optimizer when update ``n`` (0-based) runs is ``get_updated_values(n)``;
``step()`` after each update sets the next one.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, cast

import pytest
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from typing_extensions import override

from pta import DefaultTrainer, TrainerCallback, TrainerPlaceholderValues
from pta.protocols import SchedulerFactory, SchedulerLike
from pta.schedulers import CosineLrScheduler, StatefulSchedulerBase, WSDLrScheduler, estimate_checkpoint_steps
from pta.timm_trainer import TrainerWithTimmScheduler, timm_scheduler_fn
from tests._helpers import linear_model, regression_data

QUIET: tuple[type[TrainerCallback], ...] = ()  # no callbacks: a quiet console
BASES = (0.1, 0.03)  # two parameter groups with different lrs
Batch = list[Tensor]


def optimizer(bases: tuple[float, ...] = BASES) -> Optimizer:
    return torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in bases])


def lrs_of(opt: Optimizer) -> list[float]:
    return [float(group["lr"]) for group in opt.param_groups]


def run(scheduler: StatefulSchedulerBase, steps: int) -> list[list[float]]:
    """The lrs each of ``steps`` updates uses, stepping the scheduler after each."""
    used: list[list[float]] = []
    for _ in range(steps):
        used.append(lrs_of(scheduler.optimizer))
        scheduler.step()
    return used


def column(used: list[list[float]], group: int) -> list[float]:
    return [lrs[group] for lrs in used]


def saved_and_loaded(state: Mapping[str, Any]) -> dict[str, Any]:
    """A state through torch.save / torch.load(weights_only=True), as pta's checkpoints store it."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    buffer.seek(0)
    loaded: dict[str, Any] = torch.load(buffer, weights_only=True)
    return loaded


def assert_non_increasing(values: list[float]) -> None:
    assert all(b <= a for a, b in itertools.pairwise(values)), values


# ---------------------------------------------------------------------------------------------- cosine curves
def cosine(opt: Optimizer, **kwargs: Any) -> CosineLrScheduler:
    kwargs.setdefault("total_num_epochs", 5)
    kwargs.setdefault("num_update_steps_per_epoch", 4)
    return CosineLrScheduler(opt, **kwargs)


@pytest.mark.parametrize("start", [{"warmup_starting_lr": 1e-4}, {"warmup_starting_lr_ratio": 0.5}])
@pytest.mark.parametrize("warmup_epochs", [1, 2, 0.5])
def test_cosine_warmup_ends_exactly_at_base_lr(start: dict[str, float], warmup_epochs: float) -> None:
    warmup = round(warmup_epochs * 4)
    used = run(cosine(optimizer(), num_warmup_epochs=warmup_epochs, **start), 20)
    for group, base in enumerate(BASES):
        lrs = column(used, group)
        first = start.get("warmup_starting_lr_ratio", 0.0) * base or start.get("warmup_starting_lr", 0.0)
        assert lrs[0] == pytest.approx(first, rel=1e-12)
        assert lrs[warmup - 1] == base
        assert all(lr <= base for lr in lrs)
        assert all(b > a for a, b in itertools.pairwise(lrs[:warmup]))


@pytest.mark.parametrize("k_decay", [0.5, 1.0, 2.0])
@pytest.mark.parametrize(("warmup", "cooldown"), [(0, 0), (1, 0), (0, 1), (2, 1)])
@pytest.mark.parametrize("minimum", [{"lr_min": 1e-3}, {"min_lr_ratio": 0.1}, {"lr_min": 0.0}])
def test_cosine_reaches_minimum_exactly_at_last_decay_update(
    k_decay: float, warmup: int, cooldown: int, minimum: dict[str, float]
) -> None:
    total, per_epoch = 5, 4
    scheduler = cosine(optimizer(), k_decay=k_decay, num_warmup_epochs=warmup, num_cooldown_epochs=cooldown,
                       warmup_starting_lr=1e-4, **minimum)
    used = run(scheduler, total * per_epoch + 3)  # three steps past the end too
    last_decay = (total - cooldown) * per_epoch - 1
    for group, base in enumerate(BASES):
        lowest = minimum.get("min_lr_ratio", 0.0) * base or minimum.get("lr_min", 0.0)
        lrs = column(used, group)
        assert lrs[last_decay] == lowest
        assert lrs[last_decay - 1] > lowest
        assert all(lr == lowest for lr in lrs[last_decay:])
        peak = max(warmup * per_epoch - 1, 0)
        assert lrs[peak] == base
        assert_non_increasing(lrs[peak:])
        assert min(lrs[peak:]) >= lowest
        if k_decay == 1.0:  # no sudden drop: no step falls more than the cosine's steepest slope allows
            steps = last_decay - peak
            assert max(a - b for a, b in itertools.pairwise(lrs[peak:])) <= (base - lowest) * math.pi / (2 * steps) + 1e-12


def test_cosine_every_small_configuration_keeps_its_invariants() -> None:
    for epochs, per_epoch, warmup, cooldown in itertools.product(range(1, 5), range(1, 4), range(5), range(5)):
        if (epochs - warmup - cooldown) * per_epoch < 1:
            with pytest.raises(ValueError, match="num_warmup_epochs"):
                cosine(optimizer(), total_num_epochs=epochs, num_update_steps_per_epoch=per_epoch,
                       num_warmup_epochs=warmup, num_cooldown_epochs=cooldown)
            continue
        scheduler = cosine(optimizer(), total_num_epochs=epochs, num_update_steps_per_epoch=per_epoch,
                           num_warmup_epochs=warmup, num_cooldown_epochs=cooldown, lr_min=1e-3)
        lrs = column(run(scheduler, epochs * per_epoch + 1), 0)
        peak, last_decay = max(warmup * per_epoch - 1, 0), (epochs - cooldown) * per_epoch - 1
        assert lrs[last_decay:] == [1e-3] * (len(lrs) - last_decay)
        if peak < last_decay:
            assert lrs[peak] == BASES[0]
        assert all(b > a for a, b in itertools.pairwise(lrs[: peak + 1]))
        assert_non_increasing(lrs[peak:])


# ------------------------------------------------------------------------------------------------ WSD curves
def wsd(opt: Optimizer, **kwargs: Any) -> WSDLrScheduler:
    kwargs.setdefault("total_steps", 40)
    kwargs.setdefault("num_warmup_steps", 4)
    kwargs.setdefault("decay_phase_ratio", 0.25)
    kwargs.setdefault("lr_min", 0.1)
    kwargs.setdefault("warmup_starting_lr", 1e-4)
    return WSDLrScheduler(opt, **kwargs)


@pytest.mark.parametrize("sqrt_decay", [True, False])
@pytest.mark.parametrize("num_checkpoints", [1, 2, 3])
def test_wsd_warms_up_to_base_and_decays_to_minimum_at_each_checkpoint(sqrt_decay: bool, num_checkpoints: int) -> None:
    scheduler = wsd(optimizer(), num_checkpoints=num_checkpoints, use_inverse_sqrt_decay=sqrt_decay)
    used = run(scheduler, 43)
    assert scheduler.get_checkpoint_steps() == estimate_checkpoint_steps(40, num_checkpoints)
    assert scheduler.get_checkpoint_steps()[-1] == 40
    for group, base in enumerate(BASES):
        lrs = column(used, group)
        assert lrs[3] == base and all(b > a for a, b in itertools.pairwise(lrs[:4]))
        assert max(lrs) == base
        for info in scheduler.get_decay_info():
            start, end = info["pre_decay_step"], info["period_end"]
            assert info["decay_steps"] >= 1 and lrs[start - 1] == base
            assert lrs[end - 1] == base * 0.1
            assert all(b < a for a, b in itertools.pairwise(lrs[start - 1 : end]))
            if end < 40:
                assert lrs[end] == base  # back to the stable phase after an intermediate checkpoint
        assert lrs[39:] == [base * 0.1] * 4  # held after the last checkpoint


def test_estimate_checkpoint_steps_ends_at_total() -> None:
    assert estimate_checkpoint_steps(100_000, 1) == [100_000]
    assert estimate_checkpoint_steps(100_000, 2) == [50_000, 100_000]
    assert estimate_checkpoint_steps(200_000, 3) == [50_000, 100_000, 200_000]
    assert estimate_checkpoint_steps(200_000, 4) == [25_000, 50_000, 100_000, 200_000]
    assert estimate_checkpoint_steps(10, 3) == [2, 5, 10]


# ---------------------------------------------------------------------------------------- state round-trips
def assert_resumes_identically(make: Callable[[Optimizer], StatefulSchedulerBase], at: int, total: int) -> None:
    original = make(optimizer())
    run(original, at)
    restored = make(optimizer())
    restored.load_state_dict(saved_and_loaded(original.state_dict()))
    assert restored.num_updates == original.num_updates == at
    assert lrs_of(restored.optimizer) == lrs_of(original.optimizer)
    assert run(restored, total - at + 2) == run(original, total - at + 2)


@pytest.mark.parametrize(("phase", "at"), [("warmup", 1), ("decay", 6), ("last decay", 15), ("cooldown", 18), ("end", 20)])
def test_cosine_state_round_trip_continues_identically(phase: str, at: int) -> None:
    make = partial(cosine, num_warmup_epochs=1, num_cooldown_epochs=1, warmup_starting_lr_ratio=0.1, k_decay=1.5)
    assert_resumes_identically(make, at, 20)


@pytest.mark.parametrize(("phase", "at"), [("warmup", 2), ("stable", 10), ("decay", 17), ("stable 2", 22),
                                           ("decay 2", 37), ("end", 40)])
def test_wsd_state_round_trip_continues_identically(phase: str, at: int) -> None:
    assert_resumes_identically(partial(wsd, num_checkpoints=2), at, 40)


def test_wsd_continuation_starts_a_new_segment_then_resumes_exactly() -> None:
    first = wsd(optimizer(), total_steps=40)
    run(first, 30)  # the pre-decay point of the first run
    state = saved_and_loaded(first.state_dict())
    make_segment = partial(wsd, total_steps=20, is_continuation_from_checkpoint=True)
    segment = make_segment(optimizer())
    segment.load_state_dict(state)
    assert segment.is_continuation_from_checkpoint and segment.total_steps == 20 and segment.num_updates == 0
    lrs = column(run(segment, 20), 0)
    assert lrs[:15] == [BASES[0]] * 15  # no warmup again: a fresh stable phase
    assert lrs[19] == BASES[0] * 0.1
    # A state of the continuation run itself is a resume point of that run, not a new segment.
    middle = make_segment(optimizer())
    middle.load_state_dict(state)
    run(middle, 7)
    resumed = make_segment(optimizer())
    resumed.load_state_dict(saved_and_loaded(middle.state_dict()))
    assert resumed.num_updates == 7
    assert run(resumed, 15) == run(middle, 15)


# -------------------------------------------------------------------------------------------- invalid configs
@pytest.mark.parametrize(("kwargs", "name"), [
    ({"total_num_epochs": 0}, "total_num_epochs"),
    ({"total_num_epochs": TrainerPlaceholderValues.NUM_EPOCHS}, "total_num_epochs.*placeholder"),
    ({"num_update_steps_per_epoch": 0}, "num_update_steps_per_epoch"),
    ({"num_warmup_epochs": 5}, "num_warmup_epochs"),
    ({"num_warmup_epochs": 3, "num_cooldown_epochs": 2}, "num_cooldown_epochs"),
    ({"num_warmup_epochs": -1}, "num_warmup_epochs"),
    ({"num_cooldown_epochs": -1}, "num_cooldown_epochs"),
    ({"lr_min": -1e-3}, "lr_min"),
    ({"lr_min": 0.05}, "lr_min"),  # above the second group's lr (0.03)
    ({"min_lr_ratio": 1.5}, "min_lr_ratio"),
    ({"k_decay": 0.0}, "k_decay"),
    ({"k_decay": -1.0}, "k_decay"),
    ({"num_warmup_epochs": 1, "warmup_starting_lr": 0.05}, "warmup_starting_lr"),
    ({"warmup_starting_lr_ratio": 2.0}, "warmup_starting_lr_ratio"),
])
def test_cosine_invalid_configuration_raises_value_error(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        cosine(optimizer(), **kwargs)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"total_steps": None}, "total_steps"),
    ({"total_steps": 0}, "total_steps"),
    ({"num_epochs": 2, "num_update_steps_per_epoch": 5}, "total_steps"),
    ({"total_steps": None, "num_epochs": 2, "num_update_steps_per_epoch": 0}, "num_update_steps_per_epoch"),
    ({"decay_phase_ratio": 1.5}, "decay_phase_ratio"),
    ({"decay_phase_ratio": 0.5, "num_checkpoints": 2}, "decay_phase_ratio"),
    ({"lr_min": -0.1}, "lr_min"),
    ({"lr_min": 2.0}, "lr_min"),
    ({"lr_min": 0.0, "use_inverse_sqrt_decay": False}, "lr_min"),
    ({"num_checkpoints": 0}, "num_checkpoints"),
    ({"total_steps": 7, "num_checkpoints": 4}, "num_checkpoints"),
    ({"num_warmup_steps": -1}, "num_warmup_steps"),
    ({"warmup_starting_lr": 0.05}, "warmup_starting_lr"),
])
def test_wsd_invalid_configuration_raises_value_error(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        wsd(optimizer(), **kwargs)


def test_wsd_factory_warmup_uses_the_given_updates_per_epoch() -> None:
    factory = WSDLrScheduler.create_scheduler_fn(total_num_epochs=4, num_update_steps_per_epoch=10,
                                                 num_warmup_epochs=1, lr_min=0.1)
    scheduler = factory(optimizer())
    assert scheduler.num_warmup_steps == 10 and scheduler.total_steps == 40


# ------------------------------------------------------------------------------------- driven by the trainer
class LrRecordingTrainer(DefaultTrainer[Batch]):
    """Records the lr of the first parameter group at every optimizer step."""

    @override
    def training_run_start(self) -> None:
        super().training_run_start()
        self.used_lrs: list[float] = []

    @override
    def optimizer_step(self) -> None:
        assert self.optimizer is not None
        self.used_lrs.append(float(self.optimizer.param_groups[0]["lr"]))
        super().optimizer_step()


def _train_with(factory: SchedulerFactory, accumulation: int) -> LrRecordingTrainer:
    model = linear_model()
    trainer = LrRecordingTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=QUIET)
    trainer.train(regression_data(n=20), num_epochs=3, per_device_batch_size=4,
                  gradient_accumulation_steps=accumulation, create_scheduler_fn=factory)
    return trainer


@pytest.mark.parametrize("accumulation", [1, 2])
def test_trainer_run_ends_cosine_at_its_minimum(accumulation: int) -> None:
    factory: SchedulerFactory = CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=1, lr_min=1e-3,
                                                                      warmup_starting_lr=1e-2)
    trainer = _train_with(factory, accumulation)
    updates_per_epoch = -(-5 // accumulation)  # 5 batches per epoch
    assert len(trainer.used_lrs) == 3 * updates_per_epoch
    assert trainer.used_lrs[0] == 1e-2
    assert trainer.used_lrs[updates_per_epoch - 1] == 0.1
    assert trainer.used_lrs[-1] == 1e-3
    assert_non_increasing(trainer.used_lrs[updates_per_epoch - 1 :])
    scheduler = trainer.scheduler
    assert isinstance(scheduler, CosineLrScheduler) and scheduler.num_updates == len(trainer.used_lrs)


def test_trainer_run_ends_wsd_at_its_minimum() -> None:
    trainer = _train_with(WSDLrScheduler.create_scheduler_fn(num_warmup_epochs=1, decay_phase_ratio=0.3, lr_min=0.1), 1)
    assert len(trainer.used_lrs) == 15
    assert trainer.used_lrs[4] == 0.1 and trainer.used_lrs[-1] == 0.1 * 0.1
    assert_non_increasing(trainer.used_lrs[4:])


# ------------------------------------------------------------------------------------ TrainerWithTimmScheduler
class TimmStandIn:
    """timm.scheduler.Scheduler's interface, recording how it is driven."""

    def __init__(self, optimizer: Optimizer, t_initial: int) -> None:
        self.optimizer = optimizer
        self.t_initial = t_initial
        self.update_calls: list[int] = []
        self.epoch_calls: list[tuple[int, float | None]] = []

    def step(self, epoch: int, metric: float | None = None) -> None:
        self.epoch_calls.append((epoch, metric))

    def step_update(self, num_updates: int, metric: float | None = None) -> None:
        self.update_calls.append(num_updates)

    def state_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)


class MetricTimmTrainer(TrainerWithTimmScheduler[Batch]):
    @override
    def scheduler_metric(self) -> float | None:
        return float(self.run_history.get_latest_metric("train_loss_epoch"))


def _timm_run(with_eval: bool, trainer_cls: type[TrainerWithTimmScheduler[Batch]] = TrainerWithTimmScheduler,
              ) -> tuple[TrainerWithTimmScheduler[Batch], TimmStandIn]:
    model = linear_model()
    trainer = trainer_cls(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=QUIET)
    trainer.train(regression_data(n=20), num_epochs=2, eval_dataset=regression_data(n=8) if with_eval else None,
                  per_device_batch_size=4, gradient_accumulation_steps=2,
                  create_scheduler_fn=timm_scheduler_fn(partial(TimmStandIn, t_initial=TrainerPlaceholderValues.NUM_EPOCHS)))
    scheduler = cast(object, trainer.scheduler)
    assert isinstance(scheduler, TimmStandIn)
    return trainer, scheduler


@pytest.mark.parametrize("with_eval", [False, True])
def test_timm_trainer_counts_updates_and_steps_each_epoch_once(with_eval: bool) -> None:
    trainer, scheduler = _timm_run(with_eval)
    assert scheduler.t_initial == 2
    # 5 batches per epoch, windows of 2: 3 updates per epoch, counted on across epochs.
    assert scheduler.update_calls == [1, 2, 3, 4, 5, 6]
    assert scheduler.epoch_calls == [(1, None), (2, None)]
    if with_eval:
        trainer.evaluate(regression_data(n=8))
        assert scheduler.epoch_calls == [(1, None), (2, None)]  # evaluation never steps the schedule


def test_timm_trainer_passes_its_metric() -> None:
    trainer, scheduler = _timm_run(True, MetricTimmTrainer)
    losses = trainer.run_history.get_metric_values("train_loss_epoch")
    assert scheduler.epoch_calls == [(1, losses[0]), (2, losses[1])]


@pytest.mark.parametrize("factory", [
    partial(torch.optim.lr_scheduler.StepLR, step_size=1),
    CosineLrScheduler.create_scheduler_fn(),
])
def test_timm_trainer_rejects_other_schedulers(factory: SchedulerFactory) -> None:
    model = linear_model()
    trainer = TrainerWithTimmScheduler(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=QUIET)
    with pytest.raises(TypeError, match="timm-style"):
        trainer.train(regression_data(n=8), num_epochs=1, create_scheduler_fn=factory)


def test_schedulers_satisfy_the_trainer_protocols() -> None:
    scheduler: SchedulerLike = cosine(optimizer())
    factory: SchedulerFactory = WSDLrScheduler.create_scheduler_fn(total_num_epochs=2, num_update_steps_per_epoch=10)
    assert scheduler.state_dict()["num_updates"] == -1  # pytorch-accelerated's meaning: no update yet
    assert isinstance(factory(optimizer()), WSDLrScheduler)
