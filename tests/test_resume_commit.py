"""The commit protocol of training states under crashes and full disks (docs/training_state.md)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typing_extensions import override

import pta.state
from pta import CheckpointError, DefaultTrainer, TrainerCallback, reset_accelerate_state
from pta._checksums import verify_checksums
from pta.callbacks import SaveTrainingStateCallback
from pta.interrupt import TrainingInterrupted
from pta.protocols import TrainerLike
from pta.state import read_meta, resolve_state_dir
from tests.test_resume import _data, _model


class SimulatedCrash(BaseException):
    """Like a killed process: no ``except Exception`` cleanup runs."""


class SaveAt(TrainerCallback):
    """Saves ``directory/name`` after the given updates; ``before_last`` runs before the last save."""

    def __init__(self, directory: Path, name: str, at: tuple[int, ...], before_last: Callable[[], None] = lambda: None):
        self.directory, self.name, self.at, self.before_last = directory, name, at, before_last

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if trainer.num_updates in self.at:
            if trainer.num_updates == self.at[-1]:
                self.before_last()
            trainer.save_training_state(self.directory / self.name)


def _train(callbacks: list[TrainerCallback], max_steps: int, resume_from: Path | None = None,
           **trainer_kwargs: Any) -> DefaultTrainer:
    reset_accelerate_state()
    model = _model()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.AdamW(model.parameters(), lr=1e-2),
                             callbacks=callbacks, **trainer_kwargs)
    trainer.train(_data(), 3, per_device_batch_size=8, max_num_train_steps=max_steps, resume_from=resume_from)
    return trainer


def _instrument(monkeypatch: pytest.MonkeyPatch, crash_at: int, crash: Callable[[], None]) -> list[str]:
    """Count (and log) every rename and fsync of the commit protocol; call ``crash`` at number ``crash_at``."""
    log: list[str] = []
    real_rename, real_fsync = pta.state._rename, pta.state._fsync

    def step(text: str) -> None:
        if len(log) == crash_at:
            crash()
        log.append(text)

    def rename(source: Path, destination: Path) -> None:
        step(f"rename {source.name} -> {destination.name}")
        real_rename(source, destination)

    def fsync(path: Path) -> None:
        step(f"fsync {path.name}")
        real_fsync(path)

    monkeypatch.setattr(pta.state, "_rename", rename)
    monkeypatch.setattr(pta.state, "_fsync", fsync)
    return log


def _assert_complete(path: Path, updates: set[int]) -> Path:
    directory = resolve_state_dir(path)
    meta = read_meta(directory)
    verify_checksums(directory, meta["checksums"])
    assert meta["num_updates"] in updates
    return directory


def _raise() -> None:
    raise SimulatedCrash


def _crash_from(monkeypatch: pytest.MonkeyPatch, crash_at: int) -> None:
    _instrument(monkeypatch, crash_at, _raise)


def test_crash_at_every_rename_and_fsync_leaves_a_complete_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second save of ``state`` (replacing the first) crashes at each step of its commit in turn."""
    first_save: list[int] = []
    with monkeypatch.context() as patch:
        log = _instrument(patch, -1, _raise)
        _train([SaveAt(tmp_path / "count", "state", (3, 5), lambda: first_save.append(len(log)))], 5)
    second = log[first_save[0]:]
    assert second[-5:] == ["rename state -> .state.old", "fsync count", "rename .state.partial -> state",
                           "fsync count", "fsync .state.old"], log
    assert sum(s.startswith("fsync") for s in second) > 6  # every file, every directory, the parent
    for crash_at, step in enumerate(second):
        directory = tmp_path / f"crash_{crash_at}"
        with monkeypatch.context() as patch, pytest.raises(SimulatedCrash):
            _train([SaveAt(directory, "state", (3, 5), lambda: _crash_from(patch, crash_at))], 5)
        found = _assert_complete(directory / "state", {3, 5})
        assert _assert_complete(directory / "latest", {3, 5}) == found, step
        # the next save (of a run resumed from what was found) cleans every leftover
        _train([SaveAt(directory, "state", (6,))], 6, resume_from=directory / "state")
        assert sorted(p.name for p in directory.iterdir()) == ["state"]
        _assert_complete(directory / "state", {6})


def test_os_exit_between_the_renames_keeps_the_previous_state_findable(tmp_path: Path) -> None:
    """A real process death (os._exit in a forked child) at every step of ``commit_dir``."""
    _train([SaveAt(tmp_path, "template", (3,)), SaveAt(tmp_path, "newer", (5,))], 5)
    for crash_at in range(4):  # rename target->old, fsync, rename partial->target, fsync
        directory = tmp_path / f"exit_{crash_at}"
        directory.mkdir()
        shutil.copytree(tmp_path / "template", directory / "state")
        shutil.copytree(tmp_path / "newer", directory / ".state.partial")
        pid = os.fork()
        if pid == 0:  # child: the commit, killed at step crash_at
            calls = [0]

            def die_at(real: Callable[..., None]) -> Callable[..., None]:
                def wrapper(*args: Any) -> None:
                    if calls[0] == crash_at:
                        os._exit(17)
                    calls[0] += 1
                    real(*args)
                return wrapper

            pta.state._rename = die_at(pta.state._rename)  # in the forked child only
            pta.state._fsync = die_at(pta.state._fsync)
            pta.state.commit_dir(directory / ".state.partial", directory / "state")
            os._exit(0)
        assert os.waitpid(pid, 0)[1] >> 8 == 17
        found = _assert_complete(directory / "state", {3, 5})
        assert _assert_complete(directory / "latest", {3, 5}) == found
        pta.state.clean_leftovers(directory)  # what the next save does first
        assert sorted(p.name for p in directory.iterdir()) == ["state"]
        _assert_complete(directory / "state", {3, 5})


# ---------------------------------------------------------------------------- full disk
def _no_space(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _state_files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_disk_full_during_a_save_raises_checkpoint_error_and_keeps_earlier_states(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before: dict[str, bytes] = {}

    def fill_disk() -> None:
        before.update(_state_files(tmp_path))
        monkeypatch.setattr(torch, "save", _no_space)  # the writer of pta_state_<rank>.pt

    with pytest.raises(CheckpointError) as raised:
        _train([SaveAt(tmp_path, "state", (2,)), SaveAt(tmp_path, "state", (4,), fill_disk)], 5)
    message = str(raised.value)
    assert str(tmp_path / "state") in message and "no space left on device" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]  # the partial output is gone
    assert _state_files(tmp_path) == before  # the earlier state is untouched
    _assert_complete(tmp_path / "latest", {2})


def _disk_usage_reporting(free: list[int]) -> Callable[[object], types.SimpleNamespace]:
    """A ``shutil.disk_usage`` stand-in: ``free[0]`` bytes free (read at each call)."""
    return lambda path: types.SimpleNamespace(free=free[0])


def test_free_space_is_checked_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", _disk_usage_reporting([100]))
    with pytest.raises(CheckpointError, match=r"no space left on device .*100 bytes free"):
        _train([SaveAt(tmp_path, "state", (2,))], 3)
    assert list(tmp_path.iterdir()) == []


def test_torch_reports_a_full_disk_as_no_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save on a full disk says "unexpected pos"; the error names the real cause."""
    free = [10**12]
    monkeypatch.setattr(shutil, "disk_usage", _disk_usage_reporting(free))

    def torch_on_full_disk(*args: Any, **kwargs: Any) -> None:
        free[0] = 0
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2112 vs 2004")

    with pytest.raises(CheckpointError, match=r"no space left on device \(0 bytes free.*unexpected pos"):
        _train([SaveAt(tmp_path, "state", (2,), lambda: monkeypatch.setattr(torch, "save", torch_on_full_disk))], 3)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_whose_save_fails_still_raises_training_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Preempt(TrainerCallback):
        @override
        def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
            if trainer.num_updates == 2:
                monkeypatch.setattr(torch, "save", _no_space)
                os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted) as raised:
        _train([Preempt()], 5, interrupt_state_dir=tmp_path / "interrupted")
    assert raised.value.code == 128 + signal.SIGTERM and raised.value.state_dir is None
    assert isinstance(raised.value.save_error, CheckpointError)
    assert "no space left on device" in str(raised.value.save_error)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- max_checkpoints cleanup
def test_max_checkpoints_is_bounded_by_default_and_cleanup_is_crash_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert SaveTrainingStateCallback().max_checkpoints == 5
    _train([SaveTrainingStateCallback(tmp_path, save_every_n_steps=1, save_at_end=False)], 9)
    assert {p.name for p in tmp_path.iterdir()} == {f"step_{n}" for n in range(5, 10)}

    real_rmtree = shutil.rmtree

    def crash_in_delete(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).name.endswith(".deleting"):  # half-deleted, then killed
            next(p for p in Path(path).iterdir() if p.is_file()).unlink()
            raise SimulatedCrash
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", crash_in_delete)
    with pytest.raises(SimulatedCrash):
        _train([SaveTrainingStateCallback(tmp_path, save_every_n_steps=1, save_at_end=False)], 10,
               resume_from=tmp_path / "latest")
    monkeypatch.undo()
    visible = {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")}
    assert visible == {f"step_{n}" for n in range(6, 11)}  # step_5 is never visible half-deleted
    for name in visible:
        _assert_complete(tmp_path / name, {int(name[5:])})
    _train([SaveTrainingStateCallback(tmp_path, save_every_n_steps=1, save_at_end=False)], 11,
           resume_from=tmp_path / "latest")
    assert {p.name for p in tmp_path.iterdir()} == {f"step_{n}" for n in range(7, 12)}  # leftover removed


class SaveAtEpochEnd(TrainerCallback):
    """Saves ``path`` at the end of the first training epoch; counts the training steps it sees."""

    def __init__(self, path: Path) -> None:
        self.path, self.steps = path, 0

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.steps += 1

    @override
    def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if not self.path.exists():
            trainer.save_training_state(self.path)


def test_resuming_a_state_saved_when_max_steps_was_reached_trains_no_further(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 52 samples in batches of 8: the first epoch's 7 updates reach max_num_train_steps=7 exactly.
    first = SaveAtEpochEnd(tmp_path / "state")
    assert _train([first], max_steps=7).num_updates == 7
    capsys.readouterr()
    resumed = SaveAtEpochEnd(tmp_path / "state")
    trainer = _train([resumed], max_steps=7, resume_from=tmp_path / "state")
    assert (resumed.steps, trainer.num_updates) == (0, 7)
    assert "Reached max_num_train_steps=7 optimizer updates" in capsys.readouterr().out
