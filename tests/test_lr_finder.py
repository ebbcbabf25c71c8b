"""The LR finder (issue 12, item 6): a sweep on a problem whose good learning rate is known, exact
restoration of the trainer, any composition with an optimizer."""

from __future__ import annotations

import random
from pathlib import Path
from collections.abc import Callable
from typing import Any, cast

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pta import ConfigurationError, DefaultTrainer, DevicePlacementMixin, GradAccumMixin, TrainerBase, TrainerCallback
from pta.callbacks import CSVLoggerCallback, get_default_callbacks
from pta.lr_finder import LRFinderResult, lr_find, suggest
from tests._helpers import manual_seed, regression_data


def least_squares(n: int = 4096) -> TensorDataset:
    """y = x w + noise with x ~ N(0, I): the MSE's Hessian is 2 I, so plain SGD converges for lr < 1
    (fastest near 0.5) and diverges above 1."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=generator)
    y = x @ torch.randn(8, 1, generator=generator) + 0.01 * torch.randn(n, 1, generator=generator)
    return TensorDataset(x, y)


def _sgd_trainer(lr: float = 0.1, **kwargs: Any) -> DefaultTrainer:
    manual_seed(0)
    model = nn.Linear(8, 1)
    return DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=lr), **kwargs)


def test_finds_the_known_good_learning_rate(capsys: pytest.CaptureFixture[str]) -> None:
    result = lr_find(_sgd_trainer(callbacks=()), least_squares(), start_lr=1e-5, end_lr=10.0, num_steps=100,
                     per_device_batch_size=64)
    assert result.diverged and 1.0 < result.lrs[-1] < 10.0  # SGD diverges above lr 1, and the sweep saw it
    assert result.suggestion is not None and 0.02 <= result.suggestion <= 0.8
    assert len(result.lrs) == len(result.losses) == len(result.smoothed_losses) < 100
    assert result.lrs[0] == pytest.approx(1e-5) and all(b > a for a, b in zip(result.lrs, result.lrs[1:]))
    assert min(result.losses) < 0.01 * result.losses[0]  # good rates do train
    assert "suggested lr" in capsys.readouterr().out


def test_the_trainer_is_restored_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.AdamW([{"params": model[0].parameters(), "lr": 1e-3},
                                   {"params": model[2].parameters(), "lr": 2e-3}])
    callbacks: list[TrainerCallback | type[TrainerCallback]] = [
        *get_default_callbacks(), CSVLoggerCallback(tmp_path / "m.csv")]
    trainer = DefaultTrainer(model, nn.MSELoss(), optimizer, callbacks=callbacks, seed=3)
    trainer.train(least_squares(256), 1, per_device_batch_size=32)  # the optimizer now has state
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    moments = [optimizer.state[p]["exp_avg"].clone() for p in model.parameters()]
    history = trainer.run_history.get_metric_values("train_loss_epoch")
    handler, before = trainer.callback_handler, list(trainer.callback_handler.callbacks)
    random.seed(1)
    manual_seed(1)
    expected_draws = (random.random(), torch.rand(3))
    random.seed(1)
    manual_seed(1)

    result = lr_find(trainer, least_squares(256), num_steps=20, per_device_batch_size=32)

    assert len(result.lrs) > 5
    draws = (random.random(), torch.rand(3))
    assert draws[0] == expected_draws[0] and torch.equal(draws[1], expected_draws[1])
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 2e-3]
    assert optimizer.state_dict()["state"].keys() == optimizer_state["state"].keys()
    assert all(torch.equal(optimizer.state[p]["exp_avg"], m) for p, m in zip(model.parameters(), moments))
    assert trainer.run_history.get_metric_values("train_loss_epoch") == history
    assert trainer.callback_handler is handler and trainer.callback_handler.callbacks == before
    assert trainer.model is model
    assert not (tmp_path / "m_steps.csv").exists() and (tmp_path / "m.csv").read_text().count("\n") == 2
    capsys.readouterr()
    # and the trainer trains on as if nothing happened
    trainer.train(least_squares(256), 1, per_device_batch_size=32)


def test_param_groups_keep_their_ratio() -> None:
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 1))
    optimizer = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.1},
                                 {"params": model[1].parameters(), "lr": 0.3}])
    seen: list[list[float]] = []
    original = cast("Callable[..., Any]", optimizer.step)  # pyright: ignore[reportUnknownMemberType]  # SGD.step(closure=None) is unannotated

    def step(*args: Any, **kwargs: Any) -> Any:
        seen.append([g["lr"] for g in optimizer.param_groups])
        return original(*args, **kwargs)

    optimizer.step = step  # type: ignore[method-assign]  # observe the rates the sweep sets
    trainer = TrainerBase(model, nn.MSELoss(), optimizer, callbacks=())
    result = lr_find(trainer, least_squares(256), start_lr=1e-4, end_lr=1e-2, num_steps=5, per_device_batch_size=32)
    assert [row[0] for row in seen] == pytest.approx(result.lrs)
    assert all(row[1] == pytest.approx(3 * row[0]) for row in seen)


class AccumTrainer(GradAccumMixin[Any], DevicePlacementMixin[Any], TrainerBase[Any]):
    """A composition without mixed precision or schedulers."""


def test_works_with_other_compositions_and_accumulation(capsys: pytest.CaptureFixture[str]) -> None:
    manual_seed(0)
    model = nn.Linear(8, 1)
    trainer = AccumTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=())
    result = lr_find(trainer, least_squares(1024), start_lr=1e-4, end_lr=10, num_steps=30,
                     per_device_batch_size=16, gradient_accumulation_steps=2)
    assert 10 < len(result.lrs) <= 30 and result.suggestion is not None
    base = TrainerBase(nn.Linear(4, 1), nn.MSELoss(), None, callbacks=())
    with pytest.raises(ConfigurationError, match="optimizer"):
        lr_find(base, regression_data(16))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"start_lr": 1.0, "end_lr": 0.1}, "start_lr"), ({"num_steps": 1}, "num_steps"),
    ({"smoothing": 0.0}, "smoothing"), ({"diverge_threshold": 1.0}, "diverge_threshold"),
])
def test_bad_arguments_fail_before_any_work(kwargs: dict[str, Any], match: str) -> None:
    trainer = _sgd_trainer(callbacks=())
    weights = [p.clone() for p in trainer.model.parameters()]
    with pytest.raises(ConfigurationError, match=match):
        lr_find(trainer, least_squares(64), **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(weights, trainer.model.parameters()))


def test_suggestion_is_the_steepest_descent_before_the_minimum() -> None:
    lrs = [10.0 ** (k / 4 - 5) for k in range(21)]
    losses = [1.0] * 6 + [0.9, 0.6, 0.2, 0.1, 0.09, 0.08, 0.5, 2.0] + [3.0] * 7
    assert suggest(lrs, losses) == lrs[7]
    assert suggest(lrs[:2], losses[:2]) is None


def test_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = LRFinderResult(lrs=[1e-3, 1e-2, 1e-1], losses=[1.0, 0.5, 2.0], smoothed_losses=[1.0, 0.8, 1.2],
                            suggestion=1e-2)
    path = result.plot(tmp_path / "lr.png")
    assert path.read_bytes().startswith(b"\x89PNG")
