"""Small models, datasets and trainers shared by the tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any
from unittest import mock

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pta import DefaultTrainer


def manual_seed(seed: int) -> None:
    """``torch.manual_seed``, typed: its ``seed`` parameter is unannotated (unknown under pyright strict)."""
    torch.manual_seed(seed)  # pyright: ignore[reportUnknownMemberType]  # torch leaves `seed` unannotated


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, typed: torch's optimizers override ``step`` with an unannotated ``closure``."""
    optimizer.step()  # pyright: ignore[reportUnknownMemberType]  # SGD/Adam.step(closure=None) is unannotated


def regression_data(n: int = 64, features: int = 4, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    w = torch.randn(features, 1, generator=g)
    y = x @ w + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def classification_data(n: int = 64, features: int = 4, classes: int = 3, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return TensorDataset(x, y)


def linear_model(features: int = 4, out: int = 1, seed: int = 0) -> nn.Module:
    manual_seed(seed)
    return nn.Linear(features, out)


def mlp(features: int = 4, hidden: int = 16, out: int = 1, seed: int = 0) -> nn.Module:
    manual_seed(seed)
    return nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, out))


def quiet_trainer(model: nn.Module, lr: float = 0.1, **kwargs: Any) -> DefaultTrainer:
    """A DefaultTrainer with SGD, MSE loss and no console callbacks."""
    return DefaultTrainer(
        model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=lr), callbacks=kwargs.pop("callbacks", ()), **kwargs
    )


def params_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def direct_optimizer(adapter: Any, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer | None:
    """The optimizer ``adapter.optimizer_step`` and ``adapter.zero_grad`` call directly instead of
    ``optimizer`` (Accelerate's wrapper), or ``None`` when they call the wrapper; observed with both
    methods of both objects replaced by recorders, so nothing is stepped or zeroed. ``adapter.direct_update``,
    which ``TrainerStep._default_update`` follows, must decide the same way."""
    inner: torch.optim.Optimizer | None = getattr(optimizer, "optimizer", None)
    calls: list[str] = []

    def recorder(name: str) -> Callable[..., None]:
        def record(*args: object, **kwargs: object) -> None:
            calls.append(name)
        return record

    with contextlib.ExitStack() as patches:
        for name, target in (("wrapper", optimizer), ("inner", inner)):
            for method in ("step", "zero_grad") if target is not None else ():
                patches.enter_context(mock.patch.object(target, method, recorder(name)))
        adapter.optimizer_step(optimizer)
        adapter.zero_grad(optimizer)
    assert calls in (["wrapper", "wrapper"], ["inner", "inner"]), calls
    direct = adapter.direct_update  # a step of default hooks makes the three calls itself where it applies
    assert (direct is not None and direct[0] is optimizer and direct[1] is inner
            and adapter.gradient_state.sync_gradients) == (calls[0] == "inner"), (direct, calls)
    return inner if calls[0] == "inner" else None
