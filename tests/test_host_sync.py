"""No host sync per step with the default callbacks, progress bar included.

Every Tensor method that copies a value to the host (a device sync on a GPU) is counted when pta's own code
calls it; the count must not grow with the number of steps. On a CPU these calls cost nothing, so only
counting them can show a per-step sync before it reaches a GPU.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from typing_extensions import override

import pta
from pta import DefaultTrainer, TrainerCallback
from pta.callbacks import ProgressBarCallback, TerminateOnNaNCallback, get_default_callbacks
from pta.protocols import TrainerLike
from tests._helpers import mlp, regression_data
from tests._terminal import TerminalStream

# Everything that reads a tensor's value on the host: conversions, printing, NumPy, a move to the CPU.
SYNC_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__",
                "__format__", "__array__", "__repr__", "__str__")


@pytest.fixture
def pta_host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts the host-reading Tensor methods that pta's code calls, by method name."""
    counts = Counter[str]()
    pta_dir = str(Path(pta.__file__).parent)

    def counting(name: str) -> Callable[..., Any]:
        original: Callable[..., Any] = getattr(torch.Tensor, name)

        def wrapper(self: Tensor, *args: Any, **kwargs: Any) -> Any:
            if sys._getframe(1).f_code.co_filename.startswith(pta_dir):
                counts[name] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name in SYNC_METHODS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    yield counts


class BarWatcher(TrainerCallback):
    """Records, at every step, whether the progress bar is live (tqdm disables a bar when it closes)."""

    def __init__(self, bar: ProgressBarCallback) -> None:
        self.bar = bar
        self.live: list[bool] = []

    @override
    def on_train_step_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.live.append(not self.bar.pbar.disable)


def _callbacks(bar: ProgressBarCallback, watcher: BarWatcher) -> list[TrainerCallback | type[TrainerCallback]]:
    others = [cb for cb in get_default_callbacks(progress_bar=False) if cb is not TerminateOnNaNCallback]
    # more steps than either run has: the guard reads at the epochs' ends only
    return [*others, TerminateOnNaNCallback(check_every_n_steps=1000), bar, watcher]


@pytest.mark.parametrize("accumulation", [1, 2])
def test_default_callbacks_with_the_progress_bar_read_nothing_per_step(
        pta_host_reads: Counter[str], capsys: pytest.CaptureFixture[str], accumulation: int) -> None:
    observed: dict[int, Counter[str]] = {}
    for samples in (8, 64):  # 4 and 32 training steps per epoch
        # The bar reads the loss at most once per interval; an hour keeps that read out of a short run,
        # so any read that remains is one per step.
        bar = ProgressBarCallback(loss_refresh_seconds=3600.0, file=TerminalStream())  # drawn, as on a terminal
        watcher = BarWatcher(bar)
        model = mlp()
        trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.01),
                                 callbacks=_callbacks(bar, watcher))
        pta_host_reads.clear()
        trainer.train(regression_data(samples), 2, eval_dataset=regression_data(8), per_device_batch_size=2,
                      gradient_accumulation_steps=accumulation)
        observed[samples] = Counter(pta_host_reads)
        assert watcher.live and all(watcher.live)  # the bar really ran, on every step
    capsys.readouterr()
    # per epoch: the train and eval loss means and the NaN guard's train and eval checks
    assert 0 < sum(observed[8].values()) <= 2 * 4, observed  # (> 0: the counting works)
    assert observed[64] == observed[8], observed


def test_the_counter_sees_a_progress_bar_that_reads_every_step(
        pta_host_reads: Counter[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The bar's own read is visible to the counter (a refresh interval of 0 reads every step)."""
    model = mlp()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.01),
                             callbacks=[ProgressBarCallback(loss_refresh_seconds=0.0, file=TerminalStream())])
    trainer.train(regression_data(16), 1, per_device_batch_size=2)
    capsys.readouterr()
    assert pta_host_reads["item"] >= 8, pta_host_reads
