"""The loop skips a per-step hook only where pta's own code would do nothing (pta._step_plan): a hook
that a user defines, on a class or an instance, is always called; every configuration that gives
pta's own hooks work to do makes the loop call them. Where every hook of a step is skipped or pta's
default, the loop makes the defaults' calls in one frame (``default_update``), with the same results."""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

import pytest
import torch
from torch import Tensor
from typing_extensions import override

from pta import DefaultTrainer, TrainerCallback
from pta._meter import running_loss
from pta._step_plan import DEFAULT_UPDATE_HOOKS, StepPlan, plan_steps
from pta._types import BatchOutput
from pta.protocols import TrainerLike

from ._helpers import linear_model, max_abs_diff, params_of, quiet_trainer, regression_data

HOOKS = [name for name in StepPlan.__dataclass_fields__ if name != "default_update"]
STEPS = 8  # 32 samples, batches of 4


class Recording(DefaultTrainer):
    """Counts every call of the per-step hooks; each override calls super(), so results are unchanged."""

    calls: Counter[str]

    @override
    def forward_context(self) -> Any:
        self.calls["forward_context"] += 1
        return super().forward_context()

    @override
    def train_step_context(self, is_update_step: bool) -> Any:
        self.calls["train_step_context"] += 1
        return super().train_step_context(is_update_step)

    @override
    def is_update_step(self, step: int, num_batches: int | None) -> bool:
        self.calls["is_update_step"] += 1
        return super().is_update_step(step, num_batches)

    @override
    def scale_loss(self, loss: Tensor, batch_output: BatchOutput, batch_size: int) -> Tensor:
        self.calls["scale_loss"] += 1
        return super().scale_loss(loss, batch_output, batch_size)

    @override
    def before_optimizer_step(self) -> None:
        self.calls["before_optimizer_step"] += 1
        super().before_optimizer_step()

    @override
    def optimizer_step_was_skipped(self) -> bool:
        self.calls["optimizer_step_was_skipped"] += 1
        return super().optimizer_step_was_skipped()

    @override
    def scheduler_step(self) -> None:
        self.calls["scheduler_step"] += 1
        super().scheduler_step()


def _train(trainer: DefaultTrainer, **kwargs: Any) -> list[Tensor]:
    trainer.train(regression_data(32), num_epochs=1, per_device_batch_size=4, **kwargs)
    return params_of(trainer.model)


def test_every_hook_a_user_overrides_is_called_at_every_step() -> None:
    model = linear_model()
    trainer = Recording(model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=())
    trainer.calls = Counter()
    _train(trainer)
    # forward_context: training steps plus none for evaluation (no eval dataset)
    assert trainer.calls == {name: STEPS for name in HOOKS}


def test_the_overrides_leave_the_weights_as_pta_alone() -> None:
    model = linear_model()
    recording = Recording(model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=())
    recording.calls = Counter()
    assert max_abs_diff(_train(recording), _train(quiet_trainer(linear_model()))) == 0


@pytest.mark.parametrize("hook", [*HOOKS, *DEFAULT_UPDATE_HOOKS])
def test_a_hook_set_on_the_instance_is_called(hook: str) -> None:
    trainer = quiet_trainer(linear_model())
    original = getattr(trainer, hook)
    calls = 0

    def counting(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(*args)

    setattr(trainer, hook, counting)
    _train(trainer)
    assert calls == STEPS and not plan_steps(trainer).default_update


def test_pta_alone_in_fp32_without_extras_calls_none_of_them() -> None:
    trainer = quiet_trainer(linear_model())
    _train(trainer)
    assert plan_steps(trainer) == StepPlan(**{name: False for name in HOOKS}, default_update=True)


def _step_lr(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.StepLR:
    return torch.optim.lr_scheduler.StepLR(optimizer, 2)


@pytest.mark.parametrize(
    ("kwargs", "needed"),
    [
        ({"gradient_accumulation_steps": 2}, {"train_step_context", "is_update_step", "scale_loss", "before_optimizer_step"}),
        ({"gradient_clip_value": 1.0}, {"before_optimizer_step"}),
        ({"gradient_clip_norm": 1.0}, {"before_optimizer_step"}),
        ({"create_scheduler_fn": _step_lr}, {"scheduler_step"}),
    ],
)
def test_configurations_that_give_pta_work_make_the_loop_call_it(kwargs: dict[str, Any], needed: set[str]) -> None:
    trainer = quiet_trainer(linear_model())
    _train(trainer, **kwargs)
    plan = plan_steps(trainer)
    assert {name for name in HOOKS if getattr(plan, name)} == needed
    assert not plan.default_update


def test_mixed_precision_makes_the_loop_enter_the_forward_context() -> None:
    trainer = quiet_trainer(linear_model(), mixed_precision="bf16")
    _train(trainer)
    assert plan_steps(trainer).forward_context and not plan_steps(trainer).default_update


def test_a_loss_scaler_makes_the_loop_ask_for_skipped_steps() -> None:
    trainer = quiet_trainer(linear_model())
    _train(trainer)
    trainer._accelerator._direct_backward = False  # what a loss scaler or DeepSpeed leaves
    assert plan_steps(trainer).optimizer_step_was_skipped and not plan_steps(trainer).default_update


class SkipsTheSecondUpdate(DefaultTrainer):
    """Records the flag train_step_context receives and the scheduler steps; reports update 2 as skipped."""

    flags: list[bool]
    updates: int
    scheduler_steps: int

    @override
    def train_step_context(self, is_update_step: bool) -> Any:
        self.flags.append(is_update_step)
        return super().train_step_context(is_update_step)

    @override
    def optimizer_step_was_skipped(self) -> bool:
        self.updates += 1
        return self.updates == 2 or super().optimizer_step_was_skipped()

    @override
    def scheduler_step(self) -> None:
        self.scheduler_steps += 1
        super().scheduler_step()


def test_the_step_context_gets_the_update_flag_and_a_skipped_update_does_not_step_the_scheduler() -> None:
    model = linear_model()
    trainer = SkipsTheSecondUpdate(model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=())
    trainer.flags, trainer.updates, trainer.scheduler_steps = [], 0, 0
    _train(trainer, gradient_accumulation_steps=2)
    assert trainer.flags == [False, True] * (STEPS // 2)
    assert (trainer.updates, trainer.scheduler_steps) == (STEPS // 2, STEPS // 2 - 1)


# ---------------------------------------------------------------------------- the default update
Seen = list[tuple[Tensor, Tensor, object, Tensor]]
"""Per step: the loss, the model outputs, the batch size and the running loss sum after the step."""


class StepOutputs(TrainerCallback):
    """Keeps what every step-end event receives, and the running loss sum at each step."""

    def __init__(self) -> None:
        self.seen: Seen = []

    @override
    def on_train_step_end(self, trainer: TrainerLike, batch_output: BatchOutput, **kwargs: Any) -> None:
        meter = running_loss(trainer, "train")
        assert meter is not None and meter.total is not None
        outputs = cast(Tensor, batch_output.get("model_outputs"))
        self.seen.append((batch_output["loss"].detach(), outputs.detach(), batch_output.get("batch_size"),
                          meter.total.clone()))


def _run_recorded(trainer: DefaultTrainer, hooked: bool) -> tuple[list[Tensor], Seen, float]:
    if hooked:  # an instance attribute that only forwards: the loop goes hook by hook
        trainer.optimizer_zero_grad = trainer.optimizer_zero_grad  # type: ignore[method-assign]  # test instrumentation
    recorder = StepOutputs()
    trainer.callback_handler.add_callback(recorder)
    params = _train(trainer)
    assert plan_steps(trainer).default_update is not hooked
    return params, recorder.seen, trainer.run_history.get_latest_metric("train_loss_epoch")


def test_the_default_update_gives_what_the_hooks_give() -> None:
    fast_params, fast_seen, fast_loss = _run_recorded(quiet_trainer(linear_model()), hooked=False)
    slow_params, slow_seen, slow_loss = _run_recorded(quiet_trainer(linear_model()), hooked=True)
    assert max_abs_diff(fast_params, slow_params) == 0 and fast_loss == slow_loss
    assert len(fast_seen) == len(slow_seen) == STEPS
    for fast, slow in zip(fast_seen, slow_seen, strict=True):
        assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1]) and torch.equal(fast[3], slow[3])
        assert fast[2] == slow[2] == 4 and type(fast[2]) is int


class Counting(DefaultTrainer):
    calls = 0


class OverridesLoss(Counting):
    @override
    def calculate_train_batch_loss(self, batch: Any) -> BatchOutput:
        self.calls += 1
        return super().calculate_train_batch_loss(batch)


class OverridesBackward(Counting):
    @override
    def backward_step(self, loss: Tensor) -> None:
        self.calls += 1
        super().backward_step(loss)


class OverridesStep(Counting):
    @override
    def optimizer_step(self) -> None:
        self.calls += 1
        super().optimizer_step()


class OverridesZeroGrad(Counting):
    @override
    def optimizer_zero_grad(self) -> None:
        self.calls += 1
        super().optimizer_zero_grad()


OVERRIDING: dict[str, type[Counting]] = {
    "calculate_train_batch_loss": OverridesLoss, "backward_step": OverridesBackward,
    "optimizer_step": OverridesStep, "optimizer_zero_grad": OverridesZeroGrad,
}


@pytest.mark.parametrize("hook", DEFAULT_UPDATE_HOOKS)
def test_a_default_update_hook_a_user_overrides_is_called_at_every_step(hook: str) -> None:
    model = linear_model()
    trainer = OVERRIDING[hook](model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=())
    params = _train(trainer)
    assert trainer.calls == STEPS and not plan_steps(trainer).default_update
    assert max_abs_diff(params, _train(quiet_trainer(linear_model()))) == 0
