"""Each condition of the direct optimizer/backward path: pta calls Accelerate's wrappers whenever they do
more than call through (DeepSpeed, Megatron-LM, XLA, a loss scaler, accumulation in Accelerate, LOMO).

The distributed types cannot be started on a CPU, so the adapter is asked after ``prepare`` with the
type patched in: the decision is a pure function of the accelerator's state.
"""

from __future__ import annotations

from typing import cast

import pytest
import torch
from accelerate.utils.dataclasses import DistributedType  # pyright: ignore[reportMissingTypeStubs]  # accelerate ships no type information
from typing_extensions import override

from pta._accelerate import AcceleratorAdapter
from tests._helpers import direct_optimizer, linear_model


def _prepared(optimizer_class: type[torch.optim.SGD] = torch.optim.SGD
              ) -> tuple[AcceleratorAdapter, torch.optim.Optimizer]:
    adapter = AcceleratorAdapter({})
    model = linear_model()
    _, optimizer, _, _ = adapter.prepare(model, optimizer_class(model.parameters(), lr=0.1), None, None)
    assert optimizer is not None
    return adapter, optimizer


def _as(monkeypatch: pytest.MonkeyPatch, adapter: AcceleratorAdapter, name: str) -> None:
    """Makes the adapter's accelerator report the distributed type ``name`` (a ``DistributedType`` member)."""
    distributed_type = DistributedType[name]

    def patched(self: object) -> DistributedType:
        return distributed_type

    accelerator_class = cast("type[object]", type(adapter.accelerator))  # accelerate is untyped
    monkeypatch.setattr(accelerator_class, "distributed_type", property(patched))


@pytest.mark.parametrize("name", ["DEEPSPEED", "MEGATRON_LM", "XLA"])
def test_engines_that_own_backward_get_the_wrappers(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    adapter, optimizer = _prepared()
    _as(monkeypatch, adapter, name)
    assert not adapter._plain_autograd()
    adapter._decide_direct_calls(optimizer)  # as prepare() decides
    assert adapter.direct_update is None
    assert direct_optimizer(adapter, optimizer) is None


@pytest.mark.parametrize("name", ["NO", "MULTI_CPU", "MULTI_GPU", "FSDP"])
def test_plain_data_parallel_types_call_through(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The control: the patch does reach the decision, and ordinary types keep the direct path."""
    adapter, _ = _prepared()
    _as(monkeypatch, adapter, name)
    assert adapter._plain_autograd()


def test_a_lomo_optimizer_flag_gets_the_wrappers() -> None:
    adapter, _ = _prepared()
    assert adapter._plain_autograd()
    adapter.accelerator.has_lomo_optimizer = True
    assert not adapter._plain_autograd()


def test_accumulation_inside_accelerate_gets_the_wrappers() -> None:
    adapter, _ = _prepared()
    assert adapter._plain_autograd()
    adapter.accelerator.gradient_accumulation_steps = 2
    assert not adapter._plain_autograd()


class LomoLike(torch.optim.SGD):
    """An optimizer from the ``lomo_optim`` package (its step does the backward itself)."""


LomoLike.__module__ = "lomo_optim.lomo"


class PlainSubclass(torch.optim.SGD):
    pass


def test_a_lomo_optimizer_is_not_called_directly() -> None:
    adapter, optimizer = _prepared(LomoLike)
    assert adapter._direct_backward  # nothing else stands in the way
    assert direct_optimizer(adapter, optimizer) is None


def test_another_optimizer_subclass_is_called_directly() -> None:
    adapter, optimizer = _prepared(PlainSubclass)
    assert isinstance(direct_optimizer(adapter, optimizer), PlainSubclass)


class NoSetToNone(torch.optim.SGD):
    """An optimizer whose ``zero_grad`` takes no ``set_to_none`` (AcceleratedOptimizer then calls it bare)."""

    @override
    def zero_grad(self) -> None:  # type: ignore[override]  # the older signature under test
        super().zero_grad()


def test_a_zero_grad_without_set_to_none_gets_the_wrapper() -> None:
    adapter, optimizer = _prepared(NoSetToNone)
    inner: torch.optim.Optimizer = getattr(optimizer, "optimizer")  # AcceleratedOptimizer's
    calls: list[str] = []
    setattr(optimizer, "zero_grad", lambda: calls.append("wrapper"))  # recorders: nothing is zeroed or stepped
    setattr(inner, "step", lambda: calls.append("inner"))
    adapter.optimizer_step(optimizer)
    adapter.zero_grad(optimizer)
    assert calls == ["inner", "wrapper"]  # the step still goes straight through
    calls.clear()
    adapter.update(torch.zeros((), requires_grad=True), optimizer)  # a default step: the same two calls
    assert calls == ["inner", "wrapper"]
