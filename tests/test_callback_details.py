"""Details of the callback toolbox that users see: messages, argument bounds, resumed counts, duck-typed
trainers, settings a callback passes on. Found by mutation testing (``tools/mutation.py``); the broad
behaviours are in ``tests/test_callbacks_toolbox.py``, whose tiny runs these reuse (8 batches per epoch).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from typing_extensions import override

from pta import BatchOutput, TrainerCallback
from pta.callbacks import (
    CallbackHandler,
    ConvertSyncBatchNormCallback,
    EarlyStoppingCallback,
    LimitBatchesCallback,
    LimitEvalStepsCallback,
    ModelEmaCallback,
    NonFiniteLossError,
    MoveModulesToDeviceCallback,
    SaveBestModelCallback,
    SaveTrainingStateCallback,
    StepBasedEvaluationCallback,
    StopTrainingError,
    TerminateOnNaNCallback,
    WSDCheckpointCallback,
)
from pta.checkpoint import load_torch_file
from pta.protocols import TrainerLike
from pta.state import META_FILE, rank_file
from tests.test_callbacks_toolbox import (
    AlwaysDistributed,
    CountingEma,
    EvalSpy,
    ScriptedMetric,
    StepCounter,
    Wrapper,
    bn_model,
    data,
    make_trainer,
    meta,
    step_lr,
    train,
    wsd,
)

EVAL_SET = data(16, seed=1)  # 4 evaluation batches of 4
LOSS_OUTPUT: BatchOutput = {"loss": torch.tensor(0.0)}


# ---------------------------------------------------------------------------------------------- duck-typed trainers
class FakeConfig:
    num_processes = 1
    gradient_accumulation_steps = 2


class BareTrainer:
    """Has only what every trainer has (run_config, print, a model and an update count): none of the
    capabilities some callbacks check for (dataloaders to replace, intermediate and extra evaluations)."""

    run_config = FakeConfig()
    num_updates = 1

    def __init__(self) -> None:
        self.model = nn.Linear(4, 1)
        self.printed: list[str] = []

    def print(self, *args: Any, **kwargs: Any) -> None:
        self.printed.append(" ".join(map(str, args)))


def _limit_batches_training(trainer: Any) -> None:
    LimitBatchesCallback(2).on_training_run_start(trainer)


def _limit_batches_evaluation(trainer: Any) -> None:
    LimitBatchesCallback(2).on_evaluation_run_start(trainer)


def _limit_eval_training(trainer: Any) -> None:
    LimitEvalStepsCallback(2).on_training_run_start(trainer)


def _limit_eval_run_end(trainer: Any) -> None:
    LimitEvalStepsCallback(2).on_training_run_end(trainer)


def _step_eval_training(trainer: Any) -> None:
    StepBasedEvaluationCallback(1).on_training_run_start(trainer)


def _step_eval_step_end(trainer: Any) -> None:
    # A step that ends the first update: an evaluation is due.
    StepBasedEvaluationCallback(1).on_train_step_end(trainer, batch_output=LOSS_OUTPUT, batch=None, step=0)


def _training_states_training(trainer: Any) -> None:
    SaveTrainingStateCallback().on_training_run_start(trainer)


def _training_states_run_end(trainer: Any) -> None:
    SaveTrainingStateCallback(save_at_end=True).on_training_run_end(trainer)


class FakeWSDScheduler:
    decay_phase_ratio = 0.25

    def get_checkpoint_steps(self) -> list[int]:
        return [8]

    def get_decay_info(self) -> Any:
        return None

    def get_phase_info(self, num_updates: int) -> dict[str, Any]:
        return {"pre_decay_step": 6, "period_end": 8}

    def get_current_step(self) -> int:
        return -1


def _wsd_initial_state(trainer: Any) -> None:
    trainer.scheduler, trainer.run_history, trainer.num_updates = FakeWSDScheduler(), History(), 0  # a new run
    Path("initial").mkdir()
    WSDCheckpointCallback(initial_checkpoint="initial").on_training_run_start(trainer)


def _ema_eval_epoch_end(trainer: Any) -> None:
    ModelEmaCallback(evaluate_during_training=True).on_eval_epoch_end(trainer, is_intermediate=False)


@pytest.mark.parametrize(("call", "who", "missing"), [
    (_limit_batches_training, "LimitBatchesCallback", "settable train_dataloader and eval_dataloader"),
    (_limit_batches_evaluation, "LimitBatchesCallback", "settable train_dataloader and eval_dataloader"),
    (_limit_eval_training, "LimitEvalStepsCallback", "settable train_dataloader and eval_dataloader"),
    (_limit_eval_run_end, "LimitEvalStepsCallback", "settable train_dataloader and eval_dataloader"),
    (_step_eval_training, "StepBasedEvaluationCallback", r"run_intermediate_evaluation\(\)"),
    (_step_eval_step_end, "StepBasedEvaluationCallback", r"run_intermediate_evaluation\(\)"),
    (_training_states_training, "SaveTrainingStateCallback", r"save_training_state\(\) and load_training_state\(\)"),
    (_training_states_run_end, "SaveTrainingStateCallback", r"save_training_state\(\) and load_training_state\(\)"),
    (_wsd_initial_state, "WSDCheckpointCallback", r"save_training_state\(\) and load_training_state\(\)"),
    (_ema_eval_epoch_end, "ModelEmaCallback", r"callback_handler and run_evaluation_epoch\(\)"),
])
def test_a_callback_names_itself_and_what_a_trainer_lacks(call: Any, who: str, missing: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Each event that needs more than ``TrainerLike`` checks the trainer it is given, and says which
    callback needs what (a user's own trainer, or a callback called directly in a user's loop)."""
    monkeypatch.chdir(tmp_path)  # default save directories
    with pytest.raises(TypeError, match=rf"^{who} needs a trainer with {missing} .*got BareTrainer$"):
        call(BareTrainer())


# ---------------------------------------------------------------------------------------------- console messages
def printed_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line]


def test_step_based_evaluation_and_eval_limit_messages(capsys: pytest.CaptureFixture[str]) -> None:
    trainer = make_trainer(StepBasedEvaluationCallback(4), LimitEvalStepsCallback(2))
    capsys.readouterr()
    train(trainer, eval_dataset=EVAL_SET, num_epochs=1)  # 8 updates: evaluations after updates 4 and 8
    evaluation = ["Running evaluation after {} optimizer updates", "Limiting evaluation to 2 steps per process",
                  "Resuming training..."]
    assert printed_lines(capsys) == [line.format(4) for line in evaluation] + [line.format(8) for line in evaluation]


@pytest.mark.parametrize("eval_limit_first", [True, False])
def test_limit_eval_steps_and_limit_batches_both_apply_in_either_order(eval_limit_first: bool) -> None:
    """LimitBatchesCallback wraps the eval dataloader again when it comes after LimitEvalStepsCallback;
    the evaluation limit must still hold (it used to be dropped silently)."""
    spy, counter = EvalSpy(), StepCounter()
    limits: list[TrainerCallback] = [LimitEvalStepsCallback(2, limit_intermediate_only=False), LimitBatchesCallback(3)]
    trainer = make_trainer(*(limits if eval_limit_first else limits[::-1]), spy, counter)
    train(trainer, eval_dataset=data(32, seed=1), num_epochs=1)  # 8 eval batches
    assert counter.train_steps == [3] and [e["steps"] for e in spy.evals] == [2]
    spy.evals.clear()
    trainer.evaluate(data(32, seed=1), per_device_batch_size=4)
    assert [e["steps"] for e in spy.evals] == [2]


# ---------------------------------------------------------------------------------------------- resumed counts
class SaveStateAfter(TrainerCallback):
    """Saves a training state after the ``at``-th training step (counted from 1) of the run."""

    def __init__(self, directory: Path, at: int) -> None:
        self.directory, self.at, self.seen = directory, at, 0

    @override
    def on_train_step_end(
        self, trainer: TrainerLike, *, batch_output: BatchOutput, batch: Any, step: int, **kwargs: Any
    ) -> None:
        self.seen += 1
        if self.seen == self.at:
            save = getattr(trainer, "save_training_state")
            save(self.directory)


def test_step_based_evaluation_continues_the_update_count_after_a_resume(tmp_path: Path) -> None:
    """Accumulation 2: 4 updates per epoch. The state after batch 4 holds 2 updates; the resumed run
    evaluates after updates 4, 6 and 8 only (its first batch does not end an update)."""
    train(make_trainer(SaveStateAfter(tmp_path / "state", at=4)), gradient_accumulation_steps=2)
    spy = EvalSpy()
    resumed = make_trainer(StepBasedEvaluationCallback(2), spy)
    train(resumed, eval_dataset=EVAL_SET, gradient_accumulation_steps=2, resume_from=tmp_path / "state")
    assert [e["updates"] for e in spy.evals if e["intermediate"]] == [4, 6, 8]


# ---------------------------------------------------------------------------------------------- ModelEma
@pytest.mark.parametrize("decay", [0.0, 0.5, 1.0])
def test_model_ema_accepts_every_decay_in_the_closed_unit_interval(decay: float) -> None:
    assert ModelEmaCallback(decay=decay).decay == decay


@pytest.mark.parametrize("decay", [-0.1, 1.01, 1.5, 2.0, 2.5])
def test_model_ema_rejects_a_decay_outside_the_unit_interval(decay: float) -> None:
    with pytest.raises(ValueError, match=rf"^decay must be in \[0, 1\], got {decay!r}$"):
        ModelEmaCallback(decay=decay)


def test_model_ema_names_the_missing_eval_set_and_the_way_out(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^ModelEmaCallback\(evaluate_during_training=True\) needs an eval_dataset "
                                         r"passed to train\(\); pass evaluate_during_training=False to only save "
                                         r"the EMA after each epoch$"):
        train(make_trainer(ModelEmaCallback(save_path=tmp_path / "ema.pt")))


def saved(path: Path) -> dict[str, Any]:
    checkpoint: dict[str, Any] = torch.load(path, weights_only=True)
    return checkpoint


@pytest.mark.parametrize("evaluate", [True, False])
def test_model_ema_saves_neither_optimizer_nor_scheduler(tmp_path: Path, evaluate: bool) -> None:
    """The EMA file holds the EMA's weights (and the watched value): the run's optimizer and scheduler
    states belong to the model, not to its EMA."""
    callback = ModelEmaCallback(evaluate_during_training=evaluate, save_path=tmp_path / "ema.pt")
    train(make_trainer(callback), eval_dataset=EVAL_SET, create_scheduler_fn=step_lr)
    expected = {"model_state_dict", "ema_model_eval_loss_epoch", "epoch"} if evaluate else {"model_state_dict"}
    assert set(saved(tmp_path / "ema.pt")) == expected


def test_model_ema_honours_greater_is_better(tmp_path: Path) -> None:
    callback = ModelEmaCallback(watch_metric="score", greater_is_better=True, save_path=tmp_path / "ema.pt")
    train(make_trainer(ScriptedMetric([1.0, 3.0, 2.0]), callback), num_epochs=3, eval_dataset=EVAL_SET)
    checkpoint = saved(tmp_path / "ema.pt")
    assert (checkpoint["score"], checkpoint["epoch"]) == (3.0, 2)
    assert callback.best_metric == 3.0


class NextValue(TrainerCallback):
    """Records the next of ``values`` as ``score`` at the end of each epoch, across runs."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    @override
    def on_training_run_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        trainer.run_history.update_metric("score", self.values.pop(0))


def test_model_ema_keeps_its_best_value_across_training_runs(tmp_path: Path) -> None:
    """As in pytorch-accelerated (``reset_on_train=False``): a later run of the same trainer saves its EMA
    only when it beats the best value of the earlier runs."""
    callback = ModelEmaCallback(watch_metric="score", save_path=tmp_path / "ema.pt")
    trainer = make_trainer(NextValue(1.0, 2.0, 0.5), callback)
    train(trainer, num_epochs=1, eval_dataset=EVAL_SET)
    train(trainer, num_epochs=1, eval_dataset=EVAL_SET)  # 2.0 is worse than 1.0: not saved
    assert saved(tmp_path / "ema.pt")["score"] == 1.0 and callback.best_metric == 1.0
    train(trainer, num_epochs=1, eval_dataset=EVAL_SET)
    assert saved(tmp_path / "ema.pt")["score"] == 0.5


def ema_losses(trainer: Any) -> list[float]:
    values: list[float] = trainer.run_history.get_metric_values("ema_model_eval_loss_epoch")
    return values


def test_model_ema_evaluates_only_after_end_of_epoch_evaluations(tmp_path: Path) -> None:
    """Not after intermediate evaluations, and never with ``evaluate_during_training=False``."""
    during = ModelEmaCallback(save_path=tmp_path / "ema.pt")
    trainer = make_trainer(StepBasedEvaluationCallback(2), during)
    train(trainer, eval_dataset=EVAL_SET)  # 8 intermediate evaluations, 2 end-of-epoch ones
    assert len(trainer.run_history.get_metric_values("intermediate_eval_loss")) == 8
    assert len(ema_losses(trainer)) == 2
    after = make_trainer(ModelEmaCallback(evaluate_during_training=False, save_path=tmp_path / "ema2.pt"))
    train(after, eval_dataset=EVAL_SET)
    assert len(after.run_history.get_metric_values("eval_loss_epoch")) == 2 and ema_losses(after) == []


class EndEvalEpochWithoutFlag(TrainerCallback):
    """Calls ``ema.on_eval_epoch_end(trainer)`` as a pytorch-accelerated-style trainer would, without
    ``is_intermediate``, once per training epoch."""

    def __init__(self, ema: ModelEmaCallback) -> None:
        self.ema = ema

    @override
    def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.ema.on_eval_epoch_end(trainer)


def test_model_ema_takes_an_eval_epoch_end_without_flag_as_an_end_of_epoch_evaluation(tmp_path: Path) -> None:
    """``TrainerCallback.on_eval_epoch_end``'s default: ``is_intermediate=False``."""
    ema = ModelEmaCallback(save_path=tmp_path / "ema.pt")
    trainer = make_trainer(ema, EndEvalEpochWithoutFlag(ema))
    train(trainer, eval_dataset=EVAL_SET)
    assert len(ema_losses(trainer)) == 4  # the direct call's and the epoch's own, each epoch


class UpdateCountless:
    """A duck-typed trainer without an update count: callbacks fall back to the accumulation windows."""

    run_config = FakeConfig()  # accumulation 2
    train_dataloader = [0] * 5  # the last window is short
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.model = nn.Linear(4, 1)

    def get_model(self, keep_torch_compile: bool = True) -> nn.Module:
        return self.model


def test_model_ema_updates_once_per_window_with_a_trainer_without_update_count() -> None:
    CountingEma.updates = 0
    callback = ModelEmaCallback(evaluate_during_training=False, model_ema=CountingEma)
    trainer: Any = UpdateCountless()
    callback.on_training_run_start(trainer)
    for step in range(5):
        callback.on_train_step_end(trainer, batch_output=LOSS_OUTPUT, batch=None, step=step)
    assert CountingEma.updates == 3  # after batches 2, 4 and 5


# ---------------------------------------------------------------------------------------------- SyncBatchNorm
@pytest.mark.parametrize(("world_size", "converted"), [(1, False), (2, True), (4, True)])
def test_sync_batchnorm_converts_from_two_processes_on(monkeypatch: pytest.MonkeyPatch, world_size: int,
                                                       converted: bool) -> None:
    def get_world_size(group: object = None) -> int:
        return world_size

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", get_world_size)
    trainer: Any = BareTrainer()
    trainer.model = bn_model()
    ConvertSyncBatchNormCallback().on_init_end(trainer)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in trainer.model.modules()) == converted


# ---------------------------------------------------------------------------------------------- MoveModulesToDevice
class WithTeacher:
    def __init__(self) -> None:
        self.device = torch.device("meta")
        self.model = nn.Linear(4, 1)
        self.teacher = nn.Linear(4, 1)
        self.not_a_module = Tensor([1.0])


@pytest.mark.parametrize("event", ["on_training_run_start", "on_evaluation_run_start"])
def test_move_modules_to_device_moves_every_module_but_the_model(event: str) -> None:
    trainer: Any = WithTeacher()
    getattr(MoveModulesToDeviceCallback(), event)(trainer)
    assert trainer.teacher.weight.device.type == "meta"
    assert trainer.model.weight.device.type == "cpu" and trainer.not_a_module.device.type == "cpu"


# ---------------------------------------------------------------------------------------------- EarlyStopping
def test_early_stopping_reports_each_decision(capsys: pytest.CaptureFixture[str]) -> None:
    callback = EarlyStoppingCallback(early_stopping_patience=2, early_stopping_threshold=0.5, watch_metric="score")
    trainer = make_trainer(ScriptedMetric([4.0, 3.0, 3.75, 3.5, 1.0]), callback)
    capsys.readouterr()
    train(trainer, num_epochs=5)
    assert printed_lines(capsys) == [
        "Improvement of 1.0 observed, resetting counter.", "Early stopping counter: 0/2",  # 3.0 beats 4.0 by 1.0
        "No improvement above threshold observed, incrementing counter.", "Early stopping counter: 1/2",
        "No improvement above threshold observed, incrementing counter.", "Early stopping counter: 2/2",
        "Stopping training due to no improvement of score after 2 epochs",
    ]
    assert (callback.best_metric, callback.early_stopping_patience_counter) == (3.0, 2)


# ---------------------------------------------------------------------------------------------- SaveBestModel
def test_save_best_reports_what_it_loads_at_the_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    best = SaveBestModelCallback(tmp_path / "best.pt", watch_metric="score")
    trainer = make_trainer(ScriptedMetric([2.0, 1.0, 1.5]), best)
    capsys.readouterr()
    train(trainer, num_epochs=3)
    assert printed_lines(capsys) == ["Loading checkpoint with score: 1.0 from epoch 2"]
    never = make_trainer(ScriptedMetric([math.nan]), SaveBestModelCallback(tmp_path / "never.pt", watch_metric="score"))
    capsys.readouterr()
    train(never, num_epochs=1)
    assert printed_lines(capsys) == ["No checkpoint was saved for score in this run; keeping the current weights"]


@pytest.mark.parametrize("threshold", [0.0, 0.01, 5.0])
def test_early_stopping_accepts_any_finite_threshold_from_zero(threshold: float) -> None:
    assert EarlyStoppingCallback(early_stopping_threshold=threshold).early_stopping_threshold == threshold


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"early_stopping_patience": 0}, "early_stopping_patience must be a positive integer, got 0"),
    ({"early_stopping_patience": 1.5}, "early_stopping_patience must be a positive integer, got 1.5"),
    ({"early_stopping_threshold": -0.5}, "early_stopping_threshold must be a finite number >= 0, got -0.5"),
    ({"early_stopping_threshold": math.inf}, "early_stopping_threshold must be a finite number >= 0, got inf"),
    ({"early_stopping_threshold": math.nan}, "early_stopping_threshold must be a finite number >= 0, got nan"),
])
def test_early_stopping_names_a_bad_setting(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        EarlyStoppingCallback(**kwargs)
    assert str(raised.value) == message


# ---------------------------------------------------------------------------------------------- SaveTrainingState
def test_save_training_state_accepts_none_for_every_interval() -> None:
    callback = SaveTrainingStateCallback(save_every_n_epochs=None, save_every_n_steps=None, max_checkpoints=None)
    assert (callback.save_every_n_epochs, callback.save_every_n_steps, callback.max_checkpoints) == (None, None, None)


@pytest.mark.parametrize("name", ["save_every_n_epochs", "save_every_n_steps", "max_checkpoints"])
@pytest.mark.parametrize("value", [0, -1, 1.5])
def test_save_training_state_names_a_bad_interval(name: str, value: float) -> None:
    kwargs: dict[str, Any] = {name: value}  # untyped callers: the type checkers reject these values
    with pytest.raises(ValueError) as raised:
        SaveTrainingStateCallback(**kwargs)
    assert str(raised.value) == f"{name} must be a positive integer or None, got {value!r}"


def test_save_training_state_reports_saves_and_removals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trainer = make_trainer(SaveTrainingStateCallback(tmp_path, save_every_n_steps=3, max_checkpoints=2))
    capsys.readouterr()
    train(trainer)  # 16 updates: step_3 ... step_15, then final
    saved_names = [f"step_{n}" for n in range(3, 16, 3)] + ["final"]
    expected: list[str] = []
    for index, name in enumerate(saved_names):
        expected.append(f"Saved training state to {tmp_path / name}")
        if index >= 2:
            expected.append(f"Removed old training state: {tmp_path / saved_names[index - 2]}")
    assert printed_lines(capsys) == expected
    assert {child.name for child in tmp_path.iterdir()} == {"step_15", "final"}


def test_save_training_state_records_the_update_count_as_global_step(tmp_path: Path) -> None:
    """``checkpoint_kwargs={"global_step": updates}``: ``load_training_state`` returns it (as pa's does)."""
    train(make_trainer(SaveTrainingStateCallback(tmp_path, save_every_n_steps=5)))
    for name, updates in (("step_5", 5), ("step_10", 10), ("final", 16)):
        assert load_torch_file(rank_file(tmp_path / name, 0), weights_only=False)["user"] == {"global_step": updates}


@pytest.mark.parametrize("callback", [EarlyStoppingCallback(watch_metric="score"),
                                      SaveBestModelCallback(watch_metric="score")])
def test_a_missing_watched_metric_names_the_callback_and_the_fix(callback: TrainerCallback) -> None:
    with pytest.raises(ValueError) as raised:
        train(make_trainer(callback), num_epochs=1)
    assert str(raised.value) == (
        f"{type(callback).__name__} watches 'score', which has no recorded value (recorded: ['train_loss_epoch']); "
        "pass an eval_dataset to train() for eval_loss_epoch, or choose another watch_metric")


def test_save_best_forgets_the_best_value_of_an_earlier_run_by_default(tmp_path: Path) -> None:
    """``reset_on_train=True``: each training run saves (and loads) its own best model."""
    callback = SaveBestModelCallback(tmp_path / "best.pt", watch_metric="score")
    trainer = make_trainer(NextValue(1.0, 2.0), callback)
    train(trainer, num_epochs=1)
    train(trainer, num_epochs=1)  # 2.0 is worse than the first run's 1.0, but the best of this run
    assert saved(tmp_path / "best.pt")["score"] == 2.0 and callback.best_metric == 2.0


def test_sync_batchnorm_explains_how_to_convert_a_model_assigned_later() -> None:
    trainer = make_trainer(AlwaysDistributed(), model=bn_model())
    trainer.model = nn.Sequential(*[nn.BatchNorm1d(4) for _ in range(6)])
    with pytest.raises(RuntimeError) as raised:
        AlwaysDistributed().on_training_run_start(trainer)
    assert str(raised.value) == (
        "ConvertSyncBatchNormCallback: the model has BatchNorm layers that are not SyncBatchNorm (0, 1, 2, 3, 4, ...): "
        "it was assigned to trainer.model after the trainer was constructed, and it is already wrapped for distributed "
        "training. Convert it with torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) before assigning it.")


class CompiledOnMeta:
    """A trainer whose model is wrapped (``Wrapper`` stands for ``torch.compile``'s, which takes seconds to
    import) and whose device is ``meta``."""

    device = torch.device("meta")

    def __init__(self) -> None:
        self.model = nn.Linear(4, 1)

    def get_model(self, keep_torch_compile: bool = True) -> nn.Module:
        return Wrapper(self.model) if keep_torch_compile else self.model


def test_model_ema_copies_the_unwrapped_model_onto_the_trainers_device() -> None:
    callback = ModelEmaCallback(evaluate_during_training=False)
    trainer: Any = CompiledOnMeta()
    callback.on_training_run_start(trainer)
    assert callback.ema_model is not None
    state = callback.ema_model.module.state_dict()
    assert set(state) == {"weight", "bias"} and all(value.device.type == "meta" for value in state.values())


def test_model_ema_continues_its_update_count_after_a_resume(tmp_path: Path) -> None:
    """Accumulation 2, resumed after batch 4 (update 2): the EMA is updated after updates 3 to 8 only, not
    after the resumed run's first batch, which ends no update."""
    def ema() -> ModelEmaCallback:
        return ModelEmaCallback(evaluate_during_training=False, save_path=tmp_path / "ema.pt", model_ema=CountingEma)

    train(make_trainer(ema(), SaveStateAfter(tmp_path / "state", at=4)), gradient_accumulation_steps=2)
    CountingEma.updates = 0
    train(make_trainer(ema()), gradient_accumulation_steps=2, resume_from=tmp_path / "state")
    assert CountingEma.updates == 6


def test_save_training_state_saves_again_under_an_existing_name(tmp_path: Path) -> None:
    """A second run into the same directory writes ``final`` again (and counts it as the newest state)."""
    for _ in range(2):
        train(make_trainer(SaveTrainingStateCallback(tmp_path, max_checkpoints=1)), num_epochs=1)
    assert {child.name for child in tmp_path.iterdir()} == {"final"}


def test_save_training_state_continues_the_update_count_after_a_resume(tmp_path: Path) -> None:
    """Accumulation 2, resumed after batch 4 (update 2): states after updates 4, 6, 8, not another step_2."""
    train(make_trainer(SaveStateAfter(tmp_path / "state", at=4)), gradient_accumulation_steps=2)
    callback = SaveTrainingStateCallback(tmp_path / "resumed", save_every_n_steps=2, save_at_end=False)
    train(make_trainer(callback), gradient_accumulation_steps=2, resume_from=tmp_path / "state")
    assert {child.name for child in (tmp_path / "resumed").iterdir()} == {"step_4", "step_6", "step_8"}


class StateWriter(BareTrainer):
    """Writes an empty state directory for each ``save_training_state``; one process of several."""

    def __init__(self, main: bool) -> None:
        super().__init__()
        self.is_world_main_process = main
        self.num_updates = 0

    def save_training_state(self, output_dir: str | Path, checkpoint_kwargs: dict[str, Any] | None = None) -> Path:
        directory = Path(output_dir)
        directory.mkdir(parents=True)
        (directory / META_FILE).write_text("{}")
        return directory

    def load_training_state(self, input_dir: str | Path) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize("main", [True, False])
def test_only_the_main_process_removes_old_training_states(tmp_path: Path, main: bool) -> None:
    callback = SaveTrainingStateCallback(tmp_path, save_every_n_steps=1, save_at_end=False, max_checkpoints=1)
    trainer: Any = StateWriter(main)
    callback.on_training_run_start(trainer)
    for step in range(3):
        trainer.num_updates = step + 1
        callback.on_train_step_end(trainer, step=step)
    remaining = {child.name for child in tmp_path.iterdir()}
    assert remaining == ({"step_3"} if main else {"step_1", "step_2", "step_3"})


# ---------------------------------------------------------------------------------------------- TerminateOnNaN
class History:
    current_epoch = 1

    def _set_epoch(self, epoch: int) -> None:
        self.current_epoch = epoch


class NoLossMeter(BareTrainer):
    """A trainer without pta's running loss sums: the callback keeps a sum of its own. Records the devices
    of the tensors it gathers (``meta`` stands for an accelerator: collectives need tensors there)."""

    def __init__(self, device: str, num_processes: int = 1) -> None:
        super().__init__()
        self.device = torch.device(device)
        self.run_config = FakeConfig()
        self.run_config.num_processes = num_processes  # more than one: the NaN check gathers its flag
        self.run_history = History()
        self.gathered: list[str] = []

    def gather(self, tensor: Tensor, padding_value: float | None = None) -> Tensor:
        self.gathered.append(tensor.device.type)
        return torch.zeros(tensor.shape, dtype=tensor.dtype) if tensor.device.type == "meta" else tensor


def test_terminate_on_nan_keeps_its_own_sum_for_a_trainer_without_one() -> None:
    callback = TerminateOnNaNCallback(check_every_n_steps=2)
    trainer: Any = NoLossMeter("cpu")
    callback.on_training_run_start(trainer)
    callback.on_train_epoch_start(trainer)
    callback.on_train_step_end(trainer, batch_output={"loss": torch.tensor(1.0)})
    message = "The training loss became NaN or infinite in epoch 1 (at or before step 2 of the epoch)"
    with pytest.raises(StopTrainingError, match=rf"^Stopping training: {re.escape(message)}$"):
        callback.on_train_step_end(trainer, batch_output={"loss": torch.tensor(math.nan)})
    with pytest.raises(NonFiniteLossError, match=rf"^{re.escape(message)}$"):
        callback.on_training_run_end(trainer)


def test_terminate_on_nan_checks_an_epoch_without_steps_on_the_trainers_device() -> None:
    callback = TerminateOnNaNCallback()
    trainer: Any = NoLossMeter("meta", num_processes=2)
    callback.on_training_run_start(trainer)
    callback.on_train_epoch_start(trainer)
    callback.on_train_epoch_end(trainer)  # nothing summed: nothing to stop for
    assert trainer.gathered == ["meta"] and not callback.triggered


# ---------------------------------------------------------------------------------------------- WSD
class ContinuationSpy(TrainerCallback):
    """Saves training states at the run's start and before its first batch; records the first epoch's
    batch losses."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.losses: list[float] = []

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        getattr(trainer, "save_training_state")(self.directory / "run_start")

    @override
    def on_train_epoch_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if trainer.run_history.current_epoch == 1:
            getattr(trainer, "save_training_state")(self.directory / "epoch_start")

    @override
    def on_train_step_end(
        self, trainer: TrainerLike, *, batch_output: BatchOutput, batch: Any, step: int, **kwargs: Any
    ) -> None:
        if trainer.run_history.current_epoch == 1:
            self.losses.append(float(batch_output["loss"].detach()))


@pytest.mark.parametrize("initial", ["states/epoch_1", "wsd_first/checkpoint_6_wsd_pre_decay"])
def test_wsd_initial_training_state_starts_a_run_with_nothing_of_the_old_one(tmp_path: Path, initial: str) -> None:
    """A state saved at the end of epoch 1 (before its evaluation), or in the middle of it (WSD's own pre-decay
    state), as initial_checkpoint: the new run keeps the weights, optimizer and scheduler, but its position,
    history and loss sums are its own."""
    states = SaveTrainingStateCallback(tmp_path / "states", save_every_n_epochs=1, save_at_end=False)
    train(make_trainer(states, WSDCheckpointCallback(tmp_path / "wsd_first")), create_scheduler_fn=wsd())
    spy = ContinuationSpy(tmp_path / "start")
    callback = WSDCheckpointCallback(tmp_path / "wsd", initial_checkpoint=tmp_path / initial)
    trainer = make_trainer(callback, spy)
    train(trainer, create_scheduler_fn=wsd(is_continuation_from_checkpoint=True))
    for name in ("run_start", "epoch_start"):
        start = meta(tmp_path / "start" / name)
        assert (start["epoch"], start["phase"], start["batches_done"], start["num_updates"]) == (1, "train", 0, 0)
    run_start = load_torch_file(rank_file(tmp_path / "start" / "run_start", 0), weights_only=False)
    assert run_start["train_loss"] == (None, 0)  # no loss sums of the old run
    losses = trainer.run_history.get_metric_values("train_loss_epoch")
    assert len(losses) == 2 and len(spy.losses) == 8
    assert losses[0] == pytest.approx(sum(spy.losses) / 8, rel=1e-6)


def test_wsd_initial_state_with_a_trainer_without_ptas_internals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A duck-typed trainer (no loss sums, a run history without state_dict): the state is loaded, nothing else."""
    monkeypatch.chdir(tmp_path)
    trainer: Any = StateWriter(main=True)
    trainer.scheduler, trainer.run_history = FakeWSDScheduler(), History()
    Path("initial").mkdir()
    WSDCheckpointCallback(initial_checkpoint="initial").on_training_run_start(trainer)
    assert trainer.printed == ["\nLoading checkpoint from initial", "Loaded wsd_pre_decay checkpoint from step None"]


# ---------------------------------------------------------------------------------------------- CallbackHandler
def test_a_misspelled_event_is_named_with_the_closest_event_and_the_way_to_declare_custom_ones() -> None:
    def on_train_epoch_ned(self: TrainerCallback, trainer: TrainerLike, **kwargs: Any) -> None:
        pass

    with pytest.raises(TypeError) as raised:
        type("Typo", (TrainerCallback,), {"on_train_epoch_ned": on_train_epoch_ned})
    assert str(raised.value) == (
        "Typo.on_train_epoch_ned: 'on_train_epoch_ned' is not a callback event; did you mean 'on_train_epoch_end'? "
        "For a custom event of your own, list it in the class attribute custom_events = ('on_train_epoch_ned',) "
        "(names without the on_ prefix need no declaration)")


def test_a_callback_that_is_not_a_trainer_callback_is_named() -> None:
    with pytest.raises(TypeError) as raised:
        CallbackHandler([object()])  # type: ignore[list-item]  # what untyped code may pass
    assert str(raised.value) == "callbacks must be TrainerCallback instances or subclasses, got object"
