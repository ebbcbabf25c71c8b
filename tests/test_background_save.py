"""``save_training_state_in_background``: the commit runs in a thread while training goes on,
and the same guarantees hold (docs/training_state.md, "Saving in the background")."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from typing_extensions import override

import pta.state
from pta import CheckpointError, DefaultTrainer, TrainerCallback
from pta import _training_state as training_state
from pta.callbacks import SaveTrainingStateCallback
from pta.protocols import TrainerLike
from pta.state import META_FILE, partial_dir, read_meta
from tests.test_resume_commit import SimulatedCrash, _assert_complete, _crash_from, _instrument, _train


def _in_commit_thread() -> bool:
    return threading.current_thread().name.startswith("pta-commit")


class SaveInBackground(TrainerCallback):
    """Saves ``directory/name`` in the background after the given updates; records what it sees."""

    def __init__(self, directory: Path, at: tuple[int, ...], name: str = "state") -> None:
        self.directory, self.at, self.name = directory, at, name
        self.returned: dict[int, bool] = {}  # update -> did the state exist when the save returned
        self.steps_after_save: list[int] = []

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        if self.returned:
            self.steps_after_save.append(trainer.num_updates)
        if trainer.num_updates in self.at:
            target = self.directory / f"{self.name}_{trainer.num_updates}"
            cast("DefaultTrainer[Any]", trainer).save_training_state_in_background(target)
            self.returned[trainer.num_updates] = target.exists()


def _failing_rename(source: Path, destination: Path) -> None:
    raise OSError(5, "Input/output error (injected)")


def _weights(trainer: Any) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.get_model().parameters()]


def test_training_goes_on_while_the_commit_waits_and_train_returns_it_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit is held at its first fsync until two more steps ran: the save returned before its
    state existed, training went on, and ``train()`` returned with the state complete."""
    release = threading.Event()
    real_fsync = pta.state._fsync

    def fsync(path: Path) -> None:
        if _in_commit_thread():
            assert release.wait(timeout=60), "the training steps never ran while the commit waited"
        real_fsync(path)

    class Release(TrainerCallback):
        @override
        def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
            if trainer.num_updates == 5:
                assert partial_dir(tmp_path / "state_3").is_dir() and not (tmp_path / "state_3").exists()
                release.set()

    monkeypatch.setattr(pta.state, "_fsync", fsync)
    saver = SaveInBackground(tmp_path, (3,))
    _train([saver, Release()], 6)
    assert saver.returned == {3: False}
    assert saver.steps_after_save == [4, 5, 6]
    assert release.is_set()
    _assert_complete(tmp_path / "state_3", {3})
    assert not partial_dir(tmp_path / "state_3").exists()


def test_a_background_state_holds_the_same_files_and_resumes_exactly(tmp_path: Path) -> None:
    uninterrupted = _weights(_train([], 6))
    _train([SaveInBackground(tmp_path / "bg", (3,))], 6)
    _train([SaveInBackground(tmp_path / "bg2", (3,))], 6)  # a second run: the same bytes
    blocking = tmp_path / "blocking"
    from tests.test_resume_commit import SaveAt

    _train([SaveAt(blocking, "state_3", (3,))], 6)
    checksums = read_meta(tmp_path / "bg" / "state_3")["checksums"]
    assert checksums == read_meta(tmp_path / "bg2" / "state_3")["checksums"]
    assert set(checksums) == set(read_meta(blocking / "state_3")["checksums"])
    resumed = _weights(_train([], 6, resume_from=tmp_path / "bg" / "state_3"))
    for a, b in zip(uninterrupted, resumed, strict=True):
        assert torch.equal(a, b)


def test_a_failed_commit_raises_at_the_next_save_and_keeps_earlier_states(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_rename = pta.state._rename

    def rename(source: Path, destination: Path) -> None:
        if _in_commit_thread() and destination.name == "state_4":
            raise OSError(5, "Input/output error (injected)")
        real_rename(source, destination)

    monkeypatch.setattr(pta.state, "_rename", rename)
    with pytest.raises(CheckpointError, match=r"state_4.*input/output error"):
        _train([SaveInBackground(tmp_path, (2, 4, 5))], 6)
    _assert_complete(tmp_path / "state_2", {2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state_2"]  # the partial output was removed


def test_a_failed_last_commit_raises_when_train_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pta.state, "_rename", _failing_rename)
    with pytest.raises(CheckpointError, match="state_5"):
        _train([SaveInBackground(tmp_path, (5,))], 6)


def test_the_runs_own_error_wins_and_notes_a_failed_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Fail(TrainerCallback):
        @override
        def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
            if trainer.num_updates == 4:
                raise RuntimeError("the user's bug")

    monkeypatch.setattr(pta.state, "_rename", _failing_rename)
    with pytest.raises(RuntimeError, match="the user's bug") as caught:
        _train([SaveInBackground(tmp_path, (3,)), Fail()], 6)
    assert any("state_3" in note and "could not be committed" in note for note in caught.value.__notes__)


def test_a_commit_still_running_when_the_run_fails_is_finished(tmp_path: Path) -> None:
    class Fail(TrainerCallback):
        @override
        def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
            if trainer.num_updates == 3:
                raise RuntimeError("the user's bug")

    with pytest.raises(RuntimeError, match="the user's bug") as caught:
        _train([SaveInBackground(tmp_path, (3,)), Fail()], 6)
    assert not getattr(caught.value, "__notes__", [])
    _assert_complete(tmp_path / "state_3", {3})


def test_a_crash_in_the_commit_leaves_a_complete_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As ``test_crash_at_every_rename_and_fsync_leaves_a_complete_state``, with the second save committed
    in the background: a crash at every step of its commit leaves ``latest`` a complete state."""
    with monkeypatch.context() as patch:
        log = _instrument(patch, -1, lambda: None)
        _train([SaveInBackground(tmp_path / "count", (3,))], 5)
    commit_steps = len(log)
    assert commit_steps > 6
    for crash_at in range(commit_steps):
        directory = tmp_path / f"crash_{crash_at}"
        _train([SaveInBackground(directory, (2,), name="first")], 2)

        class CrashSecond(SaveInBackground):
            @override
            def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
                if trainer.num_updates == 3:
                    _crash_from(monkeypatch, crash_at)
                super().on_train_step_end(trainer, **kwargs)

        with pytest.raises(SimulatedCrash):
            _train([CrashSecond(directory, (3,))], 5)
        monkeypatch.undo()
        assert _assert_complete(directory / "latest", {2, 3}).name in ("first_2", "state_3")


def test_the_callback_deletes_a_state_only_once_a_newer_one_is_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each commit is held until the states on disk were counted at its step's end."""
    counted = threading.Semaphore(0)
    held: set[int] = set()
    real_fsync = pta.state._fsync

    def fsync(path: Path) -> None:
        if _in_commit_thread() and threading.get_ident() not in held:
            held.add(threading.get_ident())
            assert counted.acquire(timeout=60)
        real_fsync(path)

    seen: list[int] = []

    class CountComplete(TrainerCallback):
        @override
        def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
            seen.append(sum((child / META_FILE).is_file() for child in tmp_path.iterdir()))
            counted.release()

    monkeypatch.setattr(pta.state, "_fsync", fsync)
    callback = SaveTrainingStateCallback(tmp_path, save_every_n_steps=1, save_at_end=False, max_checkpoints=2,
                                         background=True)
    _train([callback, CountComplete()], 6)
    # while the state of step n is committed, those of steps n-2 and n-1 are complete
    assert seen == [0, 1, 2, 2, 2, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_5", "step_6"]


def test_a_failed_commit_nobody_waited_for_is_reported_at_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = _train([], 2)
    monkeypatch.setattr(pta.state, "_rename", _failing_rename)
    trainer.save_training_state_in_background(tmp_path / "orphan")
    pending = trainer._pending_commit
    assert pending is not None and pending._thread is not None
    pending._thread.join()
    training_state._report_unwaited_commits()  # what the interpreter runs at exit
    assert "orphan could not be committed" in capsys.readouterr().err
    trainer._pending_commit = None


_EXITS_WHILE_COMMITTING = """
import sys, time
sys.path.insert(0, {root!r})
import pta._training_state as training_state
from tests.test_resume_commit import _train

checksums = training_state.start_checksums
def late(*args, **kwargs):  # the main thread has ended by then: the interpreter is exiting
    time.sleep(0.5)
    return checksums(*args, **kwargs)
training_state.start_checksums = late
_train([], 2).save_training_state_in_background({target!r})
"""


def test_a_script_that_ends_during_a_commit_still_commits(tmp_path: Path) -> None:
    """The interpreter waits for the commit thread, but its thread pools take no new work by then:
    the commit checksums in its own thread instead of failing."""
    root = str(Path(__file__).resolve().parents[1])
    target = tmp_path / "last"
    script = _EXITS_WHILE_COMMITTING.format(root=root, target=str(target))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert done.returncode == 0, done.stderr
    assert "could not be committed" not in done.stderr
    assert read_meta(target)["checksums"]

def test_wait_for_save_raises_on_failure_and_is_a_no_op_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _train([], 2)
    with monkeypatch.context() as patch:
        patch.setattr(pta.state, "_rename", _failing_rename)
        trainer.save_training_state_in_background(tmp_path / "failed")
        with pytest.raises(CheckpointError, match="failed"):
            trainer.wait_for_save()
    trainer.wait_for_save()  # nothing pending
    trainer.save_training_state_in_background(tmp_path / "ok")
    trainer.wait_for_save()
    _assert_complete(tmp_path / "ok", {2})
    assert not (tmp_path / "failed").exists() and not partial_dir(tmp_path / "failed").exists()
