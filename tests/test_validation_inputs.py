"""Inputs that used to run silently, or fail with a misleading message, fail clearly before the first update."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import TensorDataset
from typing_extensions import override

from pta import DefaultTrainer
from pta._validation import ConfigurationError
from tests._helpers import linear_model, params_of, quiet_trainer, regression_data


def _train(trainer: DefaultTrainer, data: Any = None) -> None:
    trainer.train(data if data is not None else regression_data(16), 1, per_device_batch_size=8)


def test_an_optimizer_over_another_models_parameters_is_refused() -> None:
    model, other = linear_model(), linear_model()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(other.parameters(), lr=0.1), callbacks=())
    before = params_of(model)
    with pytest.raises(ConfigurationError, match="not the model's .*the model would never change"):
        _train(trainer)
    assert all(torch.equal(a, b) for a, b in zip(before, params_of(model), strict=True))


def test_an_optimizer_with_some_foreign_parameters_is_refused_but_loss_parameters_are_fine() -> None:
    model, extra = linear_model(), nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([*model.parameters(), extra], lr=0.1)
    with pytest.raises(ConfigurationError, match="1 of its 3 parameter tensors"):
        _train(DefaultTrainer(model, nn.MSELoss(), optimizer, callbacks=()))

    class WeightedLoss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

        @override
        def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return functional.mse_loss(outputs * self.scale, targets)

    loss = WeightedLoss()
    model = linear_model()
    _train(DefaultTrainer(model, loss, torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.1),
                          callbacks=()))


def test_fp16_on_cpu_is_refused() -> None:
    model = linear_model()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=(),
                             mixed_precision="fp16")
    with pytest.raises(ConfigurationError, match="mixed_precision='fp16' needs a GPU.*bf16"):
        _train(trainer)


@pytest.mark.parametrize("loss_func", [nn.MSELoss(), nn.L1Loss(), functional.mse_loss, nn.SmoothL1Loss()])
def test_output_target_shapes_that_would_broadcast_are_refused(loss_func: Any) -> None:
    x = torch.randn(16, 4)
    data = TensorDataset(x, x.sum(1))  # targets (N,) against outputs (N, 1): broadcast to (N, N)
    model = linear_model()
    before = params_of(model)
    trainer = DefaultTrainer(model, loss_func, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=())
    with pytest.raises(ConfigurationError, match=r"outputs of shape \(8, 1\) and targets of shape \(8,\)"):
        _train(trainer, data)
    assert all(torch.equal(a, b) for a, b in zip(before, params_of(model), strict=True))


def test_cross_entropy_shapes_are_not_refused() -> None:
    x = torch.randn(16, 4)
    data = TensorDataset(x, torch.randint(0, 4, (16,)))
    model = linear_model(out=4)
    _train(DefaultTrainer(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=()),
           data)


class ScaledMSE(nn.MSELoss):
    """An elementwise loss by its class: checked at every step like ``nn.MSELoss``."""


@pytest.mark.parametrize(("loss_func", "checks"), [
    (nn.CrossEntropyLoss(), 1), (functional.cross_entropy, 4), (nn.MSELoss(), 4), (ScaledMSE(), 4),
], ids=["module-once", "function-every-step", "elementwise-every-step", "elementwise-subclass-every-step"])
def test_the_shape_check_runs_once_per_class_of_loss_module_that_cannot_broadcast(
        monkeypatch: pytest.MonkeyPatch, loss_func: Any, checks: int) -> None:
    import pta._validation as validation

    monkeypatch.setattr(validation, "SHAPE_AGNOSTIC_LOSS_TYPES", set[type]())
    calls: list[object] = []
    original = validation.check_loss_shapes

    def counted(loss: object, outputs: object, targets: object) -> None:
        calls.append(loss)
        original(loss, outputs, targets)

    monkeypatch.setattr(validation, "check_loss_shapes", counted)
    x = torch.randn(16, 4)
    classes = isinstance(loss_func, nn.CrossEntropyLoss) or loss_func is functional.cross_entropy
    data = TensorDataset(x, torch.randint(0, 4, (16,)) if classes else x.sum(1, keepdim=True).expand(16, 4).clone())
    model = linear_model(out=4)
    trainer = DefaultTrainer(model, loss_func, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=())
    trainer.train(data, 1, per_device_batch_size=4)
    assert len(calls) == checks


def test_an_elementwise_loss_is_refused_after_other_losses_were_seen() -> None:
    x = torch.randn(16, 4)
    model = linear_model(out=4)
    for loss_func in (nn.CrossEntropyLoss(), functional.cross_entropy):
        _train(DefaultTrainer(model, loss_func, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=()),
               TensorDataset(x, torch.randint(0, 4, (16,))))
    model = linear_model()
    trainer = DefaultTrainer(model, functional.mse_loss, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=())
    with pytest.raises(ConfigurationError, match=r"outputs of shape \(8, 1\) and targets of shape \(8,\)"):
        _train(trainer, TensorDataset(x, x.sum(1)))


@pytest.mark.parametrize("seed", ["abc", 1.5, True])
def test_a_seed_that_is_not_an_integer_is_refused(seed: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"seed must be an integer or None, got {seed!r}"):
        _train(quiet_trainer(linear_model(), seed=seed))
    trainer = quiet_trainer(linear_model(), seed=seed)
    with pytest.raises(ConfigurationError, match=f"seed must be an integer or None, got {seed!r}"):
        trainer.evaluate(regression_data(n=8))  # evaluate() and predict() seed their run too
    with pytest.raises(ConfigurationError, match=f"seed must be an integer or None, got {seed!r}"):
        trainer.predict(regression_data(n=8))


def test_a_loss_that_is_not_a_tensor_is_refused() -> None:
    model = linear_model()

    def float_loss(outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return float(functional.mse_loss(outputs, targets).detach())

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = DefaultTrainer(model, float_loss, optimizer, callbacks=())  # type: ignore[arg-type]  # the misuse under test
    with pytest.raises(ConfigurationError, match="returned a 'loss' of type float; it must be a tensor"):
        _train(trainer)
