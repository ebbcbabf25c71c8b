"""Exact resume: a run stopped and resumed ends bit-identical to an uninterrupted one (CPU, fp32)."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from typing_extensions import override

from pta import CheckpointError, DefaultTrainer, TrainerCallback, reset_accelerate_state
from pta.protocols import TrainerLike
from tests._helpers import manual_seed

EPOCHS = 3
BATCHES_PER_EPOCH = 7  # 52 samples in batches of 8


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(52, 4, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True) + 0.1 * torch.randn(52, 1, generator=g))


def _model() -> nn.Module:
    manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 1))


class StopAfter(TrainerCallback):
    """Saves a training state after the given optimizer updates and stops the process at the last one."""

    def __init__(self, directory: Path, at_steps: tuple[int, ...], stop: bool = True) -> None:
        self.directory, self.at_steps, self.stop, self.seen = directory, at_steps, stop, 0

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.seen += 1
        if self.seen in self.at_steps:
            trainer.save_training_state(self.directory / f"step_{self.seen}")
            if self.stop and self.seen == self.at_steps[-1]:
                raise KeyboardInterrupt  # a crash right after the save


def _run(callbacks: list[TrainerCallback], resume_from: Path | str | None = None, *, workers: int = 0,
         accumulation: int = 1, max_steps: int | None = None, rng_seed: int = 0,
         batch_size: int = 8, scheduler: bool = True) -> DefaultTrainer | None:
    reset_accelerate_state()
    manual_seed(rng_seed)  # resumed runs start from unrelated global RNG states
    model = _model()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.AdamW(model.parameters(), lr=1e-2), callbacks=callbacks)
    try:
        trainer.train(
            _data(), EPOCHS, eval_dataset=_data(), per_device_batch_size=batch_size, max_num_train_steps=max_steps,
            gradient_accumulation_steps=accumulation, resume_from=resume_from,
            create_scheduler_fn=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=2, gamma=0.7)
            if scheduler else None,
            train_dataloader_kwargs={"num_workers": workers},
        )
    except KeyboardInterrupt:
        return None
    return trainer


def _result(trainer: DefaultTrainer | None) -> tuple[list[torch.Tensor], dict[str, list[Any]]]:
    assert trainer is not None
    history = trainer.run_history
    return ([p.detach().clone() for p in trainer.get_model().parameters()],
            {name: history.get_metric_values(name) for name in sorted(history.get_metric_names())})


def _assert_identical(a: DefaultTrainer | None, b: DefaultTrainer | None) -> None:
    (params_a, history_a), (params_b, history_b) = _result(a), _result(b)
    for x, y in zip(params_a, params_b, strict=True):
        assert torch.equal(x, y)
    assert history_a == history_b


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("stop_at", [3, BATCHES_PER_EPOCH, BATCHES_PER_EPOCH + 5])
def test_stop_and_resume_is_bit_identical(tmp_path: Path, workers: int, stop_at: int) -> None:
    reference = _run([], workers=workers)
    _run([StopAfter(tmp_path, (stop_at,))], workers=workers, rng_seed=1)
    resumed = _run([], tmp_path / f"step_{stop_at}", workers=workers, rng_seed=2)
    _assert_identical(reference, resumed)


def test_two_stop_resume_cycles_and_any_saved_state(tmp_path: Path) -> None:
    reference = _run([])
    _run([StopAfter(tmp_path, (2, 9, 16), stop=False)])  # three states of one run, run to the end
    for step in (2, 9, 16):
        _assert_identical(reference, _run([], tmp_path / f"step_{step}", rng_seed=step))
    second = tmp_path / "second"
    _run([StopAfter(second, (4,))], tmp_path / "step_2", rng_seed=3)  # resume, stop again, resume again
    _assert_identical(reference, _run([], second / "step_4", rng_seed=4))


def test_accumulation_window_scheduler_and_max_steps_continue(tmp_path: Path) -> None:
    reference = _run([], accumulation=3, max_steps=5)
    _run([StopAfter(tmp_path, (4,))], accumulation=3, max_steps=5)  # batch 4 is inside the 2nd window
    resumed = _run([], tmp_path / "step_4", accumulation=3, max_steps=5, rng_seed=5)
    _assert_identical(reference, resumed)
    assert resumed is not None and resumed._num_updates == 5


def test_a_window_stopped_after_one_single_sample_micro_batch_resumes_exactly(tmp_path: Path) -> None:
    """Batch 4 (one sample) opens the 2nd window: its gradients (a window weight of 1) are saved too."""
    reference = _run([], accumulation=3, max_steps=3, batch_size=1)
    _run([StopAfter(tmp_path, (4,))], accumulation=3, max_steps=3, batch_size=1)
    _assert_identical(reference, _run([], tmp_path / "step_4", accumulation=3, max_steps=3, batch_size=1, rng_seed=5))


def test_a_scheduler_can_be_dropped_or_added_on_resume(tmp_path: Path) -> None:
    """The scheduler is not part of the run's fingerprint: a state saved with one resumes without one,
    and a state saved without one resumes into a run with a fresh scheduler."""
    _run([StopAfter(tmp_path / "with", (3,))])
    dropped = _run([], tmp_path / "with" / "step_3", scheduler=False)
    assert dropped is not None and dropped.scheduler is None and dropped.num_updates == EPOCHS * BATCHES_PER_EPOCH

    _run([StopAfter(tmp_path / "without", (3,))], scheduler=False)
    added = _run([], tmp_path / "without" / "step_3")
    assert added is not None and added.num_updates == EPOCHS * BATCHES_PER_EPOCH
    assert added.scheduler.last_epoch == EPOCHS * BATCHES_PER_EPOCH - 3  # fresh: stepped after the resume only


def test_latest_picks_the_newest_complete_state(tmp_path: Path) -> None:
    _run([StopAfter(tmp_path, (3, 10), stop=False)])
    (tmp_path / ".step_99.partial").mkdir()  # an unfinished save is never "latest"
    reference = _run([])
    _assert_identical(reference, _run([], tmp_path / "latest", rng_seed=6))


def test_interrupted_save_leaves_the_previous_state_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    _run([StopAfter(tmp_path, (3,), stop=False)])
    (tmp_path / "step_3").rename(state)
    before = sorted(p.name for p in state.iterdir())

    class SaveFails(TrainerCallback):
        @override
        def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
            real_save = torch.save

            def failing_save(obj: object, f: Any, *args: Any, **kw: Any) -> None:
                if str(f).endswith(".pt") and "pta_state" in str(f):
                    raise OSError("disk full")
                real_save(obj, f, *args, **kw)

            monkeypatch.setattr(torch, "save", failing_save)
            trainer.save_training_state(state)

    with pytest.raises(CheckpointError, match="disk full"):
        _run([SaveFails()])
    monkeypatch.undo()
    assert sorted(p.name for p in state.iterdir()) == before
    _assert_identical(_run([]), _run([], tmp_path / "latest"))


def test_truncated_and_foreign_states_raise_clear_errors(tmp_path: Path) -> None:
    _run([StopAfter(tmp_path, (3,), stop=False)])
    state = tmp_path / "step_3"
    rank_file = state / "pta_state_0.pt"
    rank_file.write_bytes(rank_file.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="pta_state_0.pt"):
        _run([], state)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="pta_meta.json is missing"):
        _run([], foreign)
    with pytest.raises(CheckpointError, match="no complete pta training state"):
        _run([], tmp_path / "empty" / "latest")


class Note:
    """A user object saved beside the weights (needs unpickling of arbitrary classes)."""

    text = "extra"


def test_load_checkpoint_with_extra_objects_needs_opt_in(tmp_path: Path) -> None:
    trainer = _run([])
    assert trainer is not None
    path = tmp_path / "model.pt"
    trainer.save_checkpoint(path, checkpoint_kwargs={"note": Note()})
    with pytest.raises(CheckpointError, match="weights_only=False"):
        trainer.load_checkpoint(path)
    assert isinstance(trainer.load_checkpoint(path, weights_only=False)["note"], Note)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="model.pt"):
        trainer.load_checkpoint(path)


SIGTERM_WORKER = """
import sys, time, torch
sys.path.insert(0, {tests!r})
from test_resume import _run, TrainerCallback

class Slow(TrainerCallback):
    def on_train_step_end(self, trainer, /, **kwargs):
        if trainer._num_updates == 4:
            print("READY", flush=True)
            time.sleep(0.5)

trainer = _run([Slow()], {resume!r})
torch.save([p.detach() for p in trainer.get_model().parameters()], {out!r})
"""


def test_sigterm_saves_a_state_that_resumes_exactly(tmp_path: Path) -> None:
    def worker(resume: str | None, out: str) -> subprocess.Popen[str]:
        code = SIGTERM_WORKER.format(tests=str(Path(__file__).parent), resume=resume, out=out)
        return subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})

    proc = worker(None, str(tmp_path / "never.pt"))
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if "READY" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output
    state = tmp_path / "training_state" / "interrupted"
    assert "resume_from" in output and (state / "pta_meta.json").is_file()
    resumed = worker(str(state), str(tmp_path / "resumed.pt"))
    assert resumed.wait(timeout=120) == 0, resumed.communicate()[0]
    reference = _run([])
    assert reference is not None
    for x, y in zip(torch.load(tmp_path / "resumed.pt"), reference.get_model().parameters(), strict=True):
        assert torch.equal(x, y)
