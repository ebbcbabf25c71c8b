"""Callback state in training states: a resumed run with stateful callbacks equals the uninterrupted one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typing_extensions import override

from pta import CheckpointError, DefaultTrainer, TrainerCallback, reset_accelerate_state
from pta.callbacks import EarlyStoppingCallback, ModelEmaCallback, SaveBestModelCallback
from pta.protocols import TrainerLike
from tests._helpers import manual_seed
from tests.test_resume import StopAfter, _data, _model

EPOCHS = 6  # early stopping ends the run after epoch 4: the 1st value sets the best, 3 more epochs fail the threshold


class Counter(TrainerCallback):
    """A user callback with state: counts the steps of all runs it took part in."""

    def __init__(self) -> None:
        self.steps = 0

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state_dict: dict[str, Any], /) -> None:
        self.steps = state_dict["steps"]


def _callbacks(directory: Path) -> list[TrainerCallback]:
    directory.mkdir(parents=True, exist_ok=True)
    return [
        EarlyStoppingCallback(early_stopping_patience=3, early_stopping_threshold=10.0),
        SaveBestModelCallback(save_path=directory / "best.pt", load_saved_checkpoint=False),
        ModelEmaCallback(decay=0.9, save_path=directory / "ema.pt"),
        Counter(),
    ]


def _run(callbacks: list[TrainerCallback], resume_from: Path | None = None, seed: int = 0) -> DefaultTrainer | None:
    reset_accelerate_state()
    manual_seed(seed)
    model = _model()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.AdamW(model.parameters(), lr=1e-2), callbacks=callbacks)
    try:
        trainer.train(_data(), EPOCHS, eval_dataset=_data(), per_device_batch_size=8, resume_from=resume_from)
    except KeyboardInterrupt:
        return None
    return trainer


def _summary(trainer: DefaultTrainer | None) -> dict[str, Any]:
    assert trainer is not None
    early, best, ema, counter = trainer.callback_handler.callbacks
    assert isinstance(early, EarlyStoppingCallback) and isinstance(best, SaveBestModelCallback)
    assert isinstance(ema, ModelEmaCallback) and isinstance(counter, Counter)
    history = trainer.run_history
    return {
        "params": [p.detach().clone() for p in trainer.get_model().parameters()],
        "history": {name: history.get_metric_values(name) for name in sorted(history.get_metric_names())},
        "early": (early.best_metric, early.early_stopping_patience_counter),
        "best": (best.best_metric, best.best_metric_epoch, best.checkpoint_saved),
        "ema": [t.clone() for t in ema._ema().state_dict().values()],
        "ema_best": ema.best_metric,
        "steps": counter.steps,
    }


def _assert_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("params", "ema"):
        assert len(a[key]) == len(b[key])
        for x, y in zip(a[key], b[key], strict=True):
            assert torch.equal(x, y), key
    for key in ("history", "early", "best", "ema_best", "steps"):
        assert a[key] == b[key], key


@pytest.mark.parametrize("stop_at", [10, 7 * 2])  # mid-epoch 2, and at the end of epoch 2's training
def test_resumed_run_with_stateful_callbacks_equals_the_uninterrupted_one(tmp_path: Path, stop_at: int) -> None:
    reference = _summary(_run(_callbacks(tmp_path / "reference")))
    assert reference["early"][1] == 3 and len(reference["history"]["train_loss_epoch"]) == 4  # stopped early
    _run([*_callbacks(tmp_path / "first"), StopAfter(tmp_path, (stop_at,))], seed=1)
    resumed = _summary(_run(_callbacks(tmp_path / "resumed"), tmp_path / f"step_{stop_at}", seed=2))
    _assert_equal(reference, resumed)


def test_a_stateful_callback_missing_on_resume_is_refused(tmp_path: Path) -> None:
    _run([*_callbacks(tmp_path / "first"), StopAfter(tmp_path, (3,))])
    with pytest.raises(CheckpointError, match="stateful_callbacks"):
        _run(_callbacks(tmp_path / "resumed")[:3], tmp_path / "step_3")
