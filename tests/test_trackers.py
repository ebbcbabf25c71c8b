"""Metric logging: TrackerCallback (Accelerate's trackers, TensorBoard for real) and CSVLoggerCallback."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate.tracking import GeneralTracker  # pyright: ignore[reportMissingTypeStubs]  # accelerate ships no type information
from typing_extensions import override

import pta._accelerate
from pta import StopTrainingError, TrainerCallback
from pta.callbacks.csv_logger import CSVLoggerCallback
from pta.callbacks.trackers import TrackerCallback
from pta.protocols import TrainerLike
from tests._helpers import mlp, quiet_trainer, regression_data

EPOCHS = 3


class RecordingTracker(GeneralTracker):
    """A custom Accelerate tracker that keeps what it is given."""

    name = "recording"
    requires_logging_directory = False

    def __init__(self) -> None:  # GeneralTracker.__init__ only checks the attributes above
        self.started = 0
        self.finished = 0
        self.config: dict[str, Any] = {}
        self.logged: list[tuple[int | None, dict[str, Any]]] = []

    @property
    def tracker(self) -> RecordingTracker:
        return self

    @override
    def start(self) -> None:
        self.started += 1

    @override
    def store_init_configuration(self, values: dict[str, Any]) -> None:
        self.config = dict(values)

    @override
    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        self.logged.append((step, dict(values)))

    @override
    def finish(self) -> None:
        self.finished += 1


class UserMetric(TrainerCallback):
    """Records ``user_metric`` after each evaluation epoch (placed after the loggers on purpose)."""

    def __init__(self, from_epoch: int = 1) -> None:
        self.from_epoch = from_epoch

    @override
    def on_eval_epoch_end(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        epoch = trainer.run_history.current_epoch
        if epoch >= self.from_epoch:
            trainer.run_history.update_metric("user_metric", 0.5 + epoch)


class StopInEval(TrainerCallback):
    """Stops the run in the evaluation part of ``epoch``: its training loss is recorded, its eval loss is not."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    @override
    def on_eval_step_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if trainer.run_history.current_epoch == self.epoch:
            raise StopTrainingError("stop for the test")


def _train(callbacks: list[TrainerCallback], epochs: int = EPOCHS, **train_kwargs: Any) -> Any:
    model = mlp()
    trainer = quiet_trainer(model, lr=0.05, callbacks=callbacks)
    trainer.train(regression_data(48), num_epochs=epochs, eval_dataset=regression_data(16, seed=1),
                  per_device_batch_size=8, **train_kwargs)
    return trainer


# ---------------------------------------------------------------------- TrackerCallback, any tracker
def test_every_metric_is_logged_once_per_epoch_with_the_epoch_as_step() -> None:
    recorder = RecordingTracker()
    trainer = _train([TrackerCallback(recorder, config={"lr": 0.05, "optimizer": "sgd"}), UserMetric()])
    history = trainer.run_history
    assert recorder.started == 1 and recorder.finished == 1
    assert recorder.config == {"lr": 0.05, "optimizer": "sgd"}
    assert [step for step, _ in recorder.logged] == [1, 2, 3]
    for epoch, (_, values) in enumerate(recorder.logged, start=1):
        assert set(values) == {"train_loss_epoch", "eval_loss_epoch", "user_metric"}
        for name, value in values.items():
            assert value == history.get_metric_values(name)[epoch - 1]


def test_a_run_stopped_mid_epoch_logs_what_it_recorded_at_its_end() -> None:
    recorder = RecordingTracker()
    _train([TrackerCallback(recorder), StopInEval(epoch=2)])
    assert [step for step, _ in recorder.logged] == [1, 2]
    assert set(recorder.logged[1][1]) == {"train_loss_epoch"}
    assert recorder.finished == 1


def test_evaluation_runs_are_logged_and_non_numbers_skipped() -> None:
    class Extra(TrainerCallback):
        @override
        def on_eval_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
            trainer.run_history.update_metric("tensor_metric", torch.tensor(0.25))
            trainer.run_history.update_metric("text", "not a number")

    recorder = RecordingTracker()
    trainer = quiet_trainer(mlp(), callbacks=[TrackerCallback(recorder), Extra()])
    trainer.evaluate(regression_data(16), per_device_batch_size=8)
    assert len(recorder.logged) == 1
    step, values = recorder.logged[0]
    assert step == 1 and set(values) == {"evaluation_loss", "tensor_metric"}
    assert values["tensor_metric"] == 0.25 and isinstance(values["evaluation_loss"], float)


def test_a_resumed_run_logs_only_new_values(tmp_path: Path) -> None:
    class SaveAt(TrainerCallback):
        @override
        def on_train_step_end(self, trainer: TrainerLike, *, step: int, **kwargs: Any) -> None:
            if trainer.run_history.current_epoch == 2 and step == 1:
                trainer.save_training_state(tmp_path / "state")

    _train([SaveAt()])
    recorder = RecordingTracker()
    _train([TrackerCallback(recorder)], resume_from=tmp_path / "state")
    assert [step for step, _ in recorder.logged] == [2, 3]


def test_only_the_main_process_starts_trackers() -> None:
    class NotMain:
        is_world_main_process = False

    recorder = RecordingTracker()
    callback = TrackerCallback(recorder)
    callback.on_training_run_start(NotMain())  # type: ignore[arg-type]  # only what the callback reads
    callback.on_training_run_epoch_end(NotMain())  # type: ignore[arg-type]  # as above
    assert recorder.started == 0 and recorder.logged == [] and callback.trackers is None


def test_a_named_tracker_whose_package_is_missing_fails_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pta._accelerate, "get_available_trackers", list)
    trainer = quiet_trainer(mlp(), callbacks=[TrackerCallback("tensorboard")])
    with pytest.raises(ImportError, match="pip install tensorboard"):
        trainer.train(regression_data(16), num_epochs=1)


def test_an_unknown_tracker_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tracker 'tensorbored'"):
        pta._accelerate.start_trackers("tensorbored", "run")


# ---------------------------------------------------------------------- TensorBoard, for real
def test_tensorboard_event_files_hold_every_metric(tmp_path: Path) -> None:
    reader = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

    callback = TrackerCallback("tensorboard", project_dir=tmp_path, run_name="exp1", config={"lr": 0.05})
    trainer = _train([callback, UserMetric()])
    assert callback.trackers is None  # finished with the run

    run_dir = tmp_path / "exp1"
    assert list(run_dir.glob("events.out.tfevents.*"))
    events = reader.EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train_loss_epoch", "eval_loss_epoch", "user_metric"} <= tags
    for name in ("train_loss_epoch", "eval_loss_epoch", "user_metric"):
        scalars = events.Scalars(name)
        assert [event.step for event in scalars] == [1, 2, 3]
        expected = trainer.run_history.get_metric_values(name)
        assert [event.value for event in scalars] == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------- CSVLoggerCallback
def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def test_csv_has_one_row_per_epoch_and_its_header_grows(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "metrics.csv"
    trainer = _train([CSVLoggerCallback(path), UserMetric(from_epoch=2)])
    header, rows = _read_csv(path)
    assert header == ["epoch", "eval_loss_epoch", "train_loss_epoch", "user_metric"]
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert rows[0]["user_metric"] == "" and rows[1]["user_metric"] == "2.5"
    history = trainer.run_history
    for name in ("train_loss_epoch", "eval_loss_epoch"):
        assert [float(row[name]) for row in rows] == history.get_metric_values(name)  # written exactly
    assert [p.name for p in path.parent.iterdir()] == ["metrics.csv"]  # no temporary files left


def test_csv_of_a_resumed_run_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    class SaveAt(TrainerCallback):
        @override
        def on_train_step_end(self, trainer: TrainerLike, *, step: int, **kwargs: Any) -> None:
            if trainer.run_history.current_epoch == 2 and step == 2:
                trainer.save_training_state(tmp_path / "state")

    full, resumed = tmp_path / "full.csv", tmp_path / "resumed.csv"
    _train([SaveAt(), CSVLoggerCallback(full)])
    resumed.write_text(full.read_text())  # the interrupted run's file, rows of later epochs included
    _train([CSVLoggerCallback(resumed)], resume_from=tmp_path / "state")
    assert resumed.read_text() == full.read_text()


def test_a_fresh_run_starts_a_new_csv_and_a_stopped_run_keeps_its_partial_epoch(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,old\n1,9\n")
    _train([CSVLoggerCallback(path), StopInEval(epoch=2)])
    header, rows = _read_csv(path)
    assert header == ["epoch", "eval_loss_epoch", "train_loss_epoch"]
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert rows[1]["eval_loss_epoch"] == "" and math.isfinite(float(rows[1]["train_loss_epoch"]))


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_csv_waits_for_the_disk_only_where_a_rewrite_replaces_rows_written_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = _count_fsyncs(monkeypatch)
    _train([CSVLoggerCallback(tmp_path / "fresh.csv")])  # the first row widens a header-only file
    assert synced == []
    _train([CSVLoggerCallback(tmp_path / "widened.csv"), UserMetric(from_epoch=2)])  # epoch 1's row is kept
    assert len(synced) == 1
    header, rows = _read_csv(tmp_path / "widened.csv")
    assert header[-1] == "user_metric" and [row["epoch"] for row in rows] == ["1", "2", "3"]


def test_a_resumed_csv_keeps_its_rows_on_the_disk_when_the_file_is_rewritten(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class SaveAt(TrainerCallback):
        @override
        def on_train_step_end(self, trainer: TrainerLike, *, step: int, **kwargs: Any) -> None:
            if trainer.run_history.current_epoch == 2 and step == 0:
                trainer.save_training_state(tmp_path / "state")

    path = tmp_path / "metrics.csv"
    _train([SaveAt(), CSVLoggerCallback(path)])
    synced = _count_fsyncs(monkeypatch)
    _train([CSVLoggerCallback(path)], resume_from=tmp_path / "state")  # keeps epoch 1's row
    assert len(synced) == 1
    assert [row["epoch"] for row in _read_csv(path)[1]] == ["1", "2", "3"]


def test_csv_is_written_by_the_main_process_only(tmp_path: Path) -> None:
    class NotMain:
        is_world_main_process = False

    callback = CSVLoggerCallback(tmp_path / "metrics.csv")
    callback.on_training_run_start(NotMain())  # type: ignore[arg-type]  # only what the callback reads
    callback.on_training_run_epoch_end(NotMain())  # type: ignore[arg-type]  # as above
    assert not (tmp_path / "metrics.csv").exists()
