"""Mixin composition: the pinned MRO, required mixins, every hook chain reaching TrainerBase, the
detection of a broken ``super()`` chain, and the exact order of hooks and callback events
(checked against the ordered lists in docs/loop.md, so the document cannot drift from the loop)."""

from __future__ import annotations

import functools
import inspect
import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typing_extensions import override

import pta
from pta import (
    AMPMixin,
    DefaultTrainer,
    DevicePlacementMixin,
    DistributedEvalMixin,
    GradAccumMixin,
    SchedulerMixin,
    TrainerBase,
    TrainerCallback,
)
from pta.callbacks.base import EVENTS
from pta.protocols import TrainerLike
from tests._helpers import linear_model, params_of, regression_data

LOOP_DOC = Path(__file__).resolve().parent.parent / "docs" / "loop.md"

# DevicePlacementMixin last: AMPMixin and DistributedEvalMixin subclass it, so it must come after them.
MIXINS: tuple[type[TrainerBase[Any]], ...] = (
    AMPMixin, GradAccumMixin, DistributedEvalMixin, SchedulerMixin, DevicePlacementMixin,
)
NEEDS_DEVICE_PLACEMENT = (AMPMixin, DistributedEvalMixin)

# Every hook of TrainerBase the loop calls; each must be reached through whatever mixins override it.
BASE_HOOKS = (
    "accelerator_kwargs", "prepare_components", "configure_run", "training_run_start", "train_epoch_start",
    "eval_epoch_start", "training_run_end", "calculate_train_batch_loss", "calculate_eval_batch_loss",
    "backward_step", "before_optimizer_step", "optimizer_step", "scheduler_step", "optimizer_zero_grad",
    "forward_context", "train_step_context", "is_update_step", "scale_loss", "iterate_eval_batches",
    "reduce_epoch_loss", "optimizer_step_was_skipped", "train_epoch_end", "eval_epoch_end",
    "training_run_epoch_end",
)

# Public methods of a trainer that are entry points or services, not hooks the loop calls. Every
# other public method is a hook: the hook-order tests record them all, so a hook added to the loop
# shows up there and has to be added to docs/loop.md.
NOT_HOOKS = frozenset({
    "train", "evaluate", "predict", "print", "gather", "get_model", "save_checkpoint", "load_checkpoint",
    "save_training_state", "load_training_state", "save_training_state_in_background", "wait_for_save",
    "run_intermediate_evaluation", "run_evaluation_epoch",
})
# Hooks a plain train()/evaluate() does not call at the top level of the loop (docs/loop.md names each).
NOT_IN_A_PLAIN_RUN = frozenset({
    "create_scheduler", "get_default_train_dl_kwargs", "get_default_eval_dl_kwargs", "predict_step",
    "training_state_dict", "load_training_state_dict", "on_stop_training_error",
})


def _loop_hooks() -> tuple[str, ...]:
    return tuple(sorted(
        name for name in dir(DefaultTrainer)
        if not name.startswith("_") and name not in NOT_HOOKS and inspect.isfunction(getattr(DefaultTrainer, name))
    ))


LOOP_HOOKS = _loop_hooks()


def _sgd(model: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=0.05)


class _Noop(TrainerCallback):
    """A callback that listens to nothing (keeps the console quiet)."""


# ---------------------------------------------------------------------------------------------- MRO
def test_default_trainer_mro_is_pinned() -> None:
    assert [k.__name__ for k in DefaultTrainer.__mro__] == [
        "DefaultTrainer", "AMPMixin", "GradAccumMixin", "DistributedEvalMixin", "SchedulerMixin",
        "DevicePlacementMixin", "TrainerBase", "TrainerStep", "TrainerCheckpoints", "TrainerHooks", "Generic", "object",
    ]
    assert pta.Trainer is DefaultTrainer
    # the docstring that lists the MRO says the same
    doc = " ".join((DefaultTrainer.__doc__ or "").split())
    assert "MRO: " + ", ".join(k.__name__ for k in DefaultTrainer.__mro__) + "." in doc


@pytest.mark.parametrize("mixin", NEEDS_DEVICE_PLACEMENT, ids=lambda m: m.__name__)
def test_mixin_cannot_exist_without_its_provider(mixin: type[TrainerBase[Any]]) -> None:
    # The dependency is structural: every trainer with the mixin has DevicePlacementMixin ...
    assert issubclass(mixin, DevicePlacementMixin)
    trainer_cls = type("WithoutNamingIt", (mixin, TrainerBase), {})
    assert DevicePlacementMixin in trainer_cls.__mro__
    # ... and listing the provider before the mixin that needs it is refused when the class is created.
    with pytest.raises(TypeError, match="consistent method resolution"):
        type("WrongOrder", (DevicePlacementMixin, mixin, TrainerBase), {})


# ------------------------------------------------------------------------- every subset of mixins
def _subset_id(subset: tuple[type[TrainerBase[Any]], ...]) -> str:
    return "+".join(m.__name__.removesuffix("Mixin") for m in subset) or "TrainerBase"


SUBSETS = [
    subset for n in range(len(MIXINS) + 1) for subset in itertools.combinations(MIXINS, n)
]
assert len(SUBSETS) == 32


def _instrument_base(monkeypatch: pytest.MonkeyPatch, reached: set[str]) -> None:
    for name in BASE_HOOKS:
        original: Callable[..., Any] = getattr(TrainerBase, name)

        def make(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(original)
            def wrapper(self: TrainerBase[Any], *args: Any, **kwargs: Any) -> Any:
                reached.add(name)
                return original(self, *args, **kwargs)

            return wrapper

        monkeypatch.setattr(TrainerBase, name, make(name, original))


@pytest.mark.parametrize("subset", SUBSETS, ids=_subset_id)
def test_every_composition_reaches_every_base_hook(
    subset: tuple[type[TrainerBase[Any]], ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    reached: set[str] = set()
    _instrument_base(monkeypatch, reached)
    # Any: the subset is only known at run time (the typing tests check what each composition accepts)
    trainer_cls: Any = type(f"Probe_{_subset_id(subset)}", (*subset, TrainerBase), {})
    model = linear_model()
    kwargs: dict[str, Any] = {"mixed_precision": "bf16"} if AMPMixin in subset else {}

    trainer = trainer_cls(model, nn.MSELoss(), _sgd(model), callbacks=[_Noop()], **kwargs)
    before = params_of(model)
    trainer.train(
        regression_data(6), num_epochs=1, eval_dataset=regression_data(4), per_device_batch_size=2,
        gradient_accumulation_steps=2 if GradAccumMixin in subset else 1,
        create_scheduler_fn=(
            functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1) if SchedulerMixin in subset else None
        ),
    )
    assert trainer.run_history.get_metric_names() >= {"train_loss_epoch", "eval_loss_epoch"}
    assert not torch.equal(before[0], params_of(trainer.model)[0]), "the run did not train"
    assert sorted(set(BASE_HOOKS) - reached) == [], "these TrainerBase hooks were never reached"


# ----------------------------------------------------------------------------- broken hook chains
class ForgetfulConfigureMixin(TrainerBase[Any]):
    """A mixin-like class whose ``configure_run`` forgets ``super()``."""

    @override
    def configure_run(self) -> None:
        pass


class ForgetfulEpochTrainer(DefaultTrainer[Any]):
    """A user subclass whose ``train_epoch_start`` does not call ``super()``."""

    @override
    def train_epoch_start(self) -> None:
        pass


def test_user_override_without_super_raises_hook_chain_error() -> None:
    model = linear_model()
    trainer = ForgetfulEpochTrainer(model, nn.MSELoss(), _sgd(model), callbacks=[_Noop()])
    before = params_of(model)
    with pytest.raises(pta.HookChainError, match=r"train_epoch_start") as info:
        trainer.train(regression_data(8), 1, per_device_batch_size=4)
    assert "ForgetfulEpochTrainer" in str(info.value)
    assert all(torch.equal(a, b) for a, b in zip(before, params_of(trainer.get_model()), strict=True))


def test_mixin_override_without_super_fails_when_composed() -> None:
    # Alone, ForgetfulConfigureMixin replaces TrainerBase's default: allowed. Above SchedulerMixin, whose
    # configure_run creates the scheduler, it would silently drop it: the composed class is refused.
    with pytest.raises(pta.HookChainError, match=r"configure_run") as info:
        type("Composed", (ForgetfulConfigureMixin, DevicePlacementMixin, SchedulerMixin, TrainerBase), {})
    assert "ForgetfulConfigureMixin" in str(info.value) and "SchedulerMixin" in str(info.value)


# (hook, entry point) for every cooperative hook whose chain the loop checks
COOPERATIVE = [
    ("accelerator_kwargs", "init"), ("prepare_components", "train"), ("configure_run", "train"),
    ("training_run_start", "train"), ("train_epoch_start", "train"), ("eval_epoch_start", "train"),
    ("training_run_end", "train"), ("prepare_components", "evaluate"), ("configure_run", "evaluate"),
    ("eval_epoch_start", "evaluate"), ("evaluation_run_start", "evaluate"), ("evaluation_run_end", "evaluate"),
]


@pytest.mark.parametrize(("hook", "entry"), COOPERATIVE, ids=[f"{h}-{e}" for h, e in COOPERATIVE])
def test_every_cooperative_hook_chain_is_checked(hook: str, entry: str) -> None:
    def forgetful(self: TrainerBase[Any]) -> Any:
        return {} if hook == "accelerator_kwargs" else None

    model = linear_model()
    with pytest.raises(pta.HookChainError, match=hook):
        # hooks that a mixin overrides fail when the class is created, TrainerBase's own ones when called
        trainer_cls: type[TrainerBase[Any]] = type("Forgetful", (DefaultTrainer,), {hook: forgetful})
        trainer = trainer_cls(model, nn.MSELoss(), _sgd(model), callbacks=[_Noop()])
        if entry == "train":
            trainer.train(regression_data(8), 1, eval_dataset=regression_data(4), per_device_batch_size=4)
        elif entry == "evaluate":
            trainer.evaluate(regression_data(4), per_device_batch_size=4)


# ------------------------------------------------------------------- arguments that need a mixin
def test_gradient_accumulation_needs_grad_accum_mixin() -> None:
    trainer_cls = type("NoAccum", (DevicePlacementMixin, SchedulerMixin, TrainerBase), {})
    model = linear_model()
    trainer = trainer_cls(model, nn.MSELoss(), _sgd(model), callbacks=[_Noop()])
    with pytest.raises(pta.ConfigurationError, match="GradAccumMixin") as info:
        trainer.train(regression_data(8), 1, gradient_accumulation_steps=2)  # pyright: ignore[reportCallIssue, reportArgumentType]  # deliberate misuse: the runtime check under test
    assert "gradient_accumulation_steps" in str(info.value)


def test_scheduler_factory_needs_scheduler_mixin() -> None:
    trainer_cls = type("NoScheduler", (DevicePlacementMixin, GradAccumMixin, TrainerBase), {})
    model = linear_model()
    trainer = trainer_cls(model, nn.MSELoss(), _sgd(model), callbacks=[_Noop()])
    factory = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1)
    with pytest.raises(pta.ConfigurationError, match="SchedulerMixin") as info:
        trainer.train(regression_data(8), 1, create_scheduler_fn=factory)  # pyright: ignore[reportCallIssue, reportArgumentType]  # deliberate misuse: the runtime check under test
    assert "create_scheduler_fn" in str(info.value)


def test_mixed_precision_needs_amp_mixin() -> None:
    trainer_cls = type("NoAMP", (DevicePlacementMixin, GradAccumMixin, TrainerBase), {})
    model = linear_model()
    with pytest.raises(pta.ConfigurationError, match="AMPMixin") as info:
        trainer_cls(model, nn.MSELoss(), _sgd(model), callbacks=[_Noop()], mixed_precision="bf16")  # pyright: ignore[reportArgumentType]  # deliberate misuse: the runtime check under test
    # names the argument, the missing mixin and the user's class, so the fix is in the message
    assert str(info.value).startswith("mixed_precision needs AMPMixin, which NoAMP does not include")
    assert "add AMPMixin to the bases of NoAMP" in str(info.value)


# ------------------------------------------------------------------------------------ hook order
def _recording_callback_class(log: list[str]) -> type[TrainerCallback]:
    def make(event: str) -> Callable[..., None]:
        def record(self: TrainerCallback, trainer: object, /, **kwargs: Any) -> None:
            log.append(event)

        return record

    return type("RecordEverything", (TrainerCallback,), {event: make(event) for event in EVENTS})


def _recording_trainer_class(log: list[str]) -> type[DefaultTrainer[Any]]:
    depth = [0]

    def make(name: str) -> Callable[..., Any]:
        original: Callable[..., Any] = getattr(DefaultTrainer, name)

        @functools.wraps(original)
        def record(self: DefaultTrainer[Any], *args: Any, **kwargs: Any) -> Any:
            if depth[0] == 0:
                log.append(name)
            depth[0] += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                depth[0] -= 1

        return record

    return type("RecordingTrainer", (DefaultTrainer,), {name: make(name) for name in LOOP_HOOKS})


def _documented_order(section: str) -> list[str]:
    """The ``text`` block after ``<!-- hook-order: section -->`` in docs/loop.md, one name per line."""
    text = LOOP_DOC.read_text()
    match = re.search(rf"<!-- hook-order: {section} -->\s*```text\n(.*?)```", text, re.DOTALL)
    assert match is not None, f"docs/loop.md has no hook-order block for {section!r}"
    names = [line.split("#", 1)[0].strip() for line in match[1].splitlines()]
    return [name for name in names if name]


def _repeat(sequence: list[str], first: str, last: str, times: int) -> list[str]:
    """Repeat the (single) segment from ``first`` to ``last`` inclusive ``times`` times."""
    start, stop = sequence.index(first), sequence.index(last) + 1
    assert sequence.count(first) == 1 and start < stop
    return sequence[:start] + sequence[start:stop] * times + sequence[stop:]


def _expected_train_order(epochs: int, train_batches: int, eval_batches: int) -> list[str]:
    order = _documented_order("train")
    order = _repeat(order, "on_train_step_start", "on_train_step_end", train_batches)
    order = _repeat(order, "on_eval_step_start", "on_eval_step_end", eval_batches)
    return _repeat(order, "train_epoch_start", "on_training_run_epoch_end", epochs)


@pytest.fixture
def recorded() -> tuple[list[str], DefaultTrainer[Any]]:
    log: list[str] = []
    model = linear_model()
    trainer = _recording_trainer_class(log)(model, nn.MSELoss(), _sgd(model), callbacks=[_recording_callback_class(log)])
    return log, trainer


def test_documented_names_are_real_hooks_and_events() -> None:
    known = set(LOOP_HOOKS) | set(EVENTS)
    for section in ("init", "train", "evaluate"):
        unknown = [name for name in _documented_order(section) if name not in known]
        assert unknown == [], f"docs/loop.md ({section}) lists unknown names"


def test_construction_order_matches_docs(recorded: tuple[list[str], DefaultTrainer[Any]]) -> None:
    log, _trainer = recorded
    assert log == _documented_order("init")


def test_train_order_matches_docs(recorded: tuple[list[str], DefaultTrainer[Any]]) -> None:
    log, trainer = recorded
    log.clear()
    trainer.train(regression_data(4), num_epochs=2, eval_dataset=regression_data(2), per_device_batch_size=2)
    assert log == _expected_train_order(epochs=2, train_batches=2, eval_batches=1)


def test_train_order_for_the_documented_run(recorded: tuple[list[str], DefaultTrainer[Any]]) -> None:
    log, trainer = recorded
    log.clear()
    trainer.train(regression_data(2), num_epochs=1, eval_dataset=regression_data(2), per_device_batch_size=2)
    assert log == _documented_order("train")


def test_evaluate_order_matches_docs(recorded: tuple[list[str], DefaultTrainer[Any]]) -> None:
    log, trainer = recorded
    log.clear()
    trainer.evaluate(regression_data(6), per_device_batch_size=2)
    assert log == _repeat(_documented_order("evaluate"), "on_eval_step_start", "on_eval_step_end", 3)


def test_every_event_and_hook_is_documented() -> None:
    documented = set(_documented_order("init")) | set(_documented_order("train")) | set(_documented_order("evaluate"))
    assert (set(LOOP_HOOKS) | set(EVENTS)) - documented == NOT_IN_A_PLAIN_RUN
    text = LOOP_DOC.read_text()
    for name in NOT_IN_A_PLAIN_RUN:
        assert f"`{name}`" in text, f"docs/loop.md does not mention {name}"


def test_stop_training_error_order(recorded: tuple[list[str], DefaultTrainer[Any]]) -> None:
    log, trainer = recorded

    class StopAfterFirstStep(TrainerCallback):
        @override
        def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
            raise pta.StopTrainingError("enough")

    trainer.callback_handler.add_callback(StopAfterFirstStep())
    log.clear()
    trainer.train(regression_data(4), num_epochs=3, eval_dataset=regression_data(2), per_device_batch_size=2)
    tail = log[log.index("on_train_step_end"):]
    assert tail == ["on_train_step_end", "on_stop_training_error", "training_run_end", "on_training_run_end"]

