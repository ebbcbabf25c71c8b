"""Callback dispatch, propagation of callback errors, early stopping, the NaN guard, the default and
device callbacks (per-step host syncs: tests/test_host_sync.py; the console: tests/test_console.py)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from typing_extensions import override

import pta
from pta import DefaultTrainer, StopTrainingError, TrainerCallback
from pta._types import BatchOutput
from pta.callbacks import (
    CallbackHandler,
    MoveModulesToDeviceCallback,
    NonFiniteLossError,
    TerminateOnNaNCallback,
)
from pta.protocols import TrainerLike
from tests._helpers import linear_model, params_of, quiet_trainer, regression_data


class StepCounter(TrainerCallback):
    """Counts training steps and runs; overrides nothing else."""

    def __init__(self) -> None:
        self.steps = 0
        self.run_ends = 0

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.steps += 1

    @override
    def on_training_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.run_ends += 1


class EventLog(TrainerCallback):
    """Records the events it overrides."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.events.append("on_train_step_end")

    @override
    def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.events.append("on_train_epoch_end")

    @override
    def on_stop_training_error(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.events.append("on_stop_training_error")

    @override
    def on_training_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.events.append("on_training_run_end")


# ------------------------------------------------------------------------------------ dispatch
def test_dispatch_table_lists_only_overriding_callbacks() -> None:
    counter, log = StepCounter(), EventLog()
    handler = CallbackHandler([counter, log])
    assert not handler.has_listeners("on_train_step_start")
    assert not handler.has_listeners("on_eval_step_end")
    assert handler.has_listeners("on_train_step_end")
    assert handler.has_listeners("on_stop_training_error")
    assert handler._dispatch["on_train_step_end"] == [counter.on_train_step_end, log.on_train_step_end]
    assert handler._dispatch["on_training_run_end"] == [counter.on_training_run_end, log.on_training_run_end]
    assert handler._dispatch["on_stop_training_error"] == [log.on_stop_training_error]


def test_event_methods_follow_callbacks_added_and_removed_after_they_were_taken() -> None:
    counter = StepCounter()
    handler = CallbackHandler([counter])
    table = handler.event_methods()  # what the training loop holds for an epoch
    log = EventLog()
    handler.add_callback(log)
    assert list(table["on_train_step_end"]) == [counter.on_train_step_end, log.on_train_step_end]
    handler.remove_callback(counter)
    assert list(table["on_train_step_end"]) == [log.on_train_step_end]
    handler.clear_callbacks()
    assert list(table["on_train_step_end"]) == []


class LateJoiner(TrainerCallback):
    """Records the steps whose start and end events reach it."""

    def __init__(self) -> None:
        self.starts = 0
        self.ends: list[int] = []

    @override
    def on_train_step_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.starts += 1

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, step: int = -1, **kwargs: Any) -> None:
        self.ends.append(step)


def test_a_callback_added_or_removed_during_an_epoch_gets_step_events_from_the_next_step() -> None:
    joiner = LateJoiner()

    class Host(TrainerCallback):
        handler: CallbackHandler

        @override
        def on_train_step_end(self, trainer: TrainerLike, *, step: int = -1, **kwargs: Any) -> None:
            if step == 1:
                self.handler.add_callback(joiner)
            elif step == 4:
                self.handler.remove_callback(joiner)

    host = Host()
    trainer = quiet_trainer(linear_model(), callbacks=[host])
    host.handler = trainer.callback_handler
    trainer.train(regression_data(32), 1, per_device_batch_size=4)  # steps 0-7
    # Added during step 1's end event: from step 2 on. Removed during step 4's end event, whose calls
    # were already under way (it still reaches the joiner, as call_event's would): to step 4.
    assert joiner.ends == [2, 3, 4]
    assert joiner.starts == 3


class RecordingHandler(CallbackHandler):
    """A handler whose ``call_event`` records each event before dispatching it."""

    events: Counter[str]

    @override
    def call_event(self, event: str, /, *args: Any, **kwargs: Any) -> None:
        self.events[event] += 1
        super().call_event(event, *args, **kwargs)


@pytest.mark.parametrize("replaced", ["subclass", "instance"])
def test_a_replaced_call_event_gets_every_step_event(replaced: str) -> None:
    counter = StepCounter()
    trainer = quiet_trainer(linear_model(), callbacks=[counter])
    events = Counter[str]()
    if replaced == "subclass":
        handler = RecordingHandler(trainer.callback_handler.callbacks)
        handler.events = events
        trainer.callback_handler = handler
    else:
        dispatch = trainer.callback_handler.call_event

        def recording(event: str, /, *args: Any, **kwargs: Any) -> None:
            events[event] += 1
            dispatch(event, *args, **kwargs)

        trainer.callback_handler.call_event = recording  # type: ignore[method-assign]  # what is under test
    trainer.train(regression_data(16), 2, eval_dataset=regression_data(8), per_device_batch_size=4)
    assert counter.steps == 8  # the events still reach the callbacks
    for event, count in (("on_train_step_start", 8), ("on_train_step_end", 8), ("on_eval_step_start", 4),
                         ("on_eval_step_end", 4)):
        assert events[event] == count, event


def test_a_callback_is_not_called_for_events_it_does_not_override(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Counter[str]()

    def counting(self: TrainerCallback, trainer: TrainerLike, **kwargs: Any) -> None:
        calls[type(self).__name__] += 1

    # The base class's no-op now counts: a callback that inherits it must still never be called.
    monkeypatch.setattr(TrainerCallback, "on_train_step_start", counting)
    monkeypatch.setattr(TrainerCallback, "on_eval_step_start", counting)
    counter = StepCounter()
    trainer = quiet_trainer(linear_model(), callbacks=[counter])
    trainer.train(regression_data(16), 2, eval_dataset=regression_data(8), per_device_batch_size=4)
    assert counter.steps == 8
    assert calls == Counter()


def test_an_empty_callback_list_is_allowed() -> None:
    trainer = quiet_trainer(linear_model(), callbacks=[])
    trainer.train(regression_data(8), 1, per_device_batch_size=4)
    assert trainer.callback_handler.callbacks == []
    assert math.isfinite(trainer.run_history.get_latest_metric("train_loss_epoch"))


def test_callback_classes_are_instantiated_and_same_class_callbacks_coexist() -> None:
    first = StepCounter()
    trainer = quiet_trainer(linear_model(), callbacks=[first, StepCounter, StepCounter])
    callbacks = trainer.callback_handler.callbacks
    assert len(callbacks) == 3
    assert all(type(cb) is StepCounter for cb in callbacks)
    assert callbacks[0] is first and len({id(cb) for cb in callbacks}) == 3
    trainer.train(regression_data(12), 1, per_device_batch_size=4)
    assert [cb.steps for cb in callbacks if isinstance(cb, StepCounter)] == [3, 3, 3]
    assert trainer.callback_handler.callback_list == ["StepCounter"] * 3


def test_non_callbacks_are_rejected() -> None:
    not_a_callback: Any = object()
    with pytest.raises(TypeError, match="TrainerCallback"):
        CallbackHandler([not_a_callback])


# --------------------------------------------------------------------------------- propagation
class Boom(RuntimeError):
    pass


class RaiseOnSecondStep(TrainerCallback):
    @override
    def on_train_step_end(self, trainer: TrainerLike, *, step: int, **kwargs: Any) -> None:
        if step == 1:
            raise Boom("callback failed at step 1")


def test_callback_exceptions_propagate_out_of_train() -> None:
    log = EventLog()
    trainer = quiet_trainer(linear_model(), callbacks=[RaiseOnSecondStep(), log])
    with pytest.raises(Boom, match="step 1"):
        trainer.train(regression_data(16), 2, per_device_batch_size=4)
    # not swallowed and not turned into a clean end of the run
    assert log.events == ["on_train_step_end"]


def test_callback_exceptions_propagate_out_of_evaluate() -> None:
    class RaiseOnEval(TrainerCallback):
        @override
        def on_eval_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, batch: Any,
                             **kwargs: Any) -> None:
            raise Boom("eval")

    trainer = quiet_trainer(linear_model(), callbacks=[RaiseOnEval()])
    with pytest.raises(Boom):
        trainer.evaluate(regression_data(8), per_device_batch_size=4)


# ------------------------------------------------------------------------------- early stopping
class StopAtStep(TrainerCallback):
    def __init__(self, stop_after: int) -> None:
        self.stop_after = stop_after
        self.seen = 0

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.seen += 1
        if self.seen == self.stop_after:
            raise StopTrainingError("enough for today")


def test_stop_training_error_ends_the_run_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    stopper, log, counter = StopAtStep(stop_after=6), EventLog(), StepCounter()
    trainer = quiet_trainer(linear_model(), callbacks=[stopper, log, counter])
    trainer.train(regression_data(16), 5, per_device_batch_size=4)  # 4 steps per epoch
    assert counter.steps == 5  # the stopper raised before the counter saw step 6
    assert log.events[-3:] == ["on_train_step_end", "on_stop_training_error", "on_training_run_end"]
    assert log.events.count("on_train_epoch_end") == 1
    assert counter.run_ends == 1
    assert trainer.run_history.current_epoch == 2  # stopped inside the second epoch
    assert "enough for today" in capsys.readouterr().out
    assert trainer.get_model() is trainer.model  # training_run_end unwrapped the model


class StopSeer(TrainerCallback):
    """Records the trainer that on_stop_training_error receives."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    @override
    def on_stop_training_error(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.seen.append(trainer)


def test_on_stop_training_error_receives_the_trainer() -> None:
    seer = StopSeer()
    trainer = quiet_trainer(linear_model(), callbacks=[StopAtStep(stop_after=2), seer])
    trainer.train(regression_data(16), 2, per_device_batch_size=4)
    assert seer.seen == [trainer]


class EvaluationSeer(TrainerCallback):
    """Raises StopTrainingError at the second evaluation step; records the evaluation-run events and trainers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []
        self.steps = 0

    @override
    def on_evaluation_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.seen.append(("on_evaluation_run_start", trainer))

    @override
    def on_eval_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.steps += 1
        if self.steps == 2:
            raise StopTrainingError("no more evaluation")

    @override
    def on_stop_training_error(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.seen.append(("on_stop_training_error", trainer))

    @override
    def on_evaluation_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.seen.append(("on_evaluation_run_end", trainer))


def test_stop_training_error_ends_an_evaluation_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    seer = EvaluationSeer()
    trainer = quiet_trainer(linear_model(), callbacks=[seer])
    trainer.evaluate(regression_data(16), per_device_batch_size=4)
    assert seer.steps == 2
    assert seer.seen == [("on_evaluation_run_start", trainer), ("on_stop_training_error", trainer),
                         ("on_evaluation_run_end", trainer)]
    assert "no more evaluation" in capsys.readouterr().out


class EvalStepSeer(TrainerCallback):
    """Records what on_eval_step_end receives."""

    def __init__(self) -> None:
        self.seen: list[tuple[object, object, object]] = []

    @override
    def on_eval_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.seen.append((trainer, kwargs["batch_output"], kwargs["batch"]))


def test_on_eval_step_end_receives_the_trainer_the_batch_output_and_the_batch() -> None:
    seer = EvalStepSeer()
    trainer = quiet_trainer(linear_model(), callbacks=[seer])
    trainer.evaluate(regression_data(8), per_device_batch_size=4)
    assert len(seer.seen) == 2
    for seen_trainer, batch_output, batch in seer.seen:
        assert seen_trainer is trainer
        assert isinstance(batch_output, dict) and isinstance(batch_output["loss"], Tensor)
        assert isinstance(batch, list) and len(batch) == 2  # pyright: ignore[reportUnknownArgumentType]  # batches are untyped
        assert isinstance(batch[0], Tensor) and batch[0].shape == (4, 4)


# ----------------------------------------------------------------------------------- NaN guard
class NanLossAfter:
    """MSE that returns NaN from call number ``nan_from`` on, counting calls."""

    def __init__(self, nan_from: int) -> None:
        self.nan_from = nan_from
        self.calls = 0

    def __call__(self, outputs: Tensor, targets: Tensor) -> Tensor:
        self.calls += 1
        loss = nn.functional.mse_loss(outputs, targets)
        return loss * float("nan") if self.calls >= self.nan_from else loss


def _nan_trainer(loss: Callable[..., Tensor], callback: TerminateOnNaNCallback, *extra: TrainerCallback) -> DefaultTrainer:
    model = linear_model()
    # the extra callbacks come first: the NaN guard raises from on_training_run_end
    return DefaultTrainer(model, loss, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[*extra, callback])


@pytest.mark.parametrize(("check_every", "expected_calls"), [(1, 3), (2, 4), (4, 4), (50, 8)])
def test_nan_loss_stops_training_and_raises_at_run_end(check_every: int, expected_calls: int) -> None:
    # 8 batches per epoch; the third loss is NaN. The flag is read every `check_every` steps and at
    # the end of each epoch, so training stops at the first check at or after step 3.
    loss = NanLossAfter(nan_from=3)
    log = EventLog()
    trainer = _nan_trainer(loss, TerminateOnNaNCallback(check_every_n_steps=check_every), log)
    with pytest.raises(NonFiniteLossError, match="NaN or infinite"):
        trainer.train(regression_data(32), 3, per_device_batch_size=4)
    assert loss.calls == expected_calls
    assert "on_stop_training_error" in log.events and log.events[-1] == "on_training_run_end"


def test_nan_error_is_raised_after_every_callback_saw_the_run_end() -> None:
    # As in DEFAULT_CALLBACKS, other callbacks (progress, metric loggers, trackers) come after the
    # NaN guard; they must still see on_training_run_end (to close files, finish trackers) before
    # NonFiniteLossError leaves train(): the guard's own docstring promises the run closes normally.
    log = EventLog()
    model = linear_model()
    trainer = DefaultTrainer(model, NanLossAfter(nan_from=2), torch.optim.SGD(model.parameters(), lr=0.1),
                             callbacks=[TerminateOnNaNCallback(check_every_n_steps=1), log])
    with pytest.raises(NonFiniteLossError):
        trainer.train(regression_data(16), 2, per_device_batch_size=4)
    assert log.events[-2:] == ["on_stop_training_error", "on_training_run_end"]


def test_nan_error_is_not_system_exit() -> None:
    assert issubclass(NonFiniteLossError, Exception)
    assert not issubclass(NonFiniteLossError, SystemExit)
    trainer = _nan_trainer(NanLossAfter(nan_from=1), TerminateOnNaNCallback(check_every_n_steps=1))
    try:
        trainer.train(regression_data(8), 1, per_device_batch_size=4)
    except SystemExit:  # pragma: no cover - the failure this test exists for
        pytest.fail("TerminateOnNaNCallback called sys.exit")
    except NonFiniteLossError:
        pass
    else:  # pragma: no cover
        pytest.fail("no NonFiniteLossError")


def test_nan_callback_can_stop_without_raising() -> None:
    loss = NanLossAfter(nan_from=2)
    callback = TerminateOnNaNCallback(check_every_n_steps=1, raise_at_end=False)
    trainer = _nan_trainer(loss, callback)
    trainer.train(regression_data(16), 2, per_device_batch_size=4)
    assert callback.triggered and loss.calls == 2


def test_finite_losses_do_not_trigger_the_nan_guard() -> None:
    callback = TerminateOnNaNCallback(check_every_n_steps=2)
    trainer = _nan_trainer(nn.MSELoss(), callback)
    trainer.train(regression_data(16), 2, eval_dataset=regression_data(8), per_device_batch_size=4)
    assert not callback.triggered


def test_check_every_n_steps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="check_every_n_steps"):
        TerminateOnNaNCallback(check_every_n_steps=0)


# ----------------------------------------------------------------------------- console callbacks
# The console lines themselves are tested in tests/test_console.py.


def test_default_callbacks_run_without_error(capsys: pytest.CaptureFixture[str]) -> None:
    model = linear_model()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05))
    assert [type(cb) for cb in trainer.callback_handler.callbacks] == list(pta.DEFAULT_CALLBACKS)
    trainer.train(regression_data(16), 1, eval_dataset=regression_data(8), per_device_batch_size=4)
    assert "eval_loss_epoch" in capsys.readouterr().out


# ----------------------------------------------------------------------------------- device move
class WeightedMSE(nn.Module):
    weight: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(1))

    @override
    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return (self.weight * (outputs - targets) ** 2).mean()


class MetaDeviceTrainer(DefaultTrainer):
    """Claims the meta device, so that a move is visible on a machine with only a CPU."""

    @property
    @override
    def device(self) -> torch.device:
        return torch.device("meta")


def test_move_modules_to_device_moves_loss_and_extra_modules() -> None:
    model, loss = linear_model(), WeightedMSE()
    trainer = MetaDeviceTrainer(model, loss, torch.optim.SGD(model.parameters(), lr=0.1),
                                callbacks=[MoveModulesToDeviceCallback])
    teacher = nn.Linear(4, 1)
    trainer.teacher = teacher  # type: ignore[attr-defined]  # an extra module a user hangs on the trainer
    trainer.callback_handler.call_event("on_training_run_start", trainer)
    assert loss.weight.device.type == "meta"
    assert teacher.weight.device.type == "meta"
    assert next(model.parameters()).device.type == "cpu"  # the model is prepared by the trainer, not moved


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_move_modules_to_device_on_cuda() -> None:
    model, loss = linear_model(), WeightedMSE()
    trainer = DefaultTrainer(model, loss, torch.optim.SGD(model.parameters(), lr=0.1),
                             callbacks=[MoveModulesToDeviceCallback])
    trainer.train(regression_data(8), 1, per_device_batch_size=4)
    assert loss.weight.device.type == "cuda"


def test_training_with_a_loss_module_with_buffers() -> None:
    model, loss = linear_model(), WeightedMSE()
    trainer = DefaultTrainer(model, loss, torch.optim.SGD(model.parameters(), lr=0.1),
                             callbacks=[MoveModulesToDeviceCallback])
    before = params_of(model)
    trainer.train(regression_data(8), 1, per_device_batch_size=4)
    assert not torch.equal(before[0], params_of(trainer.get_model())[0])
