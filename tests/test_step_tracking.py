"""Per-step tracking every N optimizer updates: loss, learning rates, throughput; trackers write under the
run's directory (issue 12, item 3)."""

from __future__ import annotations

import csv
import functools
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from typing_extensions import override

import pta
from pta import DefaultTrainer, StopTrainingError, TrainerCallback
from pta._tracker_routing import route_tracker_output
from pta._types import BatchOutput
from pta.callbacks import CSVLoggerCallback, TrackerCallback
from pta.protocols import TrainerLike
from tests._helpers import mlp, regression_data


class BatchLosses(TrainerCallback):
    """Records every batch's loss and size, and the learning rates after each update (tests may sync)."""

    def __init__(self) -> None:
        self.losses: list[tuple[int, float, int]] = []  # (updates done after the batch, loss, size)
        self.lrs: dict[int, list[float]] = {}

    @override
    def on_train_step_end(self, trainer: TrainerLike, *, batch_output: BatchOutput, **kwargs: Any) -> None:
        self.losses.append((trainer.num_updates, float(batch_output["loss"].item()), int(batch_output.get("batch_size", -1))))
        assert trainer.optimizer is not None
        self.lrs[trainer.num_updates] = [float(group["lr"]) for group in trainer.optimizer.param_groups]

    def window_mean(self, after: int, upto: int, batches_per_update: int = 2) -> float:
        """The size-weighted mean loss of the batches of updates ``after + 1`` to ``upto``."""
        rows = [(loss, size) for _, loss, size in self.losses[after * batches_per_update: upto * batches_per_update]]
        return sum(loss * size for loss, size in rows) / sum(size for _, size in rows)


def _trainer(callbacks: list[TrainerCallback]) -> DefaultTrainer:
    model = mlp()
    first, *rest = list(model.children())
    optimizer = torch.optim.SGD([{"params": first.parameters(), "lr": 0.02},
                                 {"params": [p for layer in rest for p in layer.parameters()], "lr": 0.01}], lr=0.01)
    return DefaultTrainer(model, nn.MSELoss(), optimizer, callbacks=callbacks)


def _train(trainer: DefaultTrainer) -> None:
    # 16 samples, batches of 2, accumulation 2: 4 updates per epoch; StepLR changes the rates each update
    trainer.train(regression_data(16), 3, eval_dataset=regression_data(8), per_device_batch_size=2,
                  gradient_accumulation_steps=2,
                  create_scheduler_fn=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.9))


def test_csv_logger_writes_a_row_every_n_updates(tmp_path: Path) -> None:
    recorder = BatchLosses()
    _train(_trainer([recorder, CSVLoggerCallback(tmp_path / "metrics.csv", log_every_n_updates=2)]))
    with (tmp_path / "metrics_steps.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(row["update"]) for row in rows] == [2, 4, 6, 8, 10, 12]
    assert [int(row["epoch"]) for row in rows] == [1, 1, 2, 2, 3, 3]
    previous = 0
    for row in rows:
        update = int(row["update"])
        assert float(row["train_loss_step"]) == pytest.approx(recorder.window_mean(previous, update), rel=1e-5)
        assert [float(row["lr_group_0"]), float(row["lr_group_1"])] == pytest.approx(recorder.lrs[update])
        assert float(row["samples_per_second"]) > 0
        previous = update
    assert list(rows[0]) == ["update", "epoch", "train_loss_step", "lr_group_0", "lr_group_1", "samples_per_second"]


def test_tensorboard_gets_step_metrics_under_the_project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    monkeypatch.chdir(tmp_path)
    recorder = BatchLosses()
    tracker = TrackerCallback("tensorboard", project_dir=tmp_path / "runs", run_name="exp", log_every_n_updates=4)
    _train(_trainer([recorder, tracker]))
    event_dirs = {path.parent for path in (tmp_path / "runs").rglob("events.out.tfevents.*")}
    assert event_dirs and all(d.is_relative_to(tmp_path / "runs" / "exp") for d in event_dirs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing in the working directory
    scalars: dict[str, dict[int, float]] = {}
    for directory in event_dirs:
        events = reader.EventAccumulator(str(directory))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in events.Scalars(tag)})
    assert sorted(scalars["train_loss_step"]) == [4, 8, 12]
    for update in (4, 8, 12):
        assert scalars["train_loss_step"][update] == pytest.approx(recorder.window_mean(update - 4, update), rel=1e-5)
        assert [scalars["lr_group_0"][update], scalars["lr_group_1"][update]] == pytest.approx(recorder.lrs[update])
        assert scalars["samples_per_second"][update] > 0
    assert sorted(scalars["train_loss_epoch"]) == [1, 2, 3]  # per-epoch metrics as before


def test_log_every_n_updates_none_logs_no_steps(tmp_path: Path) -> None:
    _train(_trainer([CSVLoggerCallback(tmp_path / "m.csv", log_every_n_updates=None)]))
    assert not (tmp_path / "m_steps.csv").exists()
    with pytest.raises(ValueError, match="log_every_n_updates"):
        CSVLoggerCallback(tmp_path / "m.csv", log_every_n_updates=0)


# ------------------------------------------------------------------------------ no host sync per step
_SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__")


@pytest.fixture
def host_syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    counts = Counter[str]()
    pta_dir = str(Path(pta.__file__).parent)

    def counting(name: str) -> Callable[..., Any]:
        original: Callable[..., Any] = getattr(Tensor, name)

        def wrapper(self: Tensor, *args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_code.co_filename
            counts["pta" if caller.startswith(pta_dir) else "other"] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name in _SYNC_METHODS:
        monkeypatch.setattr(Tensor, name, counting(name))
    yield counts


@pytest.mark.parametrize("every", [5, 10])
def test_step_logging_syncs_once_per_logged_row(tmp_path: Path, every: int, host_syncs: Counter[str]) -> None:
    observed = {}
    for log in (None, every):
        model = mlp()
        trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.01),
                                 callbacks=[CSVLoggerCallback(tmp_path / f"{log}.csv", log_every_n_updates=log)])
        host_syncs.clear()
        trainer.train(regression_data(64), 2, per_device_batch_size=2)  # 64 updates
        observed[log] = host_syncs["pta"]
    assert observed[every] - observed[None] == 64 // every


def test_mlflow_and_wandb_are_routed_under_the_project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uris: list[str] = []
    monkeypatch.setattr("pta._tracker_routing._set_mlflow_tracking_uri", uris.append)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    options = route_tracker_output("mlflow", str(tmp_path / "runs"), {"tags": {"a": 1}})
    assert options == {"tags": {"a": 1}, "logging_dir": str(tmp_path / "runs" / "mlartifacts")}
    assert uris == [f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"]
    # the user's choice wins
    assert route_tracker_output("mlflow", str(tmp_path), {"tracking_uri": "http://server"}) == {
        "logging_dir": str(tmp_path / "mlartifacts")}
    assert uris[-1] == "http://server"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env")
    route_tracker_output("mlflow", str(tmp_path), {})
    assert uris[-1] == "http://server"  # not overridden
    assert route_tracker_output("wandb", str(tmp_path), {}) == {"dir": str(tmp_path)}
    assert route_tracker_output("wandb", str(tmp_path), {"dir": "/x"}) == {"dir": "/x"}
    assert route_tracker_output("dvclive", str(tmp_path), {}) == {"dir": str(tmp_path / "dvclive")}
    assert route_tracker_output("swanlab", str(tmp_path), {}) == {"logdir": str(tmp_path / "swanlog")}
    assert route_tracker_output("tensorboard", None, {"flush_secs": 1}) == {"flush_secs": 1}


def test_mlflow_writes_under_the_project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _train(_trainer([TrackerCallback("mlflow", project_dir=tmp_path / "runs", run_name="exp")]))
    assert (tmp_path / "runs" / "mlflow.db").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_a_resumed_run_keeps_the_step_rows_up_to_its_update_count(tmp_path: Path) -> None:
    from pta.callbacks import SaveTrainingStateCallback

    class StopAfterFirstEpoch(TrainerCallback):
        @override
        def on_training_run_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
            raise StopTrainingError("interrupted")

    def run(callbacks: list[TrainerCallback], resume: Path | None = None) -> None:
        model = mlp()
        trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.01),
                                 callbacks=callbacks)
        trainer.train(regression_data(16), 2, per_device_batch_size=2, resume_from=resume)  # 8 updates/epoch

    def updates(path: Path) -> list[str]:
        with path.open() as file:
            return [row["update"] for row in csv.DictReader(file)]

    run([CSVLoggerCallback(tmp_path / "full.csv", log_every_n_updates=3)])
    csv_path = tmp_path / "part.csv"
    (tmp_path / "part_steps.csv").write_text("update,epoch\n99,9\n")  # an older run's file is replaced
    run([SaveTrainingStateCallback(tmp_path / "states", save_every_n_epochs=1, save_at_end=False),
         CSVLoggerCallback(csv_path, log_every_n_updates=3), StopAfterFirstEpoch()])
    assert updates(tmp_path / "part_steps.csv") == ["3", "6"]
    run([CSVLoggerCallback(csv_path, log_every_n_updates=3)], resume=tmp_path / "states" / "epoch_1")
    assert updates(tmp_path / "part_steps.csv") == updates(tmp_path / "full_steps.csv") == ["3", "6", "9", "12", "15"]


# ------------------------------------------------------------------------------ the steps file's handle
class _WriteOpens:
    """While ``paths`` is a list, the paths of the files opened for writing go in it (an audit hook,
    which cannot be removed)."""

    paths: list[str] | None = None


def _record_opens(event: str, args: tuple[Any, ...]) -> None:
    paths = _WriteOpens.paths
    if event == "open" and paths is not None and isinstance(args[0], (str, Path)) and args[1] != "r":
        paths.append(str(args[0]))


sys.addaudithook(_record_opens)


class RowIsWritten(TrainerCallback):
    """After the logger: every row the logger appended at a step is in the file when the step ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.checked = 0
        self._updates = 0

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        updated, self._updates = trainer.num_updates != self._updates, trainer.num_updates
        if updated and self._updates % 2 == 0:  # the logger wrote a row at this step
            last = self.path.read_text().splitlines()[-1]
            assert last.startswith(f"{self._updates},")
            self.checked += 1


def _open_fds_to(path: Path) -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if fd.exists() and fd.resolve() == path.resolve())


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to see open files")
def test_the_steps_file_is_opened_once_a_run_and_every_row_is_in_it_at_once(tmp_path: Path) -> None:
    steps = tmp_path / "m_steps.csv"
    written = RowIsWritten(steps)
    trainer = _trainer([CSVLoggerCallback(tmp_path / "m.csv", log_every_n_updates=2), written])
    opened: list[str] = []
    _WriteOpens.paths = opened
    try:
        _train(trainer)  # 12 updates: 6 rows
    finally:
        _WriteOpens.paths = None
    assert written.checked == 6
    assert opened.count(str(steps)) == 1  # not once per row
    assert _open_fds_to(steps) == 0  # closed at the run's end
    assert len(steps.read_text().splitlines()) == 7


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to see open files")
def test_a_failed_run_keeps_its_rows_and_the_next_run_closes_its_handle(tmp_path: Path) -> None:
    class Fail(TrainerCallback):
        armed = True

        @override
        def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
            if self.armed and trainer.num_updates == 5:
                raise RuntimeError("boom")

    steps = tmp_path / "m_steps.csv"
    fail = Fail()
    model = mlp()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.01),
                             callbacks=[CSVLoggerCallback(tmp_path / "m.csv", log_every_n_updates=2), fail])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train(regression_data(16), 1, per_device_batch_size=2)
    assert [line.split(",")[0] for line in steps.read_text().splitlines()] == ["update", "2", "4"]
    assert _open_fds_to(steps) == 1  # the run did not end: the handle is left to the next run
    fail.armed = False  # the next run, a fresh one, goes to its end
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train(regression_data(16), 1, per_device_batch_size=2)
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]  # closed, not dropped
    assert [line.split(",")[0] for line in steps.read_text().splitlines()] == ["update", "2", "4", "6", "8"]
    assert _open_fds_to(steps) == 0
