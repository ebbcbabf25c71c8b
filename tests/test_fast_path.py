"""pta calls through Accelerate's optimizer/backward wrappers only where they would only call through."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from typing_extensions import override

from pta import DefaultTrainer
from pta._accelerate import AcceleratorAdapter

from ._helpers import direct_optimizer, linear_model, params_of, regression_data
from .test_fast_path_conditions import NoSetToNone


def _prepared(**options: Any) -> tuple[AcceleratorAdapter, torch.optim.Optimizer]:
    adapter = AcceleratorAdapter(options)  # type: ignore[arg-type]  # test options
    model = linear_model()
    _, optimizer, _, _ = adapter.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1), None, None)
    assert optimizer is not None
    return adapter, optimizer


def test_plain_fp32_single_process_calls_through() -> None:
    adapter, optimizer = _prepared()
    assert adapter._direct_backward
    assert direct_optimizer(adapter, optimizer) is optimizer.optimizer  # type: ignore[attr-defined]  # AcceleratedOptimizer


def test_no_shortcut_with_a_loss_scaler() -> None:
    adapter = AcceleratorAdapter({})
    adapter.accelerator.scaler = torch.amp.GradScaler("cpu")
    model = linear_model()
    _, optimizer, _, _ = adapter.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1), None, None)
    assert optimizer is not None
    assert not adapter._direct_backward and direct_optimizer(adapter, optimizer) is None


def test_no_shortcut_while_accelerate_accumulates() -> None:
    adapter, optimizer = _prepared()
    adapter.accelerator.gradient_state._set_sync_gradients(False)
    try:
        assert direct_optimizer(adapter, optimizer) is None
    finally:
        adapter.accelerator.gradient_state._set_sync_gradients(True)


def test_no_shortcut_for_an_unwrapped_optimizer() -> None:
    adapter = AcceleratorAdapter({})
    adapter._direct_backward = True
    assert direct_optimizer(adapter, torch.optim.SGD(linear_model().parameters(), lr=0.1)) is None


class Wrapped(DefaultTrainer):
    """Forces every call through Accelerate's wrappers."""

    @override
    def _create_accelerator(self) -> AcceleratorAdapter:
        adapter = super()._create_accelerator()
        setattr(adapter, "_plain_autograd", lambda: False)  # prepare() then decides as with a loss scaler
        return adapter


@pytest.mark.parametrize("accumulation", [1, 3])
def test_shortcut_and_wrappers_give_identical_weights(accumulation: int) -> None:
    def run(trainer_class: type[DefaultTrainer]) -> list[torch.Tensor]:
        model = linear_model()
        trainer = trainer_class(model, nn.MSELoss(), torch.optim.AdamW(model.parameters(), lr=0.01), callbacks=())
        trainer.train(regression_data(n=40), 2, per_device_batch_size=4, gradient_accumulation_steps=accumulation,
                      gradient_clip_norm=1.0)
        return params_of(trainer.get_model())

    for fast, wrapped in zip(run(DefaultTrainer), run(Wrapped), strict=True):
        assert torch.equal(fast, wrapped)


def test_facts_read_once_match_accelerate() -> None:
    adapter = AcceleratorAdapter({"mixed_precision": "bf16"})
    assert adapter.num_processes == adapter.accelerator.num_processes == 1
    assert adapter.mixed_precision == adapter.accelerator.mixed_precision == "bf16"
    assert adapter.gradient_state is adapter.accelerator.gradient_state  # shared state: sees later changes


def _another_prepared_optimizer(trainer: DefaultTrainer) -> None:
    _, trainer.optimizer = _prepared()


def _accelerate_accumulating(trainer: DefaultTrainer) -> None:
    trainer._accelerator.gradient_state._set_sync_gradients(False)


CONDITIONS: dict[str, tuple[type[torch.optim.SGD], Callable[[DefaultTrainer], None]]] = {
    "direct": (torch.optim.SGD, lambda trainer: None),
    "zero_grad without set_to_none": (NoSetToNone, lambda trainer: None),
    "another prepared optimizer": (torch.optim.SGD, _another_prepared_optimizer),
    "Accelerate accumulating": (torch.optim.SGD, _accelerate_accumulating),
}


@pytest.mark.parametrize("condition", CONDITIONS)
def test_a_default_step_calls_the_inner_optimizer_exactly_where_the_adapter_would(
        condition: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``_default_update`` makes ``AcceleratorAdapter.update``'s calls itself only under ``direct_update``."""
    optimizer_class, change = CONDITIONS[condition]
    model = linear_model()
    trainer = DefaultTrainer(model, nn.MSELoss(), optimizer_class(model.parameters(), lr=0.1), callbacks=())
    trainer.train(regression_data(n=8), 1, per_device_batch_size=4)
    change(trainer)
    adapter, inner = trainer._accelerator, getattr(trainer.optimizer, "optimizer")
    calls: list[str] = []

    def update(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        calls.append("adapter")

    monkeypatch.setattr(adapter, "update", update)
    monkeypatch.setattr(inner, "step", lambda: calls.append("inner step"))
    try:
        output = trainer._default_update([torch.ones(4, 4), torch.zeros(4, 1)])
    finally:
        adapter.gradient_state._set_sync_gradients(True)
    assert set(output) == {"loss", "model_outputs", "batch_size"} and output.get("batch_size") == 4
    assert calls == (["inner step"] if condition == "direct" else ["adapter"])
    if condition == "direct":
        assert getattr(trainer.optimizer, "_opt_called")  # what a scheduler's wrapper of step() would record


def test_the_shortcut_is_only_for_the_optimizer_it_was_decided_for() -> None:
    adapter, optimizer = _prepared()
    model = linear_model()
    _, other, _, _ = AcceleratorAdapter({}).prepare(model, torch.optim.SGD(model.parameters(), lr=0.1), None, None)
    assert other is not None and type(other) is type(optimizer)
    assert direct_optimizer(adapter, other) is None  # prepared elsewhere: through its wrapper


def test_no_skipped_step_is_reported_without_a_scaler_and_accelerate_agrees() -> None:
    adapter, optimizer = _prepared()
    adapter.optimizer_step(optimizer)
    assert adapter.optimizer_step_was_skipped is False
    assert adapter.accelerator.optimizer_step_was_skipped is False


def test_skipped_steps_are_asked_of_accelerate_with_a_scaler() -> None:
    adapter = AcceleratorAdapter({})
    adapter.accelerator.scaler = torch.amp.GradScaler("cpu")
    model = linear_model()
    _, optimizer, _, _ = adapter.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1), None, None)
    assert optimizer is not None and not adapter.optimizer_step_was_skipped
    optimizer._is_overflow = True  # type: ignore[attr-defined]  # what AcceleratedOptimizer.step sets on overflow
    assert adapter.optimizer_step_was_skipped


# ---------------------------------------------------------------------------------- skipping batches on resume
GENERATOR = torch.Generator()


def _prepared_loader(n: int, batch: int, shuffle: bool, drop_last: bool) -> torch.utils.data.DataLoader[Any]:
    adapter = AcceleratorAdapter({})
    loader = torch.utils.data.DataLoader(regression_data(n=n), batch_size=batch, shuffle=shuffle, drop_last=drop_last,
                                         generator=GENERATOR)
    _, _, prepared, _ = adapter.prepare(linear_model(), None, loader, None)
    assert prepared is not None
    return prepared


def _epoch(loader: torch.utils.data.DataLoader[Any]) -> tuple[list[torch.Tensor], torch.Tensor]:
    GENERATOR.manual_seed(7)
    batches = [x for x, _ in loader]
    return batches, GENERATOR.get_state()


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("skip", [0, 1, 5, 9, 10])  # 10 batches of 4 from 38 samples (9 without the last)
def test_fast_skip_yields_what_accelerates_skip_yields(shuffle: bool, drop_last: bool, skip: int) -> None:
    from accelerate.data_loader import skip_first_batches as _accelerate_skip  # pyright: ignore[reportMissingTypeStubs, reportUnknownVariableType]  # untyped

    from pta._accelerate import skip_first_batches

    accelerate_skip: Any = _accelerate_skip  # pyright: ignore[reportUnknownVariableType]  # untyped
    skip = min(skip, 9 if drop_last else 10)  # a resume never skips more batches than the epoch has

    fast, fast_rng = _epoch(skip_first_batches(_prepared_loader(38, 4, shuffle, drop_last), skip))
    slow_loader = accelerate_skip(_prepared_loader(38, 4, shuffle, drop_last), skip)
    slow, slow_rng = _epoch(slow_loader)
    assert len(fast) == len(slow) == len(slow_loader)
    assert all(torch.equal(a, b) for a, b in zip(fast, slow, strict=True))
    assert torch.equal(fast_rng, slow_rng)  # the sampler's generator advanced identically


def test_fast_skip_builds_no_skipped_batch() -> None:
    from accelerate.data_loader import SkipBatchSampler  # pyright: ignore[reportMissingTypeStubs]  # accelerate ships no type information

    from pta._accelerate import skip_first_batches
    from pta._data import SkipSampler

    skipped = skip_first_batches(_prepared_loader(400, 4, True, False), 90)
    skipper: Any = skipped.batch_sampler  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]  # accelerate is untyped
    assert isinstance(skipper, SkipBatchSampler) and skipper.skip_batches == 0  # no per-batch loop over 90 batches
    assert isinstance(skipper.batch_sampler.sampler, SkipSampler)  # pyright: ignore[reportUnknownMemberType]  # untyped attributes
    assert len(skipped) == 10


def test_other_batch_samplers_keep_accelerates_skip() -> None:
    from accelerate.data_loader import SkipBatchSampler  # pyright: ignore[reportMissingTypeStubs]  # accelerate ships no type information

    from pta._accelerate import skip_first_batches

    class Custom(torch.utils.data.BatchSampler):
        """A subclass may group indices its own way: not the fast path's business."""

    sampler = Custom(torch.utils.data.SequentialSampler(range(20)), batch_size=4, drop_last=False)
    skipped = skip_first_batches(torch.utils.data.DataLoader(regression_data(n=20), batch_sampler=sampler), 2)
    skipper: Any = skipped.batch_sampler  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]  # accelerate is untyped
    assert isinstance(skipper, SkipBatchSampler) and skipper.skip_batches == 2
    assert [x.shape[0] for x, _ in skipped] == [4, 4, 4]
