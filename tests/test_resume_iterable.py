"""IterableDataset: trains without shuffling; resumes exactly when it has state_dict/load_state_dict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import IterableDataset
from typing_extensions import override

from pta import CheckpointError, DefaultTrainer, TrainerCallback, reset_accelerate_state
from pta._validation import ConfigurationError
from pta.callbacks import SaveTrainingStateCallback
from tests.test_resume import StopAfter, _model

SAMPLES = 36  # 5 batches of 8 per epoch, the last one short


class Stream(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """A stream whose samples differ per epoch (a counter advanced by every pass)."""

    def __init__(self) -> None:
        self.epoch = 0

    @override
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.epoch)
        self.epoch += 1
        for _ in range(SAMPLES):
            x = torch.randn(4, generator=g)
            yield x, x.sum(0, keepdim=True) + 0.1 * torch.randn(1, generator=g)


class StatefulStream(Stream):
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]


def _run(dataset: Stream, callbacks: list[TrainerCallback], resume_from: Path | None = None,
         **train_kwargs: Any) -> DefaultTrainer | None:
    reset_accelerate_state()
    model = _model()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.AdamW(model.parameters(), lr=1e-2), callbacks=callbacks)
    try:
        trainer.train(dataset, 3, per_device_batch_size=8, resume_from=resume_from, **train_kwargs)
    except KeyboardInterrupt:
        return None
    return trainer


def _params(trainer: DefaultTrainer | None) -> list[torch.Tensor]:
    assert trainer is not None
    return [p.detach().clone() for p in trainer.get_model().parameters()]


def test_an_iterable_dataset_trains_without_shuffling() -> None:
    trainer = _run(Stream(), [])
    assert trainer is not None and trainer._num_updates == 15
    with pytest.raises(ConfigurationError, match="IterableDataset"):
        _run(Stream(), [], train_dataloader_kwargs={"shuffle": True})


@pytest.mark.parametrize("stop_at", [2, 5, 8])  # mid-epoch 1, end of epoch 1, mid-epoch 2
def test_a_stateful_iterable_dataset_resumes_exactly(tmp_path: Path, stop_at: int) -> None:
    reference = _run(StatefulStream(), [])
    _run(StatefulStream(), [StopAfter(tmp_path, (stop_at,))])
    resumed = _run(StatefulStream(), [], tmp_path / f"step_{stop_at}")
    assert resumed is not None and reference is not None
    assert resumed.run_history.get_metric_values("train_loss_epoch") == reference.run_history.get_metric_values(
        "train_loss_epoch")
    for a, b in zip(_params(reference), _params(resumed), strict=True):
        assert torch.equal(a, b)


def test_a_stateful_iterable_dataset_resumes_exactly_from_an_epoch_end(tmp_path: Path) -> None:
    reference = _run(StatefulStream(), [])
    _run(StatefulStream(), [SaveTrainingStateCallback(tmp_path, save_every_n_epochs=1, save_at_end=False)],
         max_num_train_steps=10)
    resumed = _run(StatefulStream(), [], tmp_path / "epoch_1")
    for a, b in zip(_params(reference), _params(resumed), strict=True):
        assert torch.equal(a, b)


def test_a_mid_epoch_resume_of_a_stateless_iterable_dataset_is_refused(tmp_path: Path) -> None:
    _run(Stream(), [StopAfter(tmp_path, (2,))])
    with pytest.raises(CheckpointError, match="IterableDataset without state_dict.*save_every_n_epochs"):
        _run(Stream(), [], tmp_path / "step_2")
