"""The callback toolbox: checkpointing, early stopping, EMA, SyncBatchNorm, step-based evaluation, limits, WSD.

Each test pins a behaviour users rely on, most of them one where pytorch-accelerated's callback is wrong
(named in the test's docstring). Runs are tiny: 32 samples in batches of 4 (8 batches per epoch).
"""

from __future__ import annotations

import inspect
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from typing_extensions import override

import pta.callbacks as callbacks_module
from pta import BatchOutput, DefaultTrainer, TrainerCallback
from pta.callbacks import (
    ConvertSyncBatchNormCallback,
    EarlyStoppingCallback,
    LimitBatchesCallback,
    LimitEvalStepsCallback,
    ModelEmaCallback,
    SaveBestModelCallback,
    SaveTrainingStateCallback,
    StepBasedEvaluationCallback,
    StopTrainingError,
    WSDCheckpointCallback,
)
from pta.callbacks._trainer_access import UpdateCounter, updates_done
from pta.checkpoint import CheckpointError
from pta.protocols import TrainerLike
from pta.schedulers import WSDLrScheduler
from pta.utils import ModelEma
from tests._helpers import manual_seed
from tests.distributed._launch import ScenarioLaunch

Batch = list[Tensor]
NO_SHUFFLE: dict[str, Any] = {"shuffle": False}
BATCHES_PER_EPOCH = 8


def data(n: int = 32, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x @ torch.randn(4, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g))


def make_trainer(*callbacks: TrainerCallback, model: nn.Module | None = None,
                 cls: type[DefaultTrainer[Batch]] = DefaultTrainer) -> DefaultTrainer[Batch]:
    manual_seed(0)
    model = model if model is not None else nn.Linear(4, 1)
    return cls(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05), callbacks=callbacks)


def train(trainer: DefaultTrainer[Batch], num_epochs: int = 2, eval_dataset: TensorDataset | None = None,
          **kwargs: Any) -> None:
    trainer.train(data(), num_epochs=num_epochs, eval_dataset=eval_dataset, per_device_batch_size=4,
                  train_dataloader_kwargs=NO_SHUFFLE, **kwargs)


def num_updates(trainer: TrainerLike) -> int:
    count = updates_done(trainer)
    assert count is not None
    return count


def weights(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def eval_loss(model: nn.Module, dataset: TensorDataset) -> float:
    x, y = dataset.tensors
    with torch.no_grad():
        return float(F.mse_loss(model(x), y))


class ScriptedMetric(TrainerCallback):
    """Records ``values[epoch - 1]`` as ``name`` at the end of each epoch (place it before the callback under test)."""

    def __init__(self, values: Sequence[float], name: str = "score") -> None:
        self.values, self.name = list(values), name

    @override
    def on_training_run_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        trainer.run_history.update_metric(self.name, self.values[trainer.run_history.current_epoch - 1])


class Snapshots(TrainerCallback):
    """Model weights at each epoch end and after each optimizer update; stop after ``stop_after_updates``."""

    def __init__(self, stop_after_updates: int | None = None) -> None:
        self.epochs: list[dict[str, Tensor]] = []
        self.updates: dict[int, dict[str, Tensor]] = {}
        self.stop_after_updates = stop_after_updates

    @override
    def on_train_step_end(
        self, trainer: TrainerLike, *, batch_output: BatchOutput, batch: Any, step: int, **kwargs: Any
    ) -> None:
        count = num_updates(trainer)
        if count not in self.updates:
            self.updates[count] = weights(trainer.get_model())
        if self.stop_after_updates is not None and count >= self.stop_after_updates:
            raise StopTrainingError(f"stopping after {count} updates")

    @override
    def on_training_run_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.epochs.append(weights(trainer.get_model()))


# ---------------------------------------------------------------------------------------------- API
PA_SIGNATURES: dict[str, dict[str, Any]] = {
    "SaveBestModelCallback": {"save_path": "best_model.pt", "watch_metric": "eval_loss_epoch", "greater_is_better": False,
                              "reset_on_train": True, "save_optimizer": True, "save_scheduler": True,
                              "load_saved_checkpoint": True},
    "EarlyStoppingCallback": {"early_stopping_patience": 1, "early_stopping_threshold": 0.01,
                              "watch_metric": "eval_loss_epoch", "greater_is_better": False, "reset_on_train": True},
    "ModelEmaCallback": {"decay": 0.99, "evaluate_during_training": True, "save_path": "ema_model.pt",
                         "watch_metric": "ema_model_eval_loss_epoch", "greater_is_better": False, "model_ema": ModelEma,
                         "callbacks": ()},
    "ConvertSyncBatchNormCallback": {},
    "StepBasedEvaluationCallback": {"eval_every_n_steps": inspect.Parameter.empty},
    "LimitBatchesCallback": {"num_batches": inspect.Parameter.empty},
    "LimitEvalStepsCallback": {"num_eval_steps": inspect.Parameter.empty, "limit_intermediate_only": True},
    "SaveTrainingStateCallback": {"save_dir": "training_states", "save_every_n_epochs": None, "save_every_n_steps": None,
                                  "save_at_end": True, "max_checkpoints": 5,  # pa: None (unbounded)
                                  "background": False},  # pta only, keyword-only
    "WSDCheckpointCallback": {"save_dir": "checkpoints", "save_optimizer": True, "save_scheduler": True,
                              "initial_checkpoint": None},
}


@pytest.mark.parametrize("name", sorted(PA_SIGNATURES))
def test_constructor_parameters_match_pytorch_accelerated(name: str) -> None:
    assert name in callbacks_module.__all__
    parameters = inspect.signature(getattr(callbacks_module, name)).parameters
    assert {p: parameters[p].default for p in parameters} == PA_SIGNATURES[name]


# ---------------------------------------------------------------------------------------------- SaveBestModel
class CheckpointKeys(TrainerCallback):
    """The keys of the checkpoint file after each epoch (place it after SaveBestModelCallback)."""

    def __init__(self, path: Path) -> None:
        self.path, self.keys = path, list[set[str]]()
        self.mtime = 0.0

    @override
    def on_training_run_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if self.path.exists() and self.path.stat().st_mtime_ns != self.mtime:
            self.mtime = self.path.stat().st_mtime_ns
            self.keys.append(set(torch.load(self.path, weights_only=True)))


def step_lr(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.StepLR:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=100)


def test_save_best_writes_the_same_format_every_time(tmp_path: Path) -> None:
    """pa keys the value by watch_metric the first time, "loss" afterwards, and leaves out the scheduler the first time."""
    path = tmp_path / "best.pt"
    spy = CheckpointKeys(path)
    trainer = make_trainer(ScriptedMetric([3.0, 2.0, 1.0]), SaveBestModelCallback(path, watch_metric="score"), spy)
    train(trainer, num_epochs=3, create_scheduler_fn=step_lr)
    expected = {"model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "score", "epoch"}
    assert spy.keys == [expected] * 3
    assert torch.load(path, weights_only=True)["score"] == 1.0


@pytest.mark.parametrize(("save_optimizer", "save_scheduler"), [(False, True), (True, False), (False, False)])
def test_save_best_honours_save_optimizer_and_save_scheduler(tmp_path: Path, save_optimizer: bool,
                                                             save_scheduler: bool) -> None:
    path = tmp_path / "best.pt"
    spy = CheckpointKeys(path)
    callback = SaveBestModelCallback(path, watch_metric="score", save_optimizer=save_optimizer,
                                     save_scheduler=save_scheduler)
    train(make_trainer(ScriptedMetric([3.0, 2.0]), callback, spy), create_scheduler_fn=step_lr)
    assert len(spy.keys) == 2
    for keys in spy.keys:
        assert ("optimizer_state_dict" in keys) == save_optimizer
        assert ("scheduler_state_dict" in keys) == save_scheduler


def test_save_best_loads_the_best_epoch_at_the_end(tmp_path: Path) -> None:
    snapshots = Snapshots()
    callback = SaveBestModelCallback(tmp_path / "best.pt", watch_metric="score", greater_is_better=True)
    trainer = make_trainer(ScriptedMetric([1.0, 3.0, 2.0]), callback, snapshots)
    train(trainer, num_epochs=3)
    assert callback.best_metric == 3.0 and callback.best_metric_epoch == 2
    assert same(weights(trainer.model), snapshots.epochs[1])
    assert not same(snapshots.epochs[1], snapshots.epochs[2])


@pytest.mark.parametrize("how", ["stopped_in_first_epoch", "metric_always_nan"])
def test_save_best_ends_cleanly_when_no_checkpoint_was_written(tmp_path: Path, how: str) -> None:
    """pa's load_saved_checkpoint loads a file that was never written and crashes at the end of the run."""
    path = tmp_path / "best.pt"
    snapshots = Snapshots(stop_after_updates=3 if how == "stopped_in_first_epoch" else None)
    callback = SaveBestModelCallback(path, watch_metric="score")
    trainer = make_trainer(ScriptedMetric([math.nan, math.nan]), callback, snapshots)
    train(trainer)
    assert not path.exists() and not callback.checkpoint_saved
    last = max(snapshots.updates)
    assert same(weights(trainer.model), snapshots.updates[last])  # the run's own weights are kept


def test_save_best_names_a_missing_metric(tmp_path: Path) -> None:
    trainer = make_trainer(SaveBestModelCallback(tmp_path / "best.pt"))
    with pytest.raises(ValueError, match="eval_loss_epoch.*eval_dataset"):
        train(trainer, num_epochs=1)


# ---------------------------------------------------------------------------------------------- EarlyStopping
class Events(TrainerCallback):
    def __init__(self) -> None:
        self.stop_errors = 0

    @override
    def on_stop_training_error(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.stop_errors += 1


@pytest.mark.parametrize(("values", "patience", "greater", "epochs_run"), [
    # threshold 0.5: a gain of exactly 0.5 is not an improvement; small gains add up against the best
    ([4.0, 3.75, 3.5, 3.0, 3.0, 3.0], 2, False, 3),
    ([4.0, 3.75, 3.4, 3.3, 3.3, 3.3], 2, False, 5),  # 3.4 beats 4.0 by 0.6: the counter restarts
    ([4.0, 4.25, 4.75, 5.0, 5.0, 5.0], 2, True, 5),  # 4.75 beats 4.0 by 0.75 (higher is better)
    ([4.0, 4.0, 4.0, 4.0, 4.0, 4.0], 3, False, 4),
    ([math.nan, 4.0, 4.0, 4.0, 4.0, 4.0], 2, False, 4),  # a NaN best is replaced by the first real value
])
def test_early_stopping_patience_and_threshold(values: list[float], patience: int, greater: bool,
                                               epochs_run: int) -> None:
    events = Events()
    callback = EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=0.5,
                                     watch_metric="score", greater_is_better=greater)
    trainer = make_trainer(ScriptedMetric(values), callback, events)
    train(trainer, num_epochs=len(values))
    assert len(trainer.run_history.get_metric_values("score")) == epochs_run
    assert events.stop_errors == (1 if epochs_run < len(values) else 0)
    assert len(trainer.run_history.get_metric_values("train_loss_epoch")) == epochs_run


def test_early_stopping_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="patience"):
        EarlyStoppingCallback(early_stopping_patience=0)
    with pytest.raises(ValueError, match="threshold"):
        EarlyStoppingCallback(early_stopping_threshold=-1.0)


# ---------------------------------------------------------------------------------------------- ModelEma
class CountingEma(ModelEma):
    updates = 0

    @override
    def update(self, model: nn.Module) -> None:
        CountingEma.updates += 1
        super().update(model)


def test_model_ema_updates_after_every_optimizer_update(tmp_path: Path) -> None:
    """pa updates the EMA once per epoch."""
    CountingEma.updates = 0
    snapshots = Snapshots()
    callback = ModelEmaCallback(decay=0.5, evaluate_during_training=False, save_path=tmp_path / "ema.pt",
                                model_ema=CountingEma)
    trainer = make_trainer(snapshots, callback)
    start = weights(trainer.model)
    train(trainer, gradient_accumulation_steps=2)  # 2 epochs of 4 updates
    assert CountingEma.updates == 8 == max(snapshots.updates)
    expected = start
    for count in range(1, 9):
        expected = {k: 0.5 * expected[k] + 0.5 * snapshots.updates[count][k] for k in expected}
    assert callback.ema_model is not None
    ema = weights(callback.ema_model.module)
    assert all(torch.allclose(ema[k], expected[k], atol=1e-6) for k in expected)
    saved = torch.load(tmp_path / "ema.pt", weights_only=True)
    assert set(saved) == {"model_state_dict"}
    assert same(saved["model_state_dict"], ema)


class Modes(TrainerCallback):
    def __init__(self) -> None:
        self.train_modes: list[bool] = []

    @override
    def on_train_step_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.train_modes.append(trainer.model.training)


def test_model_ema_evaluates_the_ema_weights_and_swaps_the_model_back(tmp_path: Path) -> None:
    eval_set = data(16, seed=1)
    modes = Modes()
    callback = ModelEmaCallback(decay=0.5, save_path=tmp_path / "ema.pt")
    trainer = make_trainer(callback, modes)
    model = trainer.model
    train(trainer, eval_dataset=eval_set)
    assert trainer.model is model and all(modes.train_modes)
    assert callback.ema_model is not None
    history = trainer.run_history
    assert len(history.get_metric_values("ema_model_eval_loss_epoch")) == 2
    assert history.get_latest_metric("ema_model_eval_loss_epoch") == pytest.approx(
        eval_loss(callback.ema_model.module, eval_set), rel=1e-5)
    assert history.get_latest_metric("eval_loss_epoch") == pytest.approx(eval_loss(model, eval_set), rel=1e-5)
    assert history.get_latest_metric("eval_loss_epoch") != history.get_latest_metric("ema_model_eval_loss_epoch")
    assert history.metric_name_prefix == ""
    saved = torch.load(tmp_path / "ema.pt", weights_only=True)
    assert "optimizer_state_dict" not in saved and "ema_model_eval_loss_epoch" in saved


class Wrapper(nn.Module):
    """Stands for a distributed wrapper (DDP) that ``ModelEma`` does not know how to look through."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    @override
    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x)
        return out


class WrappingTrainer(DefaultTrainer[Batch]):
    @override
    def prepare_components(self) -> None:
        super().prepare_components()
        self.model = Wrapper(self.model)

    @override
    def get_model(self, keep_torch_compile: bool = True) -> nn.Module:
        model = super().get_model(keep_torch_compile)
        return model.inner if isinstance(model, Wrapper) else model


def test_model_ema_works_on_the_unwrapped_model(tmp_path: Path) -> None:
    callback = ModelEmaCallback(decay=0.5, save_path=tmp_path / "ema.pt")
    trainer = make_trainer(callback, cls=WrappingTrainer)
    train(trainer, eval_dataset=data(16, seed=1))
    assert callback.ema_model is not None
    assert set(weights(callback.ema_model.module)) == {"weight", "bias"}
    assert set(torch.load(tmp_path / "ema.pt", weights_only=True)["model_state_dict"]) == {"weight", "bias"}


def test_model_ema_evaluation_needs_an_eval_set(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="evaluate_during_training=False"):
        train(make_trainer(ModelEmaCallback(save_path=tmp_path / "ema.pt")))


# ---------------------------------------------------------------------------------------------- SyncBatchNorm
def bn_model() -> nn.Module:
    manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))


class AlwaysDistributed(ConvertSyncBatchNormCallback):
    @override
    def is_distributed(self, trainer: TrainerLike) -> bool:
        return True


class RecordPreparedModel(DefaultTrainer[Batch]):
    prepared_layers: ClassVar[list[type[nn.Module]]] = []

    @override
    def prepare_components(self) -> None:
        RecordPreparedModel.prepared_layers = [type(m) for m in self.get_model().modules()]
        super().prepare_components()


def test_sync_batchnorm_converts_before_the_model_is_prepared() -> None:
    """pa converts in on_training_run_start, after the model was wrapped for DDP."""
    model = bn_model()
    trainer = make_trainer(AlwaysDistributed(), model=model, cls=RecordPreparedModel)
    layers = [type(m) for m in trainer.model.modules()]
    assert nn.SyncBatchNorm in layers and nn.BatchNorm1d not in layers
    assert trainer.optimizer is not None
    optimizer_params = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimizer_params == {id(p) for p in trainer.model.parameters()}
    train(trainer, num_epochs=1)  # single process: SyncBatchNorm behaves like BatchNorm
    assert nn.SyncBatchNorm in RecordPreparedModel.prepared_layers


def test_sync_batchnorm_refuses_a_model_assigned_after_construction() -> None:
    trainer = make_trainer(AlwaysDistributed(), model=bn_model())
    trainer.model = bn_model()
    trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.1)  # else train() refuses the optimizer
    with pytest.raises(RuntimeError, match="convert_sync_batchnorm"):
        train(trainer, num_epochs=1)


def test_sync_batchnorm_leaves_single_process_runs_alone() -> None:
    trainer = make_trainer(ConvertSyncBatchNormCallback(), model=bn_model())
    assert nn.SyncBatchNorm not in [type(m) for m in trainer.model.modules()]
    train(trainer, num_epochs=1)


# ---------------------------------------------------------------------------------------------- StepBasedEvaluation
class EvalSpy(TrainerCallback):
    """Per evaluation epoch: intermediate or not, update count, weights, steps run, grad mode, loss."""

    def __init__(self) -> None:
        self.evals: list[dict[str, Any]] = []

    @override
    def on_eval_epoch_start(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        self.evals.append({"intermediate": is_intermediate, "updates": num_updates(trainer),
                           "weights": weights(trainer.get_model()), "steps": 0, "grad": []})

    @override
    def on_eval_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, batch: Any, **kwargs: Any) -> None:
        self.evals[-1]["steps"] += 1
        self.evals[-1]["grad"].append(torch.is_grad_enabled() or batch_output["loss"].requires_grad)

    @override
    def on_eval_epoch_end(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        names = ["intermediate_eval_loss"] if is_intermediate else ["eval_loss_epoch", "evaluation_loss"]
        recorded = [name for name in names if trainer.run_history.get_metric_values(name)]
        self.evals[-1]["loss"] = trainer.run_history.get_latest_metric(recorded[0])


def test_step_based_evaluation_counts_optimizer_updates(tmp_path: Path) -> None:
    """pa counts batches within the epoch (and evaluates inside the step, before backward)."""
    eval_set = data(16, seed=1)
    snapshots, spy, modes = Snapshots(), EvalSpy(), Modes()
    trainer = make_trainer(snapshots, StepBasedEvaluationCallback(eval_every_n_steps=2), spy, modes)
    train(trainer, eval_dataset=eval_set, gradient_accumulation_steps=2)  # 4 updates per epoch
    intermediate = [e for e in spy.evals if e["intermediate"]]
    assert [e["updates"] for e in intermediate] == [2, 4, 6, 8]
    for e in intermediate:
        assert same(e["weights"], snapshots.updates[e["updates"]])  # after that update, before the next
        assert not any(e["grad"])
        model = nn.Linear(4, 1)
        model.load_state_dict(e["weights"])
        assert e["loss"] == pytest.approx(eval_loss(model, eval_set), rel=1e-5)
    assert len(modes.train_modes) == 2 * BATCHES_PER_EPOCH and all(modes.train_modes)
    assert len(trainer.run_history.get_metric_values("intermediate_eval_loss")) == 4


def test_step_based_evaluation_needs_an_eval_set() -> None:
    with pytest.raises(ValueError, match="eval_dataset"):
        train(make_trainer(StepBasedEvaluationCallback(2)))


# ---------------------------------------------------------------------------------------------- limits
class StepCounter(TrainerCallback):
    def __init__(self) -> None:
        self.train_steps: list[int] = []

    @override
    def on_train_epoch_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.train_steps.append(0)

    @override
    def on_train_step_end(
        self, trainer: TrainerLike, *, batch_output: BatchOutput, batch: Any, step: int, **kwargs: Any
    ) -> None:
        self.train_steps[-1] += 1


@pytest.mark.parametrize("with_eval", [True, False])
def test_limit_batches_limits_training_and_evaluation(with_eval: bool) -> None:
    counter, spy = StepCounter(), EvalSpy()
    trainer = make_trainer(LimitBatchesCallback(3), counter, spy)
    train(trainer, eval_dataset=data(16, seed=1) if with_eval else None)
    assert counter.train_steps == [3, 3]
    assert [e["steps"] for e in spy.evals] == ([3, 3] if with_eval else [])
    spy.evals.clear()
    trainer.evaluate(data(16, seed=1), per_device_batch_size=2)  # 8 batches
    assert [e["steps"] for e in spy.evals] == [3]


@pytest.mark.parametrize("intermediate_only", [True, False])
def test_limit_eval_steps_limits_the_evaluations_it_should(intermediate_only: bool) -> None:
    """pa swaps the dataloader after the evaluation loop already holds the original: it limits nothing."""
    spy = EvalSpy()
    trainer = make_trainer(StepBasedEvaluationCallback(4), LimitEvalStepsCallback(2, intermediate_only), spy)
    train(trainer, eval_dataset=data(16, seed=1), num_epochs=1)  # 4 eval batches
    # 8 updates: intermediate evaluations after updates 4 and 8, then the epoch's own
    assert [(e["intermediate"], e["steps"]) for e in spy.evals] == [(True, 2), (True, 2),
                                                                    (False, 4 if intermediate_only else 2)]
    spy.evals.clear()
    trainer.evaluate(data(16, seed=1), per_device_batch_size=4)
    assert [e["steps"] for e in spy.evals] == [4 if intermediate_only else 2]
    assert type(trainer.eval_dataloader).__name__ != "_SwitchableLimit"


# ---------------------------------------------------------------------------------------------- SaveTrainingState
def meta(directory: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((directory / "pta_meta.json").read_text())
    return result


def state_names(directory: Path) -> set[str]:
    return {child.name for child in directory.iterdir()}


def test_save_training_state_counts_updates_and_keeps_the_newest(tmp_path: Path) -> None:
    callback = SaveTrainingStateCallback(tmp_path, save_every_n_steps=3, max_checkpoints=2)
    train(make_trainer(callback), gradient_accumulation_steps=2)  # 8 updates
    assert state_names(tmp_path) == {"step_6", "final"}
    assert meta(tmp_path / "step_6")["num_updates"] == 6
    assert (meta(tmp_path / "step_6")["epoch"], meta(tmp_path / "step_6")["batches_done"]) == (2, 4)
    assert meta(tmp_path / "final")["num_updates"] == 8


def test_save_training_state_every_epoch_before_its_evaluation(tmp_path: Path) -> None:
    """As pytorch-accelerated: at on_train_epoch_end; a resume runs that epoch's evaluation
    (exactness: tests/test_pa_compat_matching.py)."""
    callback = SaveTrainingStateCallback(tmp_path, save_every_n_epochs=1, save_at_end=False)
    train(make_trainer(callback), eval_dataset=data(16, seed=1))
    assert state_names(tmp_path) == {"epoch_1", "epoch_2"}
    assert meta(tmp_path / "epoch_1")["phase"] == "eval"


def test_save_training_state_names_do_not_collide_after_a_resume(tmp_path: Path) -> None:
    """pa names states by a batch count that restarts at 0 in the resumed run, overwriting the old states."""
    first = SaveTrainingStateCallback(tmp_path, save_every_n_steps=2, save_at_end=False)
    train(make_trainer(first, Snapshots(stop_after_updates=5)))  # 16 updates planned, stopped after 5
    assert state_names(tmp_path) == {"step_2", "step_4"}

    second = SaveTrainingStateCallback(tmp_path, save_every_n_steps=2, save_at_end=False, max_checkpoints=None)
    train(make_trainer(second), resume_from=tmp_path / "step_4")
    assert state_names(tmp_path) == {f"step_{n}" for n in range(2, 17, 2)}
    assert all(meta(tmp_path / f"step_{n}")["num_updates"] == n for n in range(2, 17, 2))

    # max_checkpoints counts the states the earlier runs left in save_dir
    third = SaveTrainingStateCallback(tmp_path, save_every_n_steps=2, save_at_end=False, max_checkpoints=3)
    train(make_trainer(third), num_epochs=3, resume_from=tmp_path / "latest")
    assert state_names(tmp_path) == {"step_20", "step_22", "step_24"}


def test_save_training_state_resumes_exactly(tmp_path: Path) -> None:
    uninterrupted = make_trainer()
    train(uninterrupted, num_epochs=2)
    callback = SaveTrainingStateCallback(tmp_path, save_every_n_steps=5, save_at_end=False)
    train(make_trainer(callback, Snapshots(stop_after_updates=6)), num_epochs=2)
    resumed = make_trainer()
    train(resumed, num_epochs=2, resume_from=tmp_path / "latest")
    assert same(weights(resumed.model), weights(uninterrupted.model))


# ---------------------------------------------------------------------------------------------- WSD
def wsd(**kwargs: Any) -> Callable[[torch.optim.Optimizer], WSDLrScheduler]:
    return WSDLrScheduler.create_scheduler_fn(num_checkpoints=2, decay_phase_ratio=0.25, warmup_starting_lr=0.0, **kwargs)


def test_wsd_saves_pre_and_post_decay_checkpoints(tmp_path: Path) -> None:
    """16 updates, checkpoints after 8 and 16, each period decaying over its last 2 updates."""
    snapshots = Snapshots()
    trainer = make_trainer(snapshots, WSDCheckpointCallback(tmp_path, save_optimizer=False))
    train(trainer, create_scheduler_fn=wsd())
    assert state_names(tmp_path) == {"checkpoint_6_wsd_pre_decay", "checkpoint_8_wsd_post_decay.pt",
                                     "checkpoint_14_wsd_pre_decay", "checkpoint_16_wsd_post_decay.pt"}
    assert meta(tmp_path / "checkpoint_6_wsd_pre_decay")["num_updates"] == 6
    assert meta(tmp_path / "checkpoint_14_wsd_pre_decay")["num_updates"] == 14
    post = torch.load(tmp_path / "checkpoint_8_wsd_post_decay.pt", weights_only=True)
    assert post["step"] == 8 and post["checkpoint_type"] == "wsd_post_decay"
    assert "optimizer_state_dict" not in post and "scheduler_state_dict" in post
    assert same(post["model_state_dict"], snapshots.updates[8])


class FirstWeights(TrainerCallback):
    def __init__(self) -> None:
        self.first: dict[str, Tensor] | None = None

    @override
    def on_train_step_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if self.first is None:
            self.first = weights(trainer.get_model())


@pytest.mark.parametrize("kind", ["pre_decay_state", "post_decay_file"])
def test_wsd_initial_checkpoint_starts_a_new_run_from_it(tmp_path: Path, kind: str) -> None:
    snapshots = Snapshots()
    train(make_trainer(snapshots, WSDCheckpointCallback(tmp_path / "first")), create_scheduler_fn=wsd())
    initial = tmp_path / "first" / ("checkpoint_6_wsd_pre_decay" if kind == "pre_decay_state"
                                    else "checkpoint_8_wsd_post_decay.pt")
    first = FirstWeights()
    callback = WSDCheckpointCallback(tmp_path / "second", initial_checkpoint=initial)
    trainer = make_trainer(first, callback)
    train(trainer, create_scheduler_fn=wsd(is_continuation_from_checkpoint=True))
    assert first.first is not None and same(first.first, snapshots.updates[6 if kind == "pre_decay_state" else 8])
    assert trainer._num_updates == 16  # the whole new run, from its first update
    assert len(trainer.run_history.get_metric_values("train_loss_epoch")) == 2
    assert "checkpoint_16_wsd_post_decay.pt" in state_names(tmp_path / "second")


def test_wsd_refuses_a_missing_initial_checkpoint_and_other_schedulers(tmp_path: Path) -> None:
    """pa silently trains from scratch when initial_checkpoint does not exist."""
    missing = WSDCheckpointCallback(tmp_path, initial_checkpoint=tmp_path / "nope")
    with pytest.raises(CheckpointError, match="nope"):
        train(make_trainer(missing), create_scheduler_fn=wsd())
    with pytest.raises(ValueError, match="WSDLrScheduler"):
        train(make_trainer(WSDCheckpointCallback(tmp_path)), create_scheduler_fn=step_lr)


# ---------------------------------------------------------------------------------------------- update counting
class FakeConfig:
    gradient_accumulation_steps = 2


class FakeTrainer:
    """A trainer without an update count: the counter falls back to the accumulation windows."""

    run_config = FakeConfig()
    train_dataloader = [0] * 5


def test_update_counter_falls_back_to_accumulation_windows() -> None:
    counter = UpdateCounter()
    trainer: Any = FakeTrainer()
    counter.start(trainer)
    updated = [counter.step_end(trainer, step) for _ in range(2) for step in range(5)]
    assert updated == [False, True, False, True, True] * 2  # the short last window updates too
    assert counter.count == 6


# ---------------------------------------------------------------------------------------------- two processes
class ModelType(TrainerCallback):
    def __init__(self) -> None:
        self.name = ""

    @override
    def on_train_step_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.name = type(trainer.model).__name__


def two_process_worker(out_dir: Path) -> dict[str, Any]:
    """What each of 2 CPU processes runs for ``test_callbacks_agree_across_processes`` (``TWO_PROCESSES``)."""
    def trainer_with(*callbacks: TrainerCallback, model: nn.Module | None = None) -> DefaultTrainer[Batch]:
        manual_seed(0)
        model = model if model is not None else nn.Linear(4, 1)
        return DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05), callbacks=callbacks)

    result: dict[str, Any] = {}
    # Metrics recorded per process that differ: rank 0 alone would stop after epoch 2 and save twice; rank 1
    # would never stop and save once. Deciding differently would leave one process waiting in a collective.
    first = os.environ["RANK"] == "0"
    stopping = EarlyStoppingCallback(early_stopping_threshold=0.0, watch_metric="score")
    best = SaveBestModelCallback(out_dir / "best.pt", watch_metric="best")
    trainer = trainer_with(ScriptedMetric([4.0, 4.0, 4.0, 4.0] if first else [4.0, 3.0, 2.0, 1.0]),
                           ScriptedMetric([3.0, 2.0, 1.0, 0.5] if first else [1.0, 2.0, 3.0, 4.0], "best"),
                           best, stopping)
    train(trainer, num_epochs=4)
    result["epochs_run"] = len(trainer.run_history.get_metric_values("score"))
    result["best_epoch"] = best.best_metric_epoch

    ema, model_type = ModelEmaCallback(decay=0.5, save_path=out_dir / "ema.pt"), ModelType()
    states = SaveTrainingStateCallback(out_dir / "states", save_every_n_steps=1, max_checkpoints=2)
    trainer = trainer_with(ema, model_type, states)
    train(trainer, eval_dataset=data(16, seed=1))
    assert ema.ema_model is not None
    result["wrapped_as"] = model_type.name
    result["ema"] = weights(ema.ema_model.module)
    result["ema_loss"] = trainer.run_history.get_metric_values("ema_model_eval_loss_epoch")
    result["updates"] = trainer._num_updates

    converted = trainer_with(ConvertSyncBatchNormCallback(), model=bn_model())
    result["converted"] = any(isinstance(m, nn.SyncBatchNorm) for m in converted.model.modules())
    replaced = trainer_with(ConvertSyncBatchNormCallback(), model=bn_model())
    replaced.model = bn_model()
    replaced.optimizer = torch.optim.SGD(replaced.model.parameters(), lr=0.05)  # else train() refuses the optimizer
    try:
        train(replaced, num_epochs=1)
        result["refused"] = ""
    except RuntimeError as error:
        result["refused"] = str(error)
    return result


TWO_PROCESSES = f"{__name__}:two_process_worker"


@pytest.mark.slow
@pytest.mark.two_process_scenario(TWO_PROCESSES)
def test_callbacks_agree_across_processes(two_process_scenarios: ScenarioLaunch) -> None:
    """Two CPU processes under torchrun (DDP over gloo): decisions on per-process metrics agree, the EMA is
    kept from the DDP-wrapped model, old states are removed once, SyncBatchNorm conversion happens at
    construction."""
    rank0, rank1 = two_process_scenarios.results(TWO_PROCESSES)  # fails the test on a hang or a failed process
    for result in (rank0, rank1):
        assert result["epochs_run"] == 2 and result["best_epoch"] == 2  # rank 0's values decide
        assert result["wrapped_as"] == "DistributedDataParallel"
        assert set(result["ema"]) == {"weight", "bias"}
        assert len(result["ema_loss"]) == 2 and result["updates"] == 8  # 16 samples per process, batches of 4
        assert result["converted"] is True
        assert "convert_sync_batchnorm" in result["refused"]
    assert same(rank0["ema"], rank1["ema"]) and rank0["ema_loss"] == rank1["ema_loss"]
    states = two_process_scenarios.directory(TWO_PROCESSES) / "states"
    assert state_names(states) == {"step_8", "final"}  # removed by the main process alone


def test_limit_batches_environment_variable_limits_a_run() -> None:
    from pta.utils import LimitBatches

    from ._helpers import linear_model, quiet_trainer, regression_data

    with LimitBatches(2):
        trainer = quiet_trainer(linear_model())
    trainer.train(regression_data(n=64), 1, per_device_batch_size=4)
    assert trainer.num_updates == 2
