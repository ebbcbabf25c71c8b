"""Bad arguments fail with a clear ``pta.ConfigurationError`` naming the argument, before any work:
no accelerator created for the run, no dataloader, no callback event, no optimizer step, unchanged
weights. A batch-loss hook that returns no ``loss`` fails with a ``TypeError`` naming the hook."""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, cast

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from typing_extensions import override

import pta
from pta import BatchOutput, DefaultTrainer, TrainerCallback
from pta.protocols import TrainerLike
from tests._helpers import linear_model, params_of, regression_data


class EventSpy(TrainerCallback):
    """Records every run-level event after construction."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.events.append("on_training_run_start")

    @override
    def on_evaluation_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.events.append("on_evaluation_run_start")

    @override
    def on_train_step_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.events.append("on_train_step_start")


@dataclass
class Setup:
    trainer: DefaultTrainer[Any]
    spy: EventSpy
    before: list[torch.Tensor]
    optimizer_steps: list[int] = field(default_factory=list[int])

    def assert_no_work_done(self) -> None:
        assert self.spy.events == []
        assert self.optimizer_steps == []
        assert self.trainer.train_dataloader is None and self.trainer.eval_dataloader is None
        after = params_of(self.trainer.get_model())
        assert all(torch.equal(a, b) for a, b in zip(self.before, after, strict=True))


def _setup(monkeypatch: pytest.MonkeyPatch, trainer_cls: type[DefaultTrainer[Any]] = DefaultTrainer,
           with_optimizer: bool = True) -> Setup:
    model = linear_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1) if with_optimizer else None
    spy = EventSpy()
    trainer = trainer_cls(model, nn.MSELoss(), optimizer, callbacks=[spy])
    setup = Setup(trainer, spy, params_of(model))
    if optimizer is not None:
        step = cast("Callable[..., Any]", optimizer.step)  # pyright: ignore[reportUnknownMemberType]  # SGD.step(closure=None) is unannotated

        def counting_step(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
            setup.optimizer_steps.append(1)
            return step(*args, **kwargs)

        # a bound method, as LR schedulers expect to find on the optimizer they wrap
        monkeypatch.setattr(optimizer, "step", types.MethodType(counting_step, optimizer))
    return setup


def _empty() -> TensorDataset:
    return TensorDataset(torch.empty(0, 4), torch.empty(0, 1))


def test_configuration_error_is_a_value_error() -> None:
    assert issubclass(pta.ConfigurationError, ValueError)


BAD_TRAIN_ARGUMENTS: list[tuple[str, dict[str, Any], str]] = [
    ("zero_epochs", {"num_epochs": 0}, "num_epochs"),
    ("negative_epochs", {"num_epochs": -1}, "num_epochs"),
    ("no_epochs_no_max_steps", {"num_epochs": None}, "num_epochs"),
    ("zero_max_steps", {"num_epochs": None, "max_num_train_steps": 0}, "max_num_train_steps"),
    ("zero_batch_size", {"per_device_batch_size": 0}, "per_device_batch_size"),
    ("negative_batch_size", {"per_device_batch_size": -4}, "per_device_batch_size"),
    ("zero_accumulation", {"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
    ("negative_clip_value", {"gradient_clip_value": -1.0}, "gradient_clip_value"),
    ("empty_train_dataset", {"train_dataset": "EMPTY"}, "train_dataset"),
    ("missing_train_dataset", {"train_dataset": None}, "train_dataset"),
    ("empty_eval_dataset", {"eval_dataset": "EMPTY"}, "eval_dataset"),
]


@pytest.mark.parametrize(("arguments", "named"), [(a, n) for _, a, n in BAD_TRAIN_ARGUMENTS],
                         ids=[case for case, _, _ in BAD_TRAIN_ARGUMENTS])
def test_bad_train_argument_fails_before_any_work(
    arguments: dict[str, Any], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = _setup(monkeypatch)
    accelerator = setup.trainer._accelerator
    kwargs: dict[str, Any] = {"train_dataset": regression_data(8), "num_epochs": 1, "per_device_batch_size": 4,
                              **arguments}
    for key in ("train_dataset", "eval_dataset"):
        if kwargs.get(key) == "EMPTY":
            kwargs[key] = _empty()
    with pytest.raises(pta.ConfigurationError, match=named):
        setup.trainer.train(**kwargs)
    setup.assert_no_work_done()
    assert setup.trainer._accelerator is accelerator, "a run's accelerator was created before the check"


def test_scheduler_instance_instead_of_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = _setup(monkeypatch)
    assert setup.trainer.optimizer is not None
    scheduler: Any = torch.optim.lr_scheduler.StepLR(setup.trainer.optimizer, step_size=1)
    with pytest.raises(pta.ConfigurationError, match="create_scheduler_fn") as info:
        setup.trainer.train(regression_data(8), 1, create_scheduler_fn=scheduler)
    assert "StepLR" in str(info.value) and "partial" in str(info.value)
    setup.assert_no_work_done()


def test_a_scheduler_factory_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = _setup(monkeypatch)
    setup.trainer.train(regression_data(8), 1, per_device_batch_size=4,
                        create_scheduler_fn=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1))
    assert len(setup.optimizer_steps) == 2


def test_train_without_optimizer(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = _setup(monkeypatch, with_optimizer=False)
    with pytest.raises(pta.ConfigurationError, match="optimizer"):
        setup.trainer.train(regression_data(8), 1)
    setup.assert_no_work_done()


def test_evaluate_without_optimizer_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = _setup(monkeypatch, with_optimizer=False)
    setup.trainer.evaluate(regression_data(8), per_device_batch_size=4)
    assert "evaluation_loss" in setup.trainer.run_history.get_metric_names()


@pytest.mark.parametrize(("arguments", "named"), [
    ({"dataset": "EMPTY"}, "dataset"),
    ({"dataset": None}, "dataset"),
    ({"per_device_batch_size": 0}, "per_device_batch_size"),
], ids=["empty_dataset", "missing_dataset", "zero_batch_size"])
def test_bad_evaluate_argument_fails_before_any_work(
    arguments: dict[str, Any], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = _setup(monkeypatch)
    kwargs: dict[str, Any] = {"dataset": regression_data(8), **arguments}
    if kwargs["dataset"] == "EMPTY":
        kwargs["dataset"] = _empty()
    with pytest.raises(pta.ConfigurationError, match=named):
        setup.trainer.evaluate(**kwargs)
    setup.assert_no_work_done()


# ---------------------------------------------------------------------- batch outputs without loss
class NoLossTrainer(DefaultTrainer[Any]):
    """Returns its outputs under the wrong key, as a user might by mistake."""

    @override
    def calculate_train_batch_loss(self, batch: Any) -> BatchOutput:
        logits = self.model(batch[0])
        result: Any = {"logits": logits, "batch_size": logits.shape[0]}
        return result  # type: ignore[no-any-return]  # deliberately not a BatchOutput


class TensorReturningTrainer(DefaultTrainer[Any]):
    @override
    def calculate_eval_batch_loss(self, batch: Any) -> BatchOutput:
        result: Any = nn.functional.mse_loss(self.model(batch[0]), batch[1])
        return result  # type: ignore[no-any-return]  # deliberately not a BatchOutput


def test_train_batch_output_without_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = _setup(monkeypatch, NoLossTrainer)
    with pytest.raises(TypeError, match="calculate_train_batch_loss") as info:
        setup.trainer.train(regression_data(8), 1, per_device_batch_size=4)
    message = str(info.value)
    assert "'loss'" in message and "'logits'" in message and "'batch_size'" in message
    assert setup.optimizer_steps == []
    assert all(torch.equal(a, b) for a, b in zip(setup.before, params_of(setup.trainer.get_model()), strict=True))


def test_eval_batch_output_that_is_not_a_dict() -> None:
    model = linear_model()
    trainer = TensorReturningTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                                     callbacks=[EventSpy()])
    with pytest.raises(TypeError, match="calculate_eval_batch_loss") as info:
        trainer.evaluate(regression_data(8), per_device_batch_size=4)
    assert "Tensor" in str(info.value)
