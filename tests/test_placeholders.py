"""Placeholders resolve to the run's real numbers: ``TOTAL_NUM_UPDATE_STEPS`` with ``max_num_train_steps``,
subtraction, and partials that really are nested."""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.optim.lr_scheduler import OneCycleLR

from pta import TrainerPlaceholderValues
from pta.placeholders import replace_trainer_placeholder_values
from tests._helpers import regression_data
from tests.test_scheduler import make_trainer, recorded, recording_factory, scheduler_of

P = TrainerPlaceholderValues


# 24 samples in batches of 4: 6 updates per epoch (3 with accumulation 2).
@pytest.mark.parametrize(("epochs", "accumulation", "max_steps", "total"), [
    (5, 1, 14, 14),     # the limit ends the run in epoch 3: 14 updates, not 5 * 6 (nor 3 * 6)
    (5, 2, 7, 7),       # updates, not batches: 7 updates of 2 batches
    (2, 1, 15, 15),     # as in pytorch-accelerated, the limit sets the epochs (here 3) when it is larger
    (2, 1, None, 12),
    (3, 2, None, 9),
])
def test_total_num_update_steps_is_the_number_of_updates_the_run_makes(
        epochs: int, accumulation: int, max_steps: int | None, total: int) -> None:
    trainer, events = make_trainer()
    trainer.train(regression_data(n=24), epochs, per_device_batch_size=4, gradient_accumulation_steps=accumulation,
                  max_num_train_steps=max_steps,
                  create_scheduler_fn=recording_factory(events, total=P.TOTAL_NUM_UPDATE_STEPS))
    assert scheduler_of(trainer).kwargs == {"total": total}
    assert events.count("optimizer") == events.count("scheduler") == total


def test_a_one_cycle_schedule_sized_by_total_num_update_steps_ends_at_the_last_update() -> None:
    trainer, events = make_trainer()
    max_lr = 0.1
    trainer.train(regression_data(n=24), 5, per_device_batch_size=4, max_num_train_steps=14,
                  create_scheduler_fn=functools.partial(OneCycleLR, max_lr=max_lr,
                                                        total_steps=P.TOTAL_NUM_UPDATE_STEPS))
    assert isinstance(trainer.scheduler, OneCycleLR) and trainer.scheduler.total_steps == 14
    # the 14th (last) update used OneCycleLR's final value: initial lr / 1e4 with initial = max_lr / 25
    assert len(events.lrs) == 14
    assert events.lrs[-1] == pytest.approx(max_lr / 25.0 / 1e4, rel=1e-3)


def _resolved(value: Any, **config: int) -> Any:
    trainer: Any = SimpleNamespace(run_config=SimpleNamespace(**config))
    return replace_trainer_placeholder_values(trainer, functools.partial(dict, value=value))()["value"]


@pytest.mark.parametrize(("expression", "expected"), [
    (lambda: P.NUM_EPOCHS - 1, 4),
    (lambda: 10 - P.NUM_EPOCHS, 5),
    (lambda: P.NUM_EPOCHS - P.NUM_UPDATE_STEPS_PER_EPOCH, 2),
    (lambda: P.NUM_EPOCHS * P.NUM_UPDATE_STEPS_PER_EPOCH - 1, 14),
    (lambda: 2 * P.NUM_EPOCHS - (P.NUM_UPDATE_STEPS_PER_EPOCH + 1), 6),
    (lambda: (P.NUM_EPOCHS + 1) - 2 * P.NUM_UPDATE_STEPS_PER_EPOCH, 0),
])
def test_subtraction_resolves(expression: Any, expected: int) -> None:
    assert _resolved(expression(), num_epochs=5, num_update_steps_per_epoch=3,
                     num_local_update_steps_per_epoch=3) == expected


@pytest.mark.parametrize("expression", [
    lambda: P.NUM_EPOCHS // 2, lambda: 10 // P.NUM_EPOCHS, lambda: P.NUM_EPOCHS / 2, lambda: P.NUM_EPOCHS % 2,
    lambda: -P.NUM_EPOCHS, lambda: P.NUM_EPOCHS ** 2, lambda: (P.NUM_EPOCHS - 1) // 2, lambda: -(P.NUM_EPOCHS + 1),
    lambda: P.NUM_EPOCHS * 1.5, lambda: P.NUM_EPOCHS - 0.5, lambda: P.NUM_EPOCHS + True,
    lambda: P.NUM_EPOCHS - True, lambda: 1 - (P.NUM_EPOCHS * 2) - False,
])
def test_other_arithmetic_is_refused(expression: Any) -> None:
    with pytest.raises(TypeError, match=r"^placeholders (support only \+, - and \* with|combine only with) ints and"):
        expression()


def test_placeholders_in_a_partial_that_python_does_not_flatten() -> None:
    # partial(partial(f, ...), ...) is flattened into one partial by CPython, unless the inner one carries
    # attributes (as a factory with a name or a registry tag does): only then is the nesting real.
    inner = functools.partial(recorded, epochs=P.NUM_EPOCHS)
    inner.tag = "cosine"  # type: ignore[attr-defined]  # partial objects take attributes
    outer = functools.partial(inner, steps=P.NUM_UPDATE_STEPS_PER_EPOCH + 2)
    assert isinstance(outer.func, functools.partial)
    trainer, _ = make_trainer()
    trainer.train(regression_data(n=24), 2, per_device_batch_size=4, gradient_accumulation_steps=2,
                  create_scheduler_fn=outer)
    assert scheduler_of(trainer).kwargs == {"epochs": 2, "steps": 5}


def test_placeholders_resolve_at_every_level_of_nesting() -> None:
    level1: functools.partial[dict[str, int]] = functools.partial(dict, a=P.NUM_EPOCHS)
    level1.tag = 1  # type: ignore[attr-defined]  # keeps CPython from flattening
    level2 = functools.partial(level1, b=P.NUM_EPOCHS * 2)
    level2.tag = 2  # type: ignore[attr-defined]  # the same, one level up
    level3 = functools.partial(level2, c=P.NUM_EPOCHS + 1)
    # isinstance narrows to partial[Unknown], whose .func pyright strict calls partially unknown
    assert isinstance(level3.func, functools.partial) and isinstance(level3.func.func, functools.partial)  # pyright: ignore[reportUnknownMemberType]  # partial.func is untyped
    trainer: Any = SimpleNamespace(run_config=SimpleNamespace(num_epochs=3))
    assert replace_trainer_placeholder_values(trainer, level3)() == {"a": 3, "b": 6, "c": 4}


def test_a_plain_factory_is_returned_unchanged() -> None:
    def factory(optimizer: torch.optim.Optimizer) -> Any:
        return None

    trainer: Any = SimpleNamespace(run_config=SimpleNamespace(num_epochs=3))
    assert replace_trainer_placeholder_values(trainer, factory) is factory
