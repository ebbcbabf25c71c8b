"""What a training step costs, counted deterministically (Python calls, device ops, samples loaded)
instead of timed: the counts must not depend on callbacks that ignore the step, on the run's
length, or on where in an epoch a run resumes."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset
from typing_extensions import override

import pta.callbacks.nan
from pta import DefaultTrainer, TrainerCallback
from pta.callbacks import NonFiniteLossError, TerminateOnNaNCallback
from pta.protocols import TrainerLike

from ._helpers import linear_model, regression_data


class Counting(Dataset[tuple[Tensor, Tensor]]):
    """A map-style dataset that records every index it is asked for."""

    def __init__(self, data: TensorDataset) -> None:
        self.data, self.loaded = data, list[int]()

    def __len__(self) -> int:
        return len(self.data)

    @override
    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        self.loaded.append(index)
        x, y = self.data[index]
        return x, y


class SaveAndCrash(TrainerCallback):
    def __init__(self, directory: Path, at_step: int) -> None:
        self.directory, self.at_step, self.seen = directory, at_step, 0

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.seen += 1
        if self.seen == self.at_step:
            trainer.save_training_state(self.directory)
            raise KeyboardInterrupt  # the process dies right after the save


def _no_running_loss(trainer: object, phase: object) -> None:
    """``pta.callbacks.nan.running_loss`` for a trainer that keeps no running loss sums."""


def _train(dataset: Counting, callbacks: list[TrainerCallback], resume_from: Path | None = None) -> None:
    model = linear_model()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.01), callbacks=callbacks)
    trainer.train(dataset, 2, per_device_batch_size=4, resume_from=resume_from,
                  train_dataloader_kwargs={"generator": torch.Generator().manual_seed(0)})


@pytest.mark.parametrize("position", [1, 7, 15])  # batches into the first epoch of 16 (the last one included)
def test_resume_loads_no_sample_of_the_skipped_batches(tmp_path: Path, position: int) -> None:
    reference = Counting(regression_data(64))
    _train(reference, [])
    assert len(reference.loaded) == 2 * 64

    interrupted = Counting(regression_data(64))
    with pytest.raises(KeyboardInterrupt):
        _train(interrupted, [SaveAndCrash(tmp_path / "state", position)])
    resumed = Counting(regression_data(64))
    _train(resumed, [], resume_from=tmp_path / "state")
    # Exactly the samples the interrupted run had not reached, in the same order: nothing is loaded
    # (or skipped over by loading) for the batches trained before the save, wherever it happened.
    assert resumed.loaded == reference.loaded[position * 4:]


# ---------------------------------------------------------------------------------- the NaN guard
class NanOnCall(nn.Module):
    """MSE whose value is NaN on the given calls (1-based); its gradients stay finite, so the model does not
    turn NaN with it (a later evaluation cannot see that an earlier training loss was NaN)."""

    def __init__(self, *nan_calls: int) -> None:
        super().__init__()
        self.nan_calls, self.calls = nan_calls, 0

    @override
    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        self.calls += 1
        loss = nn.functional.mse_loss(outputs, targets)
        return loss + torch.full_like(loss, float("nan")).detach() if self.calls in self.nan_calls else loss


def _nan_run(loss: NanOnCall, *callbacks: TrainerCallback, check_every: int = 4) -> TerminateOnNaNCallback:
    model = linear_model()
    guard = TerminateOnNaNCallback(check_every_n_steps=check_every, raise_at_end=False)
    trainer = DefaultTrainer(model, loss, torch.optim.SGD(model.parameters(), lr=0.01), callbacks=[guard, *callbacks])
    trainer.train(regression_data(32), 2, eval_dataset=regression_data(8), per_device_batch_size=4)
    return guard


@pytest.mark.parametrize("trainer_keeps_a_sum", [True, False])
def test_nan_guard_stops_at_the_first_check_after_the_nan(monkeypatch: pytest.MonkeyPatch, trainer_keeps_a_sum: bool) -> None:
    observed = 0
    original: Callable[..., None] = TerminateOnNaNCallback._observe

    def counting(self: TerminateOnNaNCallback, *args: Any) -> None:
        nonlocal observed
        observed += 1
        original(self, *args)

    monkeypatch.setattr(TerminateOnNaNCallback, "_observe", counting)
    if not trainer_keeps_a_sum:  # a trainer without pta's running loss sums: the guard sums itself
        monkeypatch.setattr(pta.callbacks.nan, "running_loss", _no_running_loss)
    loss = NanOnCall(6)
    guard = _nan_run(loss)
    assert guard.triggered and loss.calls == 8  # NaN at step 6, found by the check after step 8
    # With pta's trainer the guard reads the trainer's running sum: no device operation per step.
    assert observed == (0 if trainer_keeps_a_sum else 8)


class EvaluateAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, step: int, **kwargs: Any) -> None:
        if step == self.step:
            trainer.run_intermediate_evaluation()


def test_an_intermediate_evaluation_does_not_hide_an_earlier_training_nan() -> None:
    loss = NanOnCall(2)  # only the second training step's loss; the evaluation's losses are finite
    guard = _nan_run(loss, EvaluateAt(step=1), check_every=4)
    assert guard.triggered
    assert loss.calls == 4 + 2  # four training steps and the two-batch intermediate evaluation


def test_nan_guard_raises_at_the_end_of_the_run() -> None:
    model = linear_model()
    trainer = DefaultTrainer(model, NanOnCall(3), torch.optim.SGD(model.parameters(), lr=0.01),
                             callbacks=[TerminateOnNaNCallback(check_every_n_steps=50)])
    with pytest.raises(NonFiniteLossError, match="training loss"):
        trainer.train(regression_data(32), 2, per_device_batch_size=4)


# ---------------------------------------------------------------------------------- calls per step
class RunStartOnly(TrainerCallback):
    """Handles no step event."""

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        pass


def _python_calls(num_batches: int, callbacks: Sequence[TrainerCallback]) -> int:
    model = linear_model()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.01), callbacks=callbacks)
    calls = 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    data = regression_data(4 * num_batches)
    gc.collect()  # a collection during the run would call finalizers of objects earlier tests left behind
    gc.disable()
    sys.setprofile(profile)
    try:
        trainer.train(data, 1, per_device_batch_size=4)
    finally:
        sys.setprofile(None)
        gc.enable()
    return calls


def test_python_calls_per_step_do_not_grow_with_the_run_or_with_idle_callbacks() -> None:
    _python_calls(2, [])  # first-use imports and caches out of the way
    per_step: list[float] = []
    for callbacks in ([], [RunStartOnly() for _ in range(50)]):
        counts = [_python_calls(n, callbacks) for n in (8, 16, 32)]
        per_step.append((counts[1] - counts[0]) / 8)
        assert counts[2] - counts[1] == 16 * per_step[-1], counts  # linear in the number of steps
    assert per_step[0] == per_step[1]  # 50 callbacks that ignore steps add nothing to a step


def test_trainers_have_no_getattr_so_attribute_reads_stay_fast() -> None:
    """CPython does not specialise attribute reads on a class with ``__getattr__``; the loop reads
    ``self.<name>`` dozens of times a step."""
    assert not hasattr(DefaultTrainer, "__getattr__")
