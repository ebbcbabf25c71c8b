"""Schedulers step once per optimizer update; placeholders resolve to what the scheduler sees;
``max_num_train_steps`` stops after exactly that many optimizer updates."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import OneCycleLR
from typing_extensions import override

from pta import BatchOutput, CheckpointError, DefaultTrainer, TrainerCallback, TrainerPlaceholderValues
from pta.protocols import SchedulerLike, TrainerLike
from tests._helpers import mlp, regression_data

QUIET: tuple[TrainerCallback, ...] = ()  # no console output

# PyTorch warns when a scheduler steps before its optimizer ever did: the schedule's first value is
# then skipped. pta must step the optimizer the scheduler wraps, first.
pytestmark = pytest.mark.filterwarnings(r"error:Detected call of `lr_scheduler\.step\(\)` before:UserWarning")
P = TrainerPlaceholderValues
Batch = list[Tensor]


class Events:
    """The order of optimizer steps (of the user's optimizer) and scheduler steps in one run, and the
    learning rate each optimizer step used."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.lrs: list[float] = []

    def count(self, name: str) -> int:
        return self.log.count(name)

    def watch_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        def before(opt: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self.lrs.append(float(opt.param_groups[0]["lr"]))

        def after(opt: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self.log.append("optimizer")

        optimizer.register_step_pre_hook(before)
        optimizer.register_step_post_hook(after)


class RecordingScheduler:
    """A scheduler that counts its steps and keeps the arguments its factory received."""

    def __init__(self, optimizer: torch.optim.Optimizer, *args: Any, events: Events | None = None,
                 **kwargs: Any) -> None:
        self.optimizer = optimizer
        self.args = args
        self.kwargs = kwargs
        self.events = events
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        if self.events is not None:
            self.events.log.append("scheduler")

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state_dict: Any, /) -> None:
        self.steps = int(state_dict["steps"])


def make_trainer(lr: float = 0.05) -> tuple[DefaultTrainer[Batch], Events]:
    model = mlp(hidden=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    events = Events()
    events.watch_optimizer(optimizer)
    return DefaultTrainer(model, nn.MSELoss(), optimizer, callbacks=QUIET), events


def recorded(*args: Any, events: Events | None = None, **kwargs: Any) -> RecordingScheduler:
    """A factory that records what it got: a partial's positional arguments come before the optimizer."""
    *leading, optimizer = args
    return RecordingScheduler(optimizer, *leading, events=events, **kwargs)


def recording_factory(events: Events | None = None, **kwargs: Any) -> functools.partial[RecordingScheduler]:
    return functools.partial(recorded, events=events, **kwargs)


def scheduler_of(trainer: DefaultTrainer[Batch]) -> RecordingScheduler:
    scheduler = trainer.scheduler
    assert isinstance(scheduler, RecordingScheduler)
    return scheduler


# (samples, batch size, accumulation, updates per epoch): 6 batches; 10 batches with k=3 -> windows of
# 3, 3, 3, 1; 10 batches (the last of 2 samples) with k=4 -> windows of 4, 4, 2.
STEPS_CASES = [(24, 4, 1, 6), (40, 4, 3, 4), (38, 4, 4, 3)]


@pytest.mark.parametrize(("n", "b", "k", "per_epoch"), STEPS_CASES)
def test_scheduler_steps_once_per_optimizer_update(n: int, b: int, k: int, per_epoch: int) -> None:
    trainer, events = make_trainer()
    trainer.train(regression_data(n=n), 3, per_device_batch_size=b, gradient_accumulation_steps=k,
                  create_scheduler_fn=recording_factory(events))

    assert trainer.run_config.num_update_steps_per_epoch == per_epoch
    assert events.log == ["optimizer", "scheduler"] * (3 * per_epoch)
    assert scheduler_of(trainer).steps == 3 * per_epoch


def test_scheduler_is_created_once_per_run_with_the_prepared_optimizer() -> None:
    made: list[RecordingScheduler] = []

    def factory(optimizer: torch.optim.Optimizer) -> SchedulerLike:
        made.append(RecordingScheduler(optimizer))
        return made[-1]

    trainer, _ = make_trainer()
    trainer.train(regression_data(n=16), 2, per_device_batch_size=4, create_scheduler_fn=factory)
    assert len(made) == 1
    assert made[0].optimizer is trainer.optimizer
    assert made[0].steps == 8
    trainer.train(regression_data(n=16), 1, per_device_batch_size=4, create_scheduler_fn=factory)
    assert len(made) == 2 and made[1].steps == 4 and made[0].steps == 8


# ---------------------------------------------------------------------------------- placeholders
def test_placeholders_resolve_in_keywords_and_positional_arguments() -> None:
    # 38 samples in batches of 4 -> 10 train batches; k=4 -> 3 updates per epoch; 10 eval samples -> 3 batches.
    factory = functools.partial(
        recorded,
        P.NUM_EPOCHS,
        P.NUM_UPDATE_STEPS_PER_EPOCH * 2 + 1,
        "not a placeholder",
        7,
        epochs=P.NUM_EPOCHS,
        steps=P.NUM_UPDATE_STEPS_PER_EPOCH,
        local_steps=P.PER_PROCESS_NUM_UPDATE_STEPS_PER_EPOCH,
        train_len=P.TRAIN_DATALOADER_LEN,
        eval_len=P.EVAL_DATALOADER_LEN,
        expression=P.NUM_UPDATE_STEPS_PER_EPOCH * 2 + 1,
        reflected=1 + 2 * P.TRAIN_DATALOADER_LEN,
        chained=(P.NUM_EPOCHS + 1) * 3,
        plain=5,
    )
    trainer, _ = make_trainer()
    trainer.train(regression_data(n=38), 4, eval_dataset=regression_data(n=10, seed=1), per_device_batch_size=4,
                  gradient_accumulation_steps=4, create_scheduler_fn=factory)

    scheduler = scheduler_of(trainer)
    assert scheduler.args == (4, 7, "not a placeholder", 7)
    assert scheduler.optimizer is trainer.optimizer
    assert scheduler.kwargs == {
        "epochs": 4, "steps": 3, "local_steps": 3, "train_len": 10, "eval_len": 3,
        "expression": 7, "reflected": 21, "chained": 15, "plain": 5,
    }
    assert all(type(v) is int for v in scheduler.kwargs.values() if not isinstance(v, str))
    assert scheduler.steps == 4 * 3


def test_placeholders_in_a_nested_partial() -> None:
    inner = functools.partial(recorded, epochs=P.NUM_EPOCHS)
    inner.tag = "nested"  # type: ignore[attr-defined]  # with attributes, CPython does not flatten the partials
    outer = functools.partial(inner, steps=P.NUM_UPDATE_STEPS_PER_EPOCH + 2)
    assert isinstance(outer.func, functools.partial)
    trainer, _ = make_trainer()
    trainer.train(regression_data(n=24), 2, per_device_batch_size=4, gradient_accumulation_steps=2,
                  create_scheduler_fn=outer)
    assert scheduler_of(trainer).kwargs == {"epochs": 2, "steps": 5}


def test_num_epochs_placeholder_follows_max_num_train_steps() -> None:
    """With max_num_train_steps the run has ceil(max / updates per epoch) epochs, as the scheduler sees."""
    trainer, events = make_trainer()
    trainer.train(regression_data(n=24), 1, per_device_batch_size=4, max_num_train_steps=14,
                  create_scheduler_fn=recording_factory(events, epochs=P.NUM_EPOCHS,
                                                        steps=P.NUM_UPDATE_STEPS_PER_EPOCH))
    assert scheduler_of(trainer).kwargs == {"epochs": 3, "steps": 6}
    assert events.count("optimizer") == events.count("scheduler") == 14


def test_product_of_two_placeholders_resolves() -> None:
    factory = recording_factory(None, total=P.NUM_EPOCHS * P.NUM_UPDATE_STEPS_PER_EPOCH)
    trainer, _ = make_trainer()
    trainer.train(regression_data(n=38), 3, per_device_batch_size=4, gradient_accumulation_steps=4,
                  create_scheduler_fn=factory)
    assert scheduler_of(trainer).kwargs == {"total": 9}


def _final_one_cycle_lr(max_lr: float) -> float:
    # OneCycleLR defaults: initial_lr = max_lr / 25, final lr = initial_lr / 1e4 (cosine annealing)
    return max_lr / 25.0 / 1e4


@pytest.mark.parametrize(("n", "b", "k"), [(24, 4, 1), (40, 4, 3), (38, 4, 4)])
def test_one_cycle_with_epochs_and_steps_per_epoch_runs_to_its_end(n: int, b: int, k: int) -> None:
    factory = functools.partial(OneCycleLR, max_lr=0.1, epochs=P.NUM_EPOCHS,
                                steps_per_epoch=P.NUM_UPDATE_STEPS_PER_EPOCH)
    trainer, events = make_trainer()
    trainer.train(regression_data(n=n), 3, per_device_batch_size=b, gradient_accumulation_steps=k,
                  create_scheduler_fn=factory)
    scheduler = trainer.scheduler
    assert isinstance(scheduler, OneCycleLR)
    assert scheduler.total_steps == events.count("optimizer")
    assert scheduler.last_epoch == scheduler.total_steps
    # the last update used the schedule's final learning rate (the lr after it is past the end)
    assert len(events.lrs) == scheduler.total_steps
    assert events.lrs[-1] == pytest.approx(_final_one_cycle_lr(0.1), rel=1e-3)
    assert max(events.lrs) == pytest.approx(0.1, rel=0.2)


@pytest.mark.parametrize(("n", "b", "k"), [(24, 4, 1), (40, 4, 3), (38, 4, 4)])
def test_one_cycle_with_total_steps_product_runs_to_its_end(n: int, b: int, k: int) -> None:
    factory = functools.partial(OneCycleLR, max_lr=0.1,
                                total_steps=P.NUM_EPOCHS * P.NUM_UPDATE_STEPS_PER_EPOCH)
    trainer, events = make_trainer()
    trainer.train(regression_data(n=n), 3, per_device_batch_size=b, gradient_accumulation_steps=k,
                  create_scheduler_fn=factory)
    scheduler = trainer.scheduler
    assert isinstance(scheduler, OneCycleLR)
    assert scheduler.total_steps == events.count("optimizer")
    assert scheduler.last_epoch == scheduler.total_steps
    # the last update used the schedule's final learning rate (the lr after it is past the end)
    assert len(events.lrs) == scheduler.total_steps
    assert events.lrs[-1] == pytest.approx(_final_one_cycle_lr(0.1), rel=1e-3)
    assert max(events.lrs) == pytest.approx(0.1, rel=0.2)


def test_one_cycle_with_total_steps_expression_runs_to_its_end() -> None:
    """The single-placeholder spelling of the same schedule (3 epochs written as a literal factor)."""
    factory = functools.partial(OneCycleLR, max_lr=0.1, total_steps=P.NUM_UPDATE_STEPS_PER_EPOCH * 3)
    trainer, events = make_trainer()
    trainer.train(regression_data(n=40), 3, per_device_batch_size=4, gradient_accumulation_steps=3,
                  create_scheduler_fn=factory)
    scheduler = trainer.scheduler
    assert isinstance(scheduler, OneCycleLR)
    assert scheduler.total_steps == events.count("optimizer") == 12
    # the last update used the schedule's final learning rate (the lr after it is past the end)
    assert len(events.lrs) == scheduler.total_steps
    assert events.lrs[-1] == pytest.approx(_final_one_cycle_lr(0.1), rel=1e-3)
    assert max(events.lrs) == pytest.approx(0.1, rel=0.2)


# ---------------------------------------------------------------------------------- max_num_train_steps
class CountingTrainer(DefaultTrainer[Batch]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.micro_batches = 0
        self.optimizer_steps = 0

    @override
    def calculate_train_batch_loss(self, batch: Batch) -> BatchOutput:
        self.micro_batches += 1
        return super().calculate_train_batch_loss(batch)

    @override
    def optimizer_step(self) -> None:
        self.optimizer_steps += 1
        super().optimizer_step()


# (samples, batch size, accumulation, max steps, num_epochs, expected micro-batches)
MAX_STEP_CASES = [
    (24, 4, 1, 7, 1, 7),     # 6 updates per epoch: 7 > num_epochs * 6, max steps wins
    (24, 4, 1, 2, 10, 2),    # stops inside the first epoch although 10 epochs were asked for
    (24, 4, 1, 12, 5, 12),   # an exact multiple of the updates per epoch
    (40, 4, 3, 6, 1, 16),    # 4 updates per epoch (windows 3, 3, 3, 1): 10 + 6 micro-batches
    (40, 4, 3, 9, 1, 23),    # 2 full epochs (8 updates) + one window of 3
    (38, 4, 4, 5, 20, 18),   # 3 updates per epoch (windows 4, 4, 2): 10 + 8 micro-batches
    (24, 4, 1, 3, None, 3),  # num_epochs may be None when max_num_train_steps is given
]


@pytest.mark.parametrize(("n", "b", "k", "max_steps", "epochs", "micro_batches"), MAX_STEP_CASES)
def test_max_num_train_steps_stops_after_exactly_n_updates(
    n: int, b: int, k: int, max_steps: int, epochs: int | None, micro_batches: int
) -> None:
    model = mlp(hidden=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    events = Events()
    events.watch_optimizer(optimizer)
    trainer = CountingTrainer(model, nn.MSELoss(), optimizer, callbacks=QUIET)
    trainer.train(regression_data(n=n), epochs, per_device_batch_size=b, gradient_accumulation_steps=k,
                  max_num_train_steps=max_steps, create_scheduler_fn=recording_factory(events))

    per_epoch = -(-(-(-n // b)) // k)
    assert trainer.optimizer_steps == max_steps
    assert events.count("optimizer") == max_steps
    assert scheduler_of(trainer).steps == max_steps
    assert trainer.micro_batches == micro_batches
    assert trainer.run_config.max_num_train_steps == max_steps
    assert trainer.run_config.num_epochs == math.ceil(max_steps / per_epoch)
    epochs_run = trainer.run_history.get_metric_values("train_loss_epoch")
    assert len(epochs_run) == math.ceil(max_steps / per_epoch)


def test_max_num_train_steps_callback_events_stop_with_the_run() -> None:
    """No step of the epoch runs after the last update: on_train_step_end is seen once per micro-batch."""
    seen: list[int] = []

    class StepRecorder(TrainerCallback):
        @override
        def on_train_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, batch: Any, step: int,
                              **kwargs: Any) -> None:
            seen.append(step)

    model = mlp(hidden=8)
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05),
                             callbacks=(StepRecorder(),))
    trainer.train(regression_data(n=40), 1, per_device_batch_size=4, gradient_accumulation_steps=3,
                  max_num_train_steps=5)
    assert seen == list(range(10)) + [0, 1, 2]


def test_checkpoints_before_the_first_training_run_have_no_scheduler(tmp_path: Path) -> None:
    """No scheduler exists before train(): checkpoints save and load without one, and a checkpoint
    with scheduler state needs load_scheduler=False until then."""
    model = mlp()
    fresh = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=QUIET)
    fresh.save_checkpoint(tmp_path / "fresh.pt")
    assert "scheduler_state_dict" not in torch.load(tmp_path / "fresh.pt", weights_only=True)
    fresh.load_checkpoint(tmp_path / "fresh.pt")

    trained_model = mlp()
    trained = DefaultTrainer(trained_model, nn.MSELoss(), torch.optim.SGD(trained_model.parameters(), lr=0.1),
                             callbacks=QUIET)
    trained.train(regression_data(8), 1, per_device_batch_size=4,
                  create_scheduler_fn=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1))
    trained.save_checkpoint(tmp_path / "trained.pt")
    with pytest.raises(CheckpointError, match="has scheduler_state_dict but the trainer has none; "
                                              "pass load_scheduler=False"):
        fresh.load_checkpoint(tmp_path / "trained.pt")
    fresh.load_checkpoint(tmp_path / "trained.pt", load_scheduler=False)
