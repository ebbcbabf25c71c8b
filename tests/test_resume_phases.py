"""Resume from every point of an epoch that is not a training step: before the epoch's evaluation (``epoch_N``
states), after the epoch's end, at the start of the next epoch; and ``resume_from`` given as ``"auto"`` or a str."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typing_extensions import override

from pta import DefaultTrainer, TrainerCallback, reset_accelerate_state
from pta.callbacks import SaveTrainingStateCallback
from pta.protocols import TrainerLike
from tests._helpers import manual_seed
from tests.test_resume import EPOCHS, StopAfter, _assert_identical, _data, _model, _run


class SaveAtEvent(TrainerCallback):
    """Saves a training state at the first ``event`` of the epoch ``epoch`` (counted from 1), then crashes."""

    def __init__(self, path: Path, event: str, epoch: int = 1) -> None:
        self.path, self.event, self.epoch, self.seen = path, event, epoch, 0

    def _maybe_save(self, trainer: TrainerLike, event: str) -> None:
        if event != self.event:
            return
        self.seen += 1
        if self.seen == self.epoch:
            trainer.save_training_state(self.path)
            raise KeyboardInterrupt  # a crash right after the save

    @override
    def on_train_epoch_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._maybe_save(trainer, "on_train_epoch_start")

    @override
    def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._maybe_save(trainer, "on_train_epoch_end")

    @override
    def on_training_run_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._maybe_save(trainer, "on_training_run_epoch_end")


class DrawsAtRunStart(TrainerCallback):
    """Draws from the global RNG at ``on_training_run_start``, which a resumed run fires again after loading
    the state: the loop must put the save point's RNG state back after it."""

    @override
    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        torch.rand(1)


class CountEvents(TrainerCallback):
    """Counts the epoch-level events a resumed run fires."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def _count(self, event: str) -> None:
        self.counts[event] = self.counts.get(event, 0) + 1

    @override
    def on_train_epoch_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._count("on_train_epoch_start")

    @override
    def on_eval_epoch_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._count("on_eval_epoch_start")

    @override
    def on_training_run_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self._count("on_training_run_epoch_end")


@pytest.mark.parametrize("event", ["on_train_epoch_end", "on_training_run_epoch_end"])
def test_a_state_saved_after_an_epochs_training_resumes_exactly(tmp_path: Path, event: str) -> None:
    """Saved before the epoch's evaluation (phase "eval") or after its end (phase "done"): the global and the
    sampler RNGs are restored there too, so the next epoch's shuffle and dropout are the uninterrupted run's."""
    reference = _run([DrawsAtRunStart()])
    _run([DrawsAtRunStart(), SaveAtEvent(tmp_path / "state", event)], rng_seed=1)
    counts = CountEvents()
    resumed = _run([DrawsAtRunStart(), counts], tmp_path / "state", rng_seed=2)
    _assert_identical(reference, resumed)
    # An "eval" state runs epoch 1's evaluation and end; a "done" state finishes epoch 1 without firing them again.
    left_of_epoch_1 = 1 if event == "on_train_epoch_end" else 0
    assert counts.counts == {"on_train_epoch_start": EPOCHS - 1, "on_eval_epoch_start": EPOCHS - 1 + left_of_epoch_1,
                             "on_training_run_epoch_end": EPOCHS - 1 + left_of_epoch_1}


def _run_with_a_generator(callbacks: list[TrainerCallback], resume_from: Path | None = None,
                          rng_seed: int = 0) -> DefaultTrainer | None:
    """test_resume's run with the user's own generator for the shuffle (its state is not Accelerate's)."""
    reset_accelerate_state()
    manual_seed(rng_seed)
    model = _model()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.AdamW(model.parameters(), lr=1e-2), callbacks=callbacks)
    try:
        trainer.train(_data(), EPOCHS, eval_dataset=_data(), per_device_batch_size=8, resume_from=resume_from,
                      train_dataloader_kwargs={"generator": torch.Generator().manual_seed(7)})
    except KeyboardInterrupt:
        return None
    return trainer


@pytest.mark.parametrize("event", ["on_train_epoch_end", "on_training_run_epoch_end", "step_10"])
def test_a_state_saved_after_the_first_epoch_restores_the_shuffles_generator(tmp_path: Path, event: str) -> None:
    """The generator passed in train_dataloader_kwargs (Accelerate's loader keeps it in its batch sampler)
    is saved and restored with the other RNGs, at an epoch's end and mid-epoch (step 10: epoch 2)."""
    reference = _run_with_a_generator([])
    saver = StopAfter(tmp_path, (10,)) if event == "step_10" else SaveAtEvent(tmp_path / event, event)
    _run_with_a_generator([saver], rng_seed=1)
    _assert_identical(reference, _run_with_a_generator([], tmp_path / event, rng_seed=2))


@pytest.mark.parametrize("epoch", [1, 2])
def test_a_state_saved_at_an_epoch_start_resumes_exactly(
        tmp_path: Path, epoch: int, capsys: pytest.CaptureFixture[str]) -> None:
    """Before the epoch has drawn its shuffle: the resumed run draws it from the save point's RNGs (not from
    the previous epoch's start, and the first epoch has none)."""
    reference = _run([])
    _run([SaveAtEvent(tmp_path / "state", "on_train_epoch_start", epoch)], rng_seed=1)
    capsys.readouterr()
    _assert_identical(reference, _run([], tmp_path / "state", rng_seed=2))
    updates = 7 * (epoch - 1)
    assert f"(epoch {epoch}, 0 batches into it, {updates} updates done)" in capsys.readouterr().out


@pytest.mark.parametrize("event", ["on_train_epoch_end", "on_training_run_epoch_end"])
def test_a_state_saved_at_the_start_of_the_epoch_after_a_resume_resumes_exactly(
        tmp_path: Path, event: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The run resumed from an epoch-end state is in the training phase with no batch done when the next epoch
    starts: a state saved there resumes into that whole epoch."""
    reference = _run([])
    _run([SaveAtEvent(tmp_path / "first", event)], rng_seed=1)
    _run([SaveAtEvent(tmp_path / "second", "on_train_epoch_start")], tmp_path / "first", rng_seed=2)
    capsys.readouterr()
    _assert_identical(reference, _run([], tmp_path / "second", rng_seed=3))
    assert f"Resuming from {tmp_path / 'second'} (epoch 2, 0 batches into it, 7 updates done)" in capsys.readouterr().out


def test_resume_from_auto_starts_fresh_then_resumes_from_the_most_advanced_state(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # "auto" also searches the relative interrupt_state_dir: none here
    reference = _run([])
    states = tmp_path / "states"
    # No state yet: a fresh start, the same run as without resume_from.
    fresh = _run([SaveTrainingStateCallback(states, save_every_n_steps=4, save_at_end=False)], "auto")
    _assert_identical(reference, fresh)
    assert f"resume_from='auto': no training state in {states}, " in capsys.readouterr().out
    (states / "step_20").rename(tmp_path / "step_20")  # the most advanced of the states left: step_16
    resumed = _run([SaveTrainingStateCallback(states, save_every_n_steps=100, save_at_end=False)], "auto",
                   rng_seed=2)
    _assert_identical(reference, resumed)
    assert f"Resuming from {states / 'step_16'} (epoch 3, 2 batches into it, 16 updates done)" in (
        capsys.readouterr().out)


def test_resume_from_accepts_a_str_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = _run([])
    _run([SaveAtEvent(tmp_path / "state", "on_train_epoch_end")], rng_seed=1)
    capsys.readouterr()
    _assert_identical(reference, _run([], str(tmp_path / "state"), rng_seed=2))
    assert f"Resuming from {tmp_path / 'state'} (epoch 1, 7 batches into it, 7 updates done)" in capsys.readouterr().out


@pytest.mark.parametrize("epoch", [1, 2])
def test_a_state_saved_at_an_epoch_start_of_a_run_resumed_mid_epoch_resumes_exactly(tmp_path: Path, epoch: int) -> None:
    """The run resumed 3 batches into epoch 1 saves at the start of what is left of epoch 1 (the same save point
    again, before the epoch skipped its trained batches) or at the start of epoch 2: each state resumes exactly."""
    reference = _run([])
    _run([StopAfter(tmp_path, (3,))], rng_seed=1)
    _run([DrawsAtRunStart(), SaveAtEvent(tmp_path / "second", "on_train_epoch_start", epoch)], tmp_path / "step_3",
         rng_seed=2)
    _assert_identical(reference, _run([], tmp_path / "second", rng_seed=3))
