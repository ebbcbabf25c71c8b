"""The NaN guard stops on every non-finite loss: NaN, +inf and -inf, in training and in evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from typing_extensions import override

from pta import BatchOutput, DefaultTrainer, TrainerCallback
from pta._meter import LossMeter
from pta.callbacks import CSVLoggerCallback, NonFiniteLossError, TerminateOnNaNCallback
from pta.protocols import TrainerLike
from tests._helpers import linear_model, params_of, regression_data


class InfiniteLossAt:
    """MSE plus a constant ``value`` on call number ``at``: the loss is infinite, the gradients stay finite.

    The weights therefore never become NaN, so a guard that only looks for NaN never sees one.
    """

    def __init__(self, at: int, value: float) -> None:
        self.at = at
        self.value = value
        self.calls = 0

    def __call__(self, outputs: Tensor, targets: Tensor) -> Tensor:
        self.calls += 1
        loss = nn.functional.mse_loss(outputs, targets)
        return loss + self.value if self.calls == self.at else loss


def _trainer(loss: InfiniteLossAt, guard: TerminateOnNaNCallback) -> DefaultTrainer:
    model = linear_model()
    return DefaultTrainer(model, loss, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[guard])


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
@pytest.mark.parametrize(("check_every", "expected_calls"), [(1, 3), (4, 4), (50, 8)])
def test_an_infinite_training_loss_stops_the_run(value: float, check_every: int, expected_calls: int) -> None:
    # 8 batches per epoch, 3 epochs; only the third loss is infinite.
    loss = InfiniteLossAt(at=3, value=value)
    guard = TerminateOnNaNCallback(check_every_n_steps=check_every)
    trainer = _trainer(loss, guard)
    with pytest.raises(NonFiniteLossError, match="NaN or infinite"):
        trainer.train(regression_data(32), 3, per_device_batch_size=4)
    assert guard.triggered and loss.calls == expected_calls
    # the gradients were finite: the weights did not turn NaN and give the guard a NaN to find
    assert all(bool(torch.isfinite(p).all()) for p in params_of(trainer.get_model()))


def test_an_infinite_evaluation_loss_stops_the_run() -> None:
    # 4 training batches, then 2 eval batches; the sixth loss call is the second eval batch.
    loss = InfiniteLossAt(at=6, value=float("inf"))
    guard = TerminateOnNaNCallback()
    trainer = _trainer(loss, guard)
    with pytest.raises(NonFiniteLossError, match="evaluation loss"):
        trainer.train(regression_data(16), 3, eval_dataset=regression_data(8), per_device_batch_size=4)
    assert guard.triggered and loss.calls == 6


class PerSampleEvalLoss(DefaultTrainer):
    """Evaluation returns one loss per sample (no backward needs a scalar there)."""

    @override
    def calculate_eval_batch_loss(self, batch: list[Tensor]) -> BatchOutput:
        outputs = self.model(batch[0])
        losses = nn.functional.mse_loss(outputs, batch[1], reduction="none").squeeze(1)
        return {"loss": losses, "model_outputs": outputs, "batch_size": losses.shape[0]}


def test_per_sample_eval_losses_are_checked_as_a_whole() -> None:
    # 10 eval samples in batches of 4: loss vectors of 4, 4 and 2 elements, summed into one flag
    model = linear_model()
    guard = TerminateOnNaNCallback()
    trainer = PerSampleEvalLoss(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[guard])
    trainer.train(regression_data(8), 1, eval_dataset=regression_data(10), per_device_batch_size=4)
    assert not guard.triggered
    x, y = regression_data(10).tensors
    with torch.no_grad():
        expected = float(nn.functional.mse_loss(trainer.get_model()(x), y))
    assert trainer.run_history.get_latest_metric("eval_loss_epoch") == pytest.approx(expected, rel=1e-5)


def test_a_nan_in_one_per_sample_eval_loss_stops_the_run() -> None:
    eval_set = regression_data(10)
    eval_set.tensors[1][6] = float("nan")
    model = linear_model()
    guard = TerminateOnNaNCallback()
    trainer = PerSampleEvalLoss(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[guard])
    with pytest.raises(NonFiniteLossError, match="evaluation loss"):
        trainer.train(regression_data(8), 2, eval_dataset=eval_set, per_device_batch_size=4)
    assert guard.triggered and trainer.run_history.current_epoch == 1


def test_the_stop_message_names_the_phase_epoch_and_step(capsys: pytest.CaptureFixture[str]) -> None:
    trainer = _trainer(InfiniteLossAt(at=11, value=float("inf")), TerminateOnNaNCallback(check_every_n_steps=1))
    with pytest.raises(NonFiniteLossError) as raised:
        trainer.train(regression_data(32), 3, per_device_batch_size=4)  # call 11: epoch 2, step 3
    message = "The training loss became NaN or infinite in epoch 2 (at or before step 3 of the epoch)"
    assert str(raised.value) == message
    assert f"Stopping training: {message}" in capsys.readouterr().out


def test_the_steps_between_checks_are_counted_over_the_run() -> None:
    # 8 batches per epoch, a check every 6 steps of the run: after steps 6, 12, 18 (and each epoch's
    # end), not after step 6 of each epoch (run steps 6, 14, 22). Call 11 (epoch 2, step 3) is infinite.
    loss = InfiniteLossAt(at=11, value=float("inf"))
    trainer = _trainer(loss, TerminateOnNaNCallback(check_every_n_steps=6))
    with pytest.raises(NonFiniteLossError, match=r"in epoch 2 \(at or before step 4 of the epoch\)"):
        trainer.train(regression_data(32), 3, per_device_batch_size=4)
    assert loss.calls == 12


def test_with_per_step_tracking_the_checks_sum_no_pending_loss_of_their_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The tracking reads the running sum every 5 updates, the guard every 5 steps: the same steps (no
    # accumulation), so the guard's reads find the pending losses already summed. Epochs of 12 steps:
    # counted per epoch, the guard's reads would fall on other steps than the tracking's after the first.
    sums: list[int] = []
    flush = LossMeter._flush  # pyright: ignore[reportPrivateUsage]  # the count of sums is the claim

    def counting(meter: LossMeter) -> None:
        sums.append(len(meter._pending))  # pyright: ignore[reportPrivateUsage]  # as above
        flush(meter)

    monkeypatch.setattr(LossMeter, "_flush", counting)
    summed = {}
    for guard in (False, True):
        model = linear_model()
        callbacks: list[TrainerCallback] = [TerminateOnNaNCallback(check_every_n_steps=5)] if guard else []
        callbacks.append(CSVLoggerCallback(tmp_path / f"{guard}.csv", log_every_n_updates=5))
        trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                                 callbacks=callbacks)
        sums.clear()
        trainer.train(regression_data(48), 3, per_device_batch_size=4)
        summed[guard] = sum(1 for pending in sums if pending)
    assert summed[True] == summed[False] > 3


class KeepsLosses(TrainerCallback):
    """Keeps each step's loss tensor itself, as a logger that reads them later would."""

    def __init__(self) -> None:
        self.kept: list[Tensor] = []
        self.values: list[float] = []

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, **kwargs: Any) -> None:
        self.kept.append(batch_output["loss"])
        self.values.append(float(batch_output["loss"].detach()))


def test_the_guard_never_writes_into_a_loss_tensor() -> None:
    # float64 losses: the guard's running sum (float64) must be a copy, not the first loss itself
    model = linear_model().double()
    keeper = KeepsLosses()
    data = regression_data(16)
    data.tensors = tuple(t.double() for t in data.tensors)
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                             callbacks=[keeper, TerminateOnNaNCallback(check_every_n_steps=50)])
    trainer.train(data, 1, per_device_batch_size=4)
    assert [float(loss.detach()) for loss in keeper.kept] == keeper.values


def test_documented_defaults() -> None:
    # docs/performance.md: the flag is read every 50 steps; a fresh guard has not triggered
    guard = TerminateOnNaNCallback()
    assert guard.check_every_n_steps == 50 and guard.raise_at_end is True and guard.triggered is False


def test_large_finite_losses_do_not_overflow_the_running_sum() -> None:
    # 3e38 is finite in float32 but two of them are not: the guard sums in float64 so it stops only on
    # a loss that is itself non-finite
    loss = InfiniteLossAt(at=-1, value=0.0)
    model = linear_model()
    guard = TerminateOnNaNCallback()

    def huge(outputs: Tensor, targets: Tensor) -> Tensor:
        return loss(outputs, targets) * 0.0 + 3e38

    trainer = DefaultTrainer(model, huge, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[guard])
    trainer.train(regression_data(16), 1, eval_dataset=regression_data(8), per_device_batch_size=4)
    assert not guard.triggered and loss.calls == 6


def test_one_process_checks_without_a_collective() -> None:
    # A check's cost is paid every 50 steps: on one process it reads the running sum once (a collective's
    # path is ~50x the instructions, docs/performance.md); with more processes the flag is gathered.
    class CountingGathers(DefaultTrainer):
        gathers = 0

        @override
        def gather(self, tensor: Tensor, padding_value: float | None = None) -> Tensor:
            self.gathers += 1
            return super().gather(tensor, padding_value)

    model = linear_model()
    guard = TerminateOnNaNCallback(check_every_n_steps=2)
    trainer = CountingGathers(model, InfiniteLossAt(at=5, value=float("nan")),
                              torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[guard])
    with pytest.raises(NonFiniteLossError, match="at or before step 6"):
        trainer.train(regression_data(32), 2, per_device_batch_size=4)
    assert trainer.gathers == 0
