"""Gradient accumulation is exact: k micro-batches of b samples update like one batch of k*b samples.

Every trainer run here is compared with a hand-written plain PyTorch loop that computes the true mean
loss over each accumulation window's samples, back-propagates once and (optionally) clips once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from typing_extensions import override

from pta import BatchOutput, DefaultTrainer, TrainerBase, TrainerCallback
from pta._accelerate import AcceleratorAdapter
from pta.mixins import GradAccumMixin
from tests._helpers import max_abs_diff, mlp, optimizer_step, params_of, regression_data

QUIET: tuple[TrainerCallback, ...] = ()  # no console output
NO_SHUFFLE: dict[str, Any] = {"shuffle": False}
TOL = 1e-6

Batch = list[Tensor]


def sgd_trainer(model: nn.Module, lr: float = 0.1) -> DefaultTrainer[Batch]:
    return DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=lr), callbacks=QUIET)


def windows(n: int, window: int) -> Iterator[slice]:
    for start in range(0, n, window):
        yield slice(start, min(start + window, n))


def plain_window_loop(
    model: nn.Module,
    dataset: TensorDataset,
    samples_per_window: int,
    epochs: int,
    lr: float = 0.1,
    clip_value: float | None = None,
    clip_norm: float | None = None,
) -> None:
    """Reference: one SGD update per window of consecutive samples, on the window's true mean loss."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = dataset.tensors
    for _ in range(epochs):
        for window in windows(len(x), samples_per_window):
            optimizer.zero_grad()
            torch.autograd.backward(F.mse_loss(model(x[window]), y[window]))
            if clip_value is not None:
                nn.utils.clip_grad_value_(model.parameters(), clip_value)
            if clip_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            optimizer_step(optimizer)


def train_pta(
    model: nn.Module,
    dataset: TensorDataset,
    batch_size: int,
    accumulation: int,
    epochs: int,
    lr: float = 0.1,
    **train_kwargs: Any,
) -> DefaultTrainer[Batch]:
    trainer = sgd_trainer(model, lr)
    trainer.train(
        dataset,
        epochs,
        per_device_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        train_dataloader_kwargs=NO_SHUFFLE,
        **train_kwargs,
    )
    return trainer


# (samples, micro-batch size, accumulation steps): even windows; 10 batches with k=4 -> windows of
# 4, 4, 2 batches whose last batch has 2 samples (< b); 8 batches with k=3 -> windows 3, 3, 2.
SHAPES = [(64, 4, 4), (38, 4, 4), (37, 5, 3), (20, 4, 8)]


@pytest.mark.parametrize(("n", "b", "k"), SHAPES)
def test_accumulation_matches_plain_loop_and_one_big_batch(n: int, b: int, k: int) -> None:
    dataset = regression_data(n=n)
    model = mlp(hidden=8)
    start = copy.deepcopy(model)

    accumulated = copy.deepcopy(start)
    train_pta(accumulated, dataset, b, k, epochs=3)
    big_batch = copy.deepcopy(start)
    train_pta(big_batch, dataset, b * k, 1, epochs=3)
    reference = copy.deepcopy(start)
    plain_window_loop(reference, dataset, b * k, epochs=3)

    assert max_abs_diff(params_of(reference), params_of(start)) > 1e-2, "the reference loop did not train"
    assert max_abs_diff(params_of(accumulated), params_of(reference)) <= TOL
    assert max_abs_diff(params_of(big_batch), params_of(reference)) <= TOL


def test_short_last_window_is_weighted_by_its_real_size() -> None:
    """Sensitivity check: weighting the 2-batch last window as if it had k batches would differ."""
    dataset = regression_data(n=38)
    model = mlp(hidden=8)
    accumulated = copy.deepcopy(model)
    train_pta(accumulated, dataset, 4, 4, epochs=1)

    # A naive "divide every micro-batch loss by k" loop: wrong on the short last window.
    naive = copy.deepcopy(model)
    optimizer = torch.optim.SGD(naive.parameters(), lr=0.1)
    x, y = dataset.tensors
    for window in windows(len(x), 16):
        optimizer.zero_grad()
        for batch in windows(window.stop - window.start, 4):
            sl = slice(window.start + batch.start, window.start + batch.stop)
            torch.autograd.backward(F.mse_loss(naive(x[sl]), y[sl]) / 4)
        optimizer_step(optimizer)
    reference = copy.deepcopy(model)
    plain_window_loop(reference, dataset, 16, epochs=1)

    assert max_abs_diff(params_of(naive), params_of(reference)) > 1e-4
    assert max_abs_diff(params_of(accumulated), params_of(reference)) <= TOL


# ---------------------------------------------------------------------------------- num_items_in_batch
def masked_data(n: int, seed: int = 0, empty_rows: tuple[int, ...] = ()) -> TensorDataset:
    """Inputs, 3 targets per sample and a 0/1 mask of which targets count (like padding tokens)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = torch.randn(n, 3, generator=g)
    mask = (torch.rand(n, 3, generator=g) < 0.6).float()
    mask[0] = 1.0  # no sample-level coincidence: rows carry different numbers of items
    for row in empty_rows:
        mask[row] = 0.0
    return TensorDataset(x, y, mask)


def masked_sum(model: nn.Module, x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    outputs: Tensor = model(x)
    return ((outputs - y) ** 2 * mask).sum()


class MaskedLossTrainer(DefaultTrainer[Batch]):
    """Loss = mean over the batch's unmasked items; reports them as ``num_items_in_batch``."""

    @override
    def calculate_train_batch_loss(self, batch: Batch) -> BatchOutput:
        x, y, mask = batch
        items = int(mask.sum().item())
        loss = masked_sum(self.model, x, y, mask) / max(items, 1)
        return {"loss": loss, "batch_size": x.shape[0], "num_items_in_batch": items}


def plain_masked_loop(model: nn.Module, dataset: TensorDataset, samples_per_window: int, epochs: int,
                      per_sample_weights: bool = False) -> None:
    """Reference: per window, the mean over all unmasked items of the window.

    ``per_sample_weights=True`` instead weights each micro-batch's item mean by its sample count (what
    accumulation would do if it ignored ``num_items_in_batch``); used only as a sensitivity check.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y, mask = dataset.tensors
    for _ in range(epochs):
        for window in windows(len(x), samples_per_window):
            optimizer.zero_grad()
            if per_sample_weights:
                count = window.stop - window.start
                for batch in windows(count, 2):
                    sl = slice(window.start + batch.start, window.start + batch.stop)
                    items = max(float(mask[sl].sum()), 1.0)
                    share = (sl.stop - sl.start) / count
                    torch.autograd.backward(masked_sum(model, x[sl], y[sl], mask[sl]) / items * share)
            else:
                items = max(float(mask[window].sum()), 1.0)
                torch.autograd.backward(masked_sum(model, x[window], y[window], mask[window]) / items)
            optimizer_step(optimizer)


def train_masked(model: nn.Module, dataset: TensorDataset, b: int, k: int, epochs: int) -> None:
    trainer = MaskedLossTrainer(model, None, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=QUIET)
    trainer.train(dataset, epochs, per_device_batch_size=b, gradient_accumulation_steps=k,
                  train_dataloader_kwargs=NO_SHUFFLE)


@pytest.mark.parametrize(("n", "k"), [(24, 3), (19, 4)])  # (19, 4): windows of 4, 4, 2 batches, last batch of 1
def test_accumulation_weights_by_num_items_in_batch(n: int, k: int) -> None:
    dataset = masked_data(n)
    model = mlp(hidden=8, out=3)
    accumulated, big_batch, reference, by_samples = (copy.deepcopy(model) for _ in range(4))

    train_masked(accumulated, dataset, 2, k, epochs=2)
    train_masked(big_batch, dataset, 2 * k, 1, epochs=2)
    plain_masked_loop(reference, dataset, 2 * k, epochs=2)
    plain_masked_loop(by_samples, dataset, 2 * k, epochs=2, per_sample_weights=True)

    assert max_abs_diff(params_of(by_samples), params_of(reference)) > 1e-4, "mask too regular to tell"
    assert max_abs_diff(params_of(accumulated), params_of(reference)) <= TOL
    assert max_abs_diff(params_of(big_batch), params_of(reference)) <= TOL


def test_micro_batch_without_items_contributes_nothing() -> None:
    """A window whose first micro-batch has num_items_in_batch == 0 (all padding) must still train."""
    dataset = masked_data(16, empty_rows=(0, 1))  # batch 0 (rows 0-1) of the first window has no items
    model = mlp(hidden=8, out=3)
    accumulated, reference = copy.deepcopy(model), copy.deepcopy(model)

    train_masked(accumulated, dataset, 2, 4, epochs=2)
    plain_masked_loop(reference, dataset, 8, epochs=2)

    assert max_abs_diff(params_of(accumulated), params_of(reference)) <= TOL


# ---------------------------------------------------------------------------------- clipping
class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return function(*args, **kwargs)

        return counted


def count_optimizer_steps(optimizer: torch.optim.Optimizer) -> Counter:
    counter = Counter()

    def hook(opt: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        counter.calls += 1

    optimizer.register_step_post_hook(hook)
    return counter


@pytest.mark.parametrize("kind", ["value", "norm"])
@pytest.mark.parametrize(("n", "b", "k"), [(24, 4, 1), (24, 4, 3), (38, 4, 4)])
def test_clipping_happens_once_per_update(kind: str, n: int, b: int, k: int,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    name = "clip_grad_value_" if kind == "value" else "clip_grad_norm_"
    adapter_calls, torch_calls = Counter(), Counter()
    monkeypatch.setattr(AcceleratorAdapter, name, adapter_calls.wrap(getattr(AcceleratorAdapter, name)))
    monkeypatch.setattr(torch.nn.utils, name, torch_calls.wrap(getattr(torch.nn.utils, name)))

    model = mlp(hidden=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = count_optimizer_steps(optimizer)
    trainer = DefaultTrainer(model, nn.MSELoss(), optimizer, callbacks=QUIET)
    clip: dict[str, Any] = {"gradient_clip_value": 0.05} if kind == "value" else {"gradient_clip_norm": 0.1}
    trainer.train(regression_data(n=n), 2, per_device_batch_size=b, gradient_accumulation_steps=k,
                  train_dataloader_kwargs=NO_SHUFFLE, **clip)

    batches = -(-n // b)
    updates = 2 * -(-batches // k)
    assert steps.calls == updates
    assert adapter_calls.calls == updates
    assert torch_calls.calls == updates


@pytest.mark.parametrize(("clip_value", "clip_norm"), [(0.05, None), (None, 0.1), (0.05, 0.1)])
@pytest.mark.parametrize(("n", "b", "k"), [(24, 4, 3), (38, 4, 4)])
def test_clipping_acts_on_the_window_mean_gradient(clip_value: float | None, clip_norm: float | None,
                                                   n: int, b: int, k: int) -> None:
    dataset = regression_data(n=n)
    model = mlp(hidden=8)
    clipped, reference, unclipped = copy.deepcopy(model), copy.deepcopy(model), copy.deepcopy(model)

    train_pta(clipped, dataset, b, k, epochs=2, gradient_clip_value=clip_value, gradient_clip_norm=clip_norm)
    plain_window_loop(reference, dataset, b * k, epochs=2, clip_value=clip_value, clip_norm=clip_norm)
    plain_window_loop(unclipped, dataset, b * k, epochs=2)

    assert max_abs_diff(params_of(unclipped), params_of(reference)) > 1e-3, "clipping was not active"
    assert max_abs_diff(params_of(clipped), params_of(reference)) <= TOL


# ---------------------------------------------------------------------------------- recorded loss
def per_sample_mean_loss(model: nn.Module, dataset: TensorDataset) -> float:
    x, y = dataset.tensors
    with torch.no_grad():
        return float(((model(x) - y) ** 2).mean())


@pytest.mark.parametrize("k", [1, 2, 3, 4, 10, 20])
def test_train_loss_epoch_is_the_per_sample_mean(k: int) -> None:
    """lr=0 keeps the parameters fixed, so every epoch's loss is the dataset's per-sample mean loss."""
    dataset = regression_data(n=38)  # batches of 4: the last one has 2 samples
    model = mlp(hidden=8)
    expected = per_sample_mean_loss(model, dataset)

    trainer = train_pta(model, dataset, 4, k, epochs=2, lr=0.0)

    values = trainer.run_history.get_metric_values("train_loss_epoch")
    assert len(values) == 2
    assert all(isinstance(v, float) for v in values)
    assert values == pytest.approx([expected, expected], rel=1e-6, abs=1e-7)


def test_unweighted_batch_mean_would_differ() -> None:
    """Sensitivity check for the test above: the mean of batch means is not the per-sample mean here."""
    dataset = regression_data(n=38)
    model = mlp(hidden=8)
    x, y = dataset.tensors
    with torch.no_grad():
        batch_means = [float(F.mse_loss(model(x[s]), y[s])) for s in windows(38, 4)]
    assert abs(sum(batch_means) / len(batch_means) - per_sample_mean_loss(model, dataset)) > 1e-4


def test_train_loss_epoch_tracks_training_identically_for_any_accumulation() -> None:
    """With lr > 0 the recorded loss of k micro-batches equals that of one big batch, epoch by epoch."""
    dataset = regression_data(n=38)
    model = mlp(hidden=8)
    accumulated = train_pta(copy.deepcopy(model), dataset, 4, 4, epochs=3)
    big_batch = train_pta(copy.deepcopy(model), dataset, 16, 1, epochs=3)

    acc_losses = accumulated.run_history.get_metric_values("train_loss_epoch")
    big_losses = big_batch.run_history.get_metric_values("train_loss_epoch")
    assert acc_losses == pytest.approx(big_losses, rel=1e-5)
    assert acc_losses[-1] < acc_losses[0]


# ---------------------------------------------------------------------------------- the scale_loss seam
class SeesScaleLoss(TrainerBase[Batch]):
    """A user mixin below GradAccumMixin in the MRO: it receives what the loop passed to scale_loss."""

    seen: list[tuple[float, int]]

    @override
    def scale_loss(self, loss: Tensor, batch_output: BatchOutput, batch_size: int) -> Tensor:
        self.seen.append((float(batch_output["loss"].detach()), batch_size))
        return super().scale_loss(loss, batch_output, batch_size)


class AccumulatingTrainer(GradAccumMixin[Batch], SeesScaleLoss):
    pass


def test_scale_loss_overrides_below_grad_accum_get_the_batch_output_and_size() -> None:
    model = mlp(hidden=8)
    trainer = AccumulatingTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.0), callbacks=QUIET)
    trainer.seen = []
    dataset = regression_data(n=14)
    trainer.train(dataset, 1, per_device_batch_size=4, gradient_accumulation_steps=2,
                  train_dataloader_kwargs=NO_SHUFFLE)

    x, y = dataset.tensors
    with torch.no_grad():
        expected = [(float(F.mse_loss(model(x[s]), y[s])), s.stop - s.start) for s in windows(14, 4)]
    assert [size for _, size in trainer.seen] == [4, 4, 4, 2]
    assert [loss for loss, _ in trainer.seen] == pytest.approx([loss for loss, _ in expected], rel=1e-6)
