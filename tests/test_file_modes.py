"""Files pta writes follow the umask, as ``open()`` and ``torch.save`` do (issue 12, item 4)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from pta import DefaultTrainer
from pta.callbacks import CSVLoggerCallback
from pta.checkpoint import atomic_torch_save
from tests._helpers import regression_data


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    mask: int = request.param
    previous = os.umask(mask)
    try:
        yield mask
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_torch_save_follows_umask(tmp_path: Path, umask: int) -> None:
    atomic_torch_save({"x": torch.ones(2)}, tmp_path / "a.pt")
    torch.save({"x": torch.ones(2)}, tmp_path / "plain.pt")
    assert _mode(tmp_path / "a.pt") == _mode(tmp_path / "plain.pt") == 0o666 & ~umask


def test_run_outputs_follow_umask_022(tmp_path: Path, umask: int, capsys: pytest.CaptureFixture[str]) -> None:
    model = nn.Linear(4, 1)
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.01),
                             callbacks=[CSVLoggerCallback(tmp_path / "metrics.csv")])
    trainer.train(regression_data(16), 2, eval_dataset=regression_data(8), per_device_batch_size=4)
    trainer.save_checkpoint(tmp_path / "ckpt.pt")
    state = trainer.save_training_state(tmp_path / "state")
    written = [tmp_path / "metrics.csv", tmp_path / "ckpt.pt", *sorted(p for p in state.rglob("*") if p.is_file())]
    assert len(written) > 3
    assert {p.name: oct(_mode(p)) for p in written} == {p.name: oct(0o666 & ~umask) for p in written}
    capsys.readouterr()


def test_plot_follows_umask(tmp_path: Path, umask: int) -> None:
    pytest.importorskip("matplotlib")
    from pta.plotting import plot_run_history
    from pta.tracking import InMemoryRunHistory

    history = InMemoryRunHistory()
    history.update_metric("train_loss_epoch", 1.0)
    history.update_metric("train_loss_epoch", 0.5)
    assert _mode(plot_run_history(history, tmp_path / "h.png")) == 0o666 & ~umask
