"""Each condition under which pta leaves out Accelerate's per-batch ``send_to_device`` on the CPU.

A dataloader Accelerate prepared moves every batch to the device, even a batch of CPU tensors to the
CPU, where ``.to`` returns each tensor itself (9 µs of a 650 µs step in the overhead benchmark).
``prepared_batches`` lets Accelerate's own iteration run (sampler epochs, RNG synchronisation,
``end_of_dataloader``) with its ``device`` read as ``None`` only while it fetches, and moves every batch
that ``on_cpu`` cannot show is already in place as Accelerate would.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import accelerate.data_loader  # pyright: ignore[reportMissingTypeStubs]  # accelerate ships no type information
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from typing_extensions import override

from pta import DefaultTrainer
from pta._accelerate import AcceleratorAdapter, prepared_batches
from pta._data import on_cpu
from pta.utils import DataLoaderSlice
from tests._helpers import classification_data, linear_model

CPU = torch.device("cpu")


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The batches Accelerate's (or pta's) ``send_to_device`` is called with."""
    calls: list[object] = []
    original: Callable[..., Any] = accelerate.data_loader.send_to_device  # type: ignore[attr-defined]  # pyright: ignore[reportUnknownMemberType]  # untyped

    def counted(batch: object, *args: Any, **kwargs: Any) -> Any:
        calls.append(batch)
        return original(batch, *args, **kwargs)

    monkeypatch.setattr(accelerate.data_loader, "send_to_device", counted)
    monkeypatch.setattr("pta._accelerate.send_to_device", counted)
    return calls


def _prepared(loader: DataLoader[Any]) -> Any:
    _, _, prepared, _ = AcceleratorAdapter({}).prepare(linear_model(), None, loader, None)
    return prepared


def _loader(collate_fn: Callable[[list[Any]], Any] | None = None, dataset: Dataset[Any] | None = None) -> Any:
    data = dataset if dataset is not None else classification_data(n=10)
    return _prepared(DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3),
                                collate_fn=collate_fn))


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return bool(torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType, reportUnknownArgumentType]  # any batch
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))  # pyright: ignore[reportUnknownArgumentType]  # any batch
    return a == b


# ---------------------------------------------------------------------- what on_cpu accepts
@pytest.mark.parametrize("batch", [
    torch.ones(2), [torch.ones(2), torch.zeros(2)], (torch.ones(2),), {"x": torch.ones(2)}, [],
], ids=["tensor", "list", "tuple", "dict", "empty"])
def test_plain_containers_of_cpu_tensors_are_on_the_cpu(batch: object) -> None:
    assert on_cpu(batch)


class Pair(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor


class Tagged(torch.Tensor):
    pass


@pytest.mark.parametrize("batch", [
    torch.ones(2, device="meta"), [torch.ones(2, device="meta")], nn.Parameter(torch.ones(2)),
    [torch.ones(2).as_subclass(Tagged)], Pair(torch.ones(1), torch.ones(1)),
    OrderedDict[str, torch.Tensor](x=torch.ones(1)), [[torch.ones(1)]], {"x": {"y": torch.ones(1)}}, [torch.ones(1), 3], "text",
], ids=["other-device", "list-other-device", "parameter", "tensor-subclass", "namedtuple", "dict-subclass",
        "nested-list", "nested-dict", "non-tensor-item", "string"])
def test_anything_else_is_left_to_accelerate(batch: object) -> None:
    assert not on_cpu(batch)


# ---------------------------------------------------------------------- prepared_batches
def test_cpu_batches_skip_send_to_device_and_are_the_loaders_own(sends: list[object]) -> None:
    moved = list(_loader())  # Accelerate's iteration
    assert len(sends) == len(moved) == 3
    sends.clear()
    kept = list(prepared_batches(_loader()))
    assert sends == []
    assert all(map(_same, moved, kept))


def _bookkeeping(shard: Any, batches: Iterator[Any]) -> list[tuple[object, ...]]:
    state = shard.gradient_state
    seen = [(shard.end_of_dataloader, shard.remainder, state.end_of_dataloader, state.remainder, shard.iteration,
             shard.device, _same(batch, batch)) for batch in batches]
    return [*seen, (shard.iteration, state.in_dataloader, shard.device)]


def test_accelerates_bookkeeping_is_unchanged_over_epochs() -> None:
    reference, shard = _loader(), _loader()
    for _ in range(2):  # the second epoch's shuffle comes from Accelerate's set_epoch / generator
        expected, got = list(iter(reference)), list(prepared_batches(shard))
        assert all(map(_same, expected, got))
    assert _bookkeeping(reference, iter(reference)) == _bookkeeping(shard, prepared_batches(shard))
    assert reference.iteration == shard.iteration == 3


def test_the_loader_shows_its_device_whenever_the_consumer_runs() -> None:
    shard = _loader()
    for _ in prepared_batches(shard):
        assert shard.device == CPU
        break
    assert shard.device == CPU


class Failing(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self, data: TensorDataset) -> None:
        self.x, self.y = data.tensors

    def __len__(self) -> int:
        return len(self.x)

    @override
    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index == 7:
            raise KeyError("sample 7 is broken")
        return self.x[index], self.y[index]


def test_an_error_while_fetching_leaves_the_device_as_prepared() -> None:
    data = classification_data(n=10)
    shard = _prepared(DataLoader(Failing(data), batch_size=4))
    with pytest.raises(KeyError, match="sample 7"):
        list(prepared_batches(shard))
    assert shard.device == CPU


class Movable:
    """A batch with its own ``to``, which Accelerate calls."""

    def __init__(self, items: list[Any]) -> None:
        self.items, self.moved_to = items, list[object]()

    def to(self, device: torch.device, non_blocking: bool = False) -> Movable:
        self.moved_to.append(device)
        return self


def _collated(items: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.utils.data.default_collate(items)  # pyright: ignore[reportUnknownMemberType]  # torch leaves `batch` partly unannotated
    return x, y


def _as_pairs(items: list[Any]) -> Pair:
    return Pair(*_collated(items))


def _as_ordered_dict(items: list[Any]) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict[str, torch.Tensor](x=_collated(items)[0])


def _as_nested(items: list[Any]) -> tuple[dict[str, torch.Tensor], int]:
    return {"x": _collated(items)[0]}, 1


@pytest.mark.parametrize("collate", [_as_pairs, _as_ordered_dict, _as_nested],
                         ids=["namedtuple", "dict-subclass", "nested-with-int"])
def test_other_batches_are_moved_as_accelerate_moves_them(sends: list[object], collate: Callable[[list[Any]], Any]) -> None:
    moved = list(_loader(collate))
    sends.clear()
    got = list(prepared_batches(_loader(collate)))
    assert len(sends) == len(got) == 3
    assert all(map(_same, moved, got))


def test_a_batch_with_its_own_to_is_moved(sends: list[object]) -> None:
    got = list(prepared_batches(_loader(Movable)))
    assert len(sends) == 3
    assert all(batch.moved_to == [CPU] for batch in got)


def test_a_loader_without_device_placement_or_on_another_device_is_iterated_as_it_is() -> None:
    shard = _loader()
    shard.device = None  # DataLoaderConfiguration / device_placement=False
    assert prepared_batches(shard).gi_code is type(shard).__iter__.__code__  # type: ignore[attr-defined]  # a generator
    shard.device = torch.device("meta")  # stands for any accelerator: batches must really move there
    assert prepared_batches(shard).gi_code is type(shard).__iter__.__code__  # type: ignore[attr-defined]  # a generator


def test_loaders_accelerate_did_not_prepare_are_iterated_as_they_are(sends: list[object]) -> None:
    plain = DataLoader(classification_data(n=8), batch_size=4)
    assert type(prepared_batches(plain)) is type(iter(plain))
    sliced = DataLoaderSlice(_loader(), 2)
    assert len(list(prepared_batches(sliced))) == 2
    assert len(sends) == 2  # the slice iterates the prepared loader, which moves as always


# ---------------------------------------------------------------------- in a training run
def test_training_and_evaluation_on_the_cpu_move_no_batch(sends: list[object]) -> None:
    data = classification_data(n=32)
    model = linear_model(out=3)
    trainer = DefaultTrainer(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=())
    trainer.train(train_dataset=data, eval_dataset=data, num_epochs=2, per_device_batch_size=8)
    trainer.evaluate(data, per_device_batch_size=8)
    assert sends == []
