"""pta.utils: padding removal, batch limits, dataloader slices, process decorators, ModelEma, worker seeding.

Tests named ``..._pa_...`` pin a behaviour where pytorch-accelerated's helper is wrong.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset, get_worker_info
from typing_extensions import override

import pta.utils as utils
from pta.utils import (
    LIMIT_BATCHES_ENV_VAR,
    DataLoaderSlice,
    LimitBatches,
    ModelEma,
    limit_batches_from_env,
    local_process_zero_first,
    local_process_zero_only,
    remove_padding,
    unwrap_model,
    worker_init_fn,
    world_process_zero_only,
)
from tests._helpers import manual_seed


# ---------------------------------------------------------------------------------------------- remove_padding
def test_remove_padding_keeps_a_genuine_middle_row_equal_to_the_pad_value_pa_drops_it() -> None:
    padded = torch.tensor([[1.0, 2.0], [-1.0, -1.0], [3.0, 4.0], [-1.0, -1.0], [-1.0, -1.0]])
    assert torch.equal(remove_padding(padded, -1), padded[:3])


def test_remove_padding_edge_cases() -> None:
    assert torch.equal(remove_padding(torch.tensor([5, 0, 6, 0, 0]), 0), torch.tensor([5, 0, 6]))
    assert remove_padding(torch.zeros(3, 2, 2), 0).shape == (0, 2, 2)
    nothing_padded = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(remove_padding(nothing_padded, -1), nothing_padded)
    partly = torch.tensor([[1.0, -1.0], [-1.0, -1.0]])  # a row is padding only if every element is
    assert torch.equal(remove_padding(partly, -1), partly[:1])
    assert remove_padding(torch.tensor(3.0), 3.0).ndim == 0


# ---------------------------------------------------------------------------------------------- LimitBatches
@pytest.fixture
def no_limit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LIMIT_BATCHES_ENV_VAR, raising=False)


@pytest.mark.usefixtures("no_limit_env")
def test_limit_batches_sets_and_removes_the_variable() -> None:
    assert LIMIT_BATCHES_ENV_VAR == "PT_ACC_LIMIT_BATCHES"
    with LimitBatches(3) as limit:
        assert limit.num_batches == 3
        assert os.environ[LIMIT_BATCHES_ENV_VAR] == "3"
        assert limit_batches_from_env() == 3
    assert LIMIT_BATCHES_ENV_VAR not in os.environ
    assert limit_batches_from_env() is None


def test_limit_batches_restores_the_previous_value_pa_deletes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LIMIT_BATCHES_ENV_VAR, "7")
    with LimitBatches(2):
        with LimitBatches(1):  # nested: pa's inner exit deletes the variable, its outer exit raises KeyError
            assert os.environ[LIMIT_BATCHES_ENV_VAR] == "1"
        assert os.environ[LIMIT_BATCHES_ENV_VAR] == "2"
    assert os.environ[LIMIT_BATCHES_ENV_VAR] == "7"


@pytest.mark.usefixtures("no_limit_env")
def test_limit_batches_restores_on_an_exception_and_can_be_reused() -> None:
    limit = LimitBatches(4)
    with pytest.raises(RuntimeError), limit:
        raise RuntimeError("boom")
    assert LIMIT_BATCHES_ENV_VAR not in os.environ
    with limit:
        assert os.environ[LIMIT_BATCHES_ENV_VAR] == "4"
    assert LIMIT_BATCHES_ENV_VAR not in os.environ


def test_limit_batches_rejects_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_batches"):
            LimitBatches(bad)  # type: ignore[arg-type]  # deliberately wrong types are rejected too
    monkeypatch.setenv(LIMIT_BATCHES_ENV_VAR, "0")
    with pytest.raises(ValueError, match=LIMIT_BATCHES_ENV_VAR):
        limit_batches_from_env()


# ---------------------------------------------------------------------------------------------- DataLoaderSlice
def _loader(n: int = 10, batch_size: int = 2) -> DataLoader[tuple[Tensor, ...]]:
    return DataLoader(TensorDataset(torch.arange(n)), batch_size=batch_size)


def test_dataloader_slice_yields_the_first_batches_every_time() -> None:
    sliced = DataLoaderSlice(_loader(), 3)
    assert len(sliced) == 3
    for _ in range(2):
        assert [batch[0].tolist() for batch in sliced] == [[0, 1], [2, 3], [4, 5]]


def test_dataloader_slice_len_never_exceeds_the_loader_pa_reports_slice_size() -> None:
    sliced = DataLoaderSlice(_loader(n=4), 10)
    assert len(sliced) == 2 == len(list(sliced))
    assert len(DataLoaderSlice(_loader(), 0)) == 0 == len(list(DataLoaderSlice(_loader(), 0)))


class Counting(IterableDataset[int]):
    @override
    def __iter__(self) -> Iterator[int]:
        return iter(range(100))


def test_dataloader_slice_of_an_iterable_without_length() -> None:
    sliced = DataLoaderSlice(DataLoader(Counting(), batch_size=10), 3)
    assert len(sliced) == 3
    assert [int(b[0]) for b in sliced] == [0, 10, 20]
    with pytest.raises(ValueError, match="slice_size"):
        DataLoaderSlice(_loader(), -1)


# ---------------------------------------------------------------------------------------------- decorators
class Ranks:
    """Pretend to be process ``rank`` (local and global) and record every barrier, in order with calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, rank: int, local_rank: int | None = None) -> None:
        self.events: list[str] = []
        monkeypatch.setattr(utils, "process_index", lambda: rank)
        monkeypatch.setattr(utils, "local_process_index", lambda: rank if local_rank is None else local_rank)
        monkeypatch.setattr(utils, "wait_for_everyone", lambda: self.events.append("barrier"))

    def func(self, x: int, *, fail: bool = False) -> int:
        """Doubles ``x``."""
        self.events.append("call")
        if fail:
            raise RuntimeError("failed on this process")
        return 2 * x


def test_decorators_in_a_single_real_process() -> None:
    calls: list[int] = []

    def record(x: int) -> int:
        calls.append(x)
        return x + 1

    assert local_process_zero_only(record)(1) == 2
    assert world_process_zero_only(record)(2) == 3
    assert local_process_zero_first(record)(3) == 4
    assert calls == [1, 2, 3]
    assert local_process_zero_first(record).__name__ == "record"


@pytest.mark.parametrize("decorator", [local_process_zero_only, world_process_zero_only])
def test_zero_only_runs_on_process_zero_and_returns_none_elsewhere(
    monkeypatch: pytest.MonkeyPatch, decorator: Any
) -> None:
    zero = Ranks(monkeypatch, rank=0)
    assert decorator(zero.func)(3) == 6
    assert zero.events == ["call", "barrier"]
    other = Ranks(monkeypatch, rank=1)
    assert decorator(other.func)(3) is None
    assert other.events == ["barrier"]


def test_local_vs_world_process_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    second_machine = Ranks(monkeypatch, rank=2, local_rank=0)  # first process of the second machine
    assert local_process_zero_only(second_machine.func)(1) == 2
    assert world_process_zero_only(second_machine.func)(1) is None


@pytest.mark.parametrize("decorator", [local_process_zero_only, world_process_zero_only, local_process_zero_first])
def test_a_failure_on_process_zero_still_reaches_the_barrier_pa_hangs_the_others(
    monkeypatch: pytest.MonkeyPatch, decorator: Any
) -> None:
    zero = Ranks(monkeypatch, rank=0)
    with pytest.raises(RuntimeError, match="failed on this process"):
        decorator(zero.func)(1, fail=True)
    assert zero.events == ["call", "barrier"]


def test_local_process_zero_first_order_and_results(monkeypatch: pytest.MonkeyPatch) -> None:
    zero = Ranks(monkeypatch, rank=0)
    assert local_process_zero_first(zero.func)(5) == 10
    assert zero.events == ["call", "barrier"]
    other = Ranks(monkeypatch, rank=1)
    assert local_process_zero_first(other.func)(5) == 10
    assert other.events == ["barrier", "call"]  # only after process 0 finished
    assert local_process_zero_first(other.func).__doc__ == "Doubles ``x``."


# ---------------------------------------------------------------------------------------------- ModelEma
def weight(module: nn.Module, name: str = "0.weight") -> Tensor:
    return module.get_parameter(name)


def bn_model(seed: int = 0) -> nn.Sequential:
    manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_model_ema_copy_has_no_grad_is_in_eval_and_runs() -> None:
    model = bn_model()
    ema = ModelEma(model, decay=0.9)
    assert ema.decay == 0.9 and ema.module is not model
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert not ema.module.training
    x = torch.randn(5, 3)
    model.eval()
    assert torch.equal(ema(x), model(x))  # pa's ModelEma has no forward


def test_model_ema_update_math_and_buffers() -> None:
    model = bn_model()
    ema = ModelEma(model, decay=0.75)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    model.train()
    model(torch.randn(8, 3))  # changes running stats and num_batches_tracked
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    after = ema.module.state_dict()
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(after[name], 0.75 * before[name] + 0.25 * value)
        else:  # pa averages it as a float and truncates: 0.75 * 0 + 0.25 * 1 -> 0
            assert torch.equal(after[name], value), name
    assert after["1.num_batches_tracked"].item() == 1
    assert all(not p.requires_grad for p in ema.module.parameters())


def test_model_ema_set_copies_and_update_fn_can_be_overridden() -> None:
    model, other = bn_model(0), bn_model(1)
    ema = ModelEma(model, decay=0.5)
    ema.set(other)
    for name, value in other.state_dict().items():
        assert torch.equal(ema.module.state_dict()[name], value)

    class MaxEma(ModelEma):
        @override
        def update_fn(self, ema_model_weights: Tensor, updated_model_weights: Tensor) -> Tensor:
            return torch.maximum(ema_model_weights, updated_model_weights)

    max_ema = MaxEma(model)
    max_ema.update(other)
    torch.testing.assert_close(weight(max_ema.module), torch.maximum(weight(model), weight(other)))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 2, bias=False)
        self.b = nn.Linear(2, 2, bias=False)
        self.b.weight = self.a.weight


def test_model_ema_averages_a_tied_weight_once_pa_applies_decay_twice() -> None:
    model = Tied()
    ema = ModelEma(model, decay=0.5)
    start = weight(ema.module, "a.weight").detach().clone()
    with torch.no_grad():
        model.a.weight.add_(2.0)
    ema.update(model)
    torch.testing.assert_close(weight(ema.module, "a.weight"), start + 1.0)
    assert weight(ema.module, "b.weight") is weight(ema.module, "a.weight")


def test_model_ema_device_and_mismatch() -> None:
    model = bn_model()
    assert next(ModelEma(model, device="meta").module.parameters()).device.type == "meta"
    ema = ModelEma(model, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="does not match"):
        ema.update(nn.Sequential(nn.Linear(3, 4)))
    with pytest.raises(ValueError, match="decay"):
        ModelEma(model, decay=1.5)


@pytest.fixture
def one_process_group(tmp_path: Path) -> Iterator[None]:
    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.usefixtures("one_process_group")
def test_model_ema_with_a_ddp_wrapped_source() -> None:
    model = bn_model()
    ddp = nn.parallel.DistributedDataParallel(model)
    ema = ModelEma(ddp, decay=0.5)
    assert not isinstance(ema.module, nn.parallel.DistributedDataParallel)
    assert set(ema.module.state_dict()) == set(model.state_dict())  # no "module." prefix
    start = weight(ema.module).detach().clone()
    with torch.no_grad():
        weight(model).add_(4.0)
    ema.update(ddp)
    torch.testing.assert_close(weight(ema.module), start + 2.0)


def test_unwrap_model_looks_through_wrappers() -> None:
    model = bn_model()
    assert unwrap_model(model) is model
    assert unwrap_model(nn.DataParallel(model)) is model
    assert unwrap_model(torch.compile(nn.DataParallel(model))) is model  # type: ignore[arg-type]  # compile returns a Callable
    ema = ModelEma(nn.DataParallel(model), decay=0.0)
    with torch.no_grad():
        weight(model).add_(1.0)
    ema.update(nn.DataParallel(model))
    assert torch.equal(weight(ema.module), weight(model))


# ---------------------------------------------------------------------------------------------- worker_init_fn
class RandomDraws(Dataset[tuple[int, float, float, float]]):
    """Each item draws from torch, NumPy and ``random`` inside the worker, like a random augmentation."""

    def __len__(self) -> int:
        return 8

    @override
    def __getitem__(self, index: int) -> tuple[int, float, float, float]:
        info = get_worker_info()
        worker = info.id if info is not None else -1
        return worker, float(torch.rand(())), float(np.random.rand()), random.random()


def _draws(seed: int) -> list[tuple[int, float, float, float]]:
    loader = DataLoader(RandomDraws(), batch_size=None, num_workers=2, worker_init_fn=worker_init_fn,
                        generator=torch.Generator().manual_seed(seed))
    return [(int(w), float(t), float(n), float(r)) for w, t, n, r in loader]


def test_worker_init_fn_gives_reproducible_and_distinct_worker_streams() -> None:
    first, again, other_seed = _draws(0), _draws(0), _draws(1)
    assert first == again  # pa's worker_init_fn calls torch.seed(): torch draws differ between runs
    assert first != other_seed
    assert {w for w, *_ in first} == {0, 1}
    by_worker = {w: [d[1:] for d in first if d[0] == w] for w in (0, 1)}
    for source in range(3):  # torch, NumPy, random: the two workers draw different streams
        assert [d[source] for d in by_worker[0]] != [d[source] for d in by_worker[1]]


def test_worker_init_fn_seeds_numpy_and_random_from_torch() -> None:
    manual_seed(123)
    worker_init_fn(0)
    a = (float(np.random.rand()), random.random())
    manual_seed(123)
    worker_init_fn(5)  # the seed comes from torch's, not from the worker id
    assert (float(np.random.rand()), random.random()) == a
    manual_seed(124)
    worker_init_fn(0)
    assert (float(np.random.rand()), random.random()) != a
