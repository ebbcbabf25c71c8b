"""What a person sees: the start line, one compact line per epoch, a bar only on terminals (issue 12, item 2)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from tqdm.auto import tqdm
from typing_extensions import override

from pta import DefaultTrainer
from pta.callbacks import (
    LogMetricsCallback, PrintProgressCallback, ProgressBarCallback, get_default_callbacks, progress)
from pta.callbacks._console import format_duration, format_value
from pta.protocols import TrainerLike
from tests._helpers import manual_seed, regression_data
from tests._terminal import TerminalStream

ROOT = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(
    r"^epoch (\d+)/(\d+)  train_loss_epoch (\S+)  eval_loss_epoch (\S+)  \|  "
    r"([\d.]+s|\d+m\d\ds), ([\d,.]+) samples/s(, (\S+) left)?$"
)


def _model_with_frozen_layer() -> nn.Module:
    manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    for parameter in model[0].parameters():
        parameter.requires_grad_(False)
    return model


def _train(capsys: pytest.CaptureFixture[str], epochs: int = 3,
           **callback_kwargs: Any) -> tuple[DefaultTrainer, str, str]:
    model = _model_with_frozen_layer()
    trainer = DefaultTrainer(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05), **callback_kwargs)
    trainer.train(regression_data(40), epochs, eval_dataset=regression_data(8), per_device_batch_size=4,
                  gradient_accumulation_steps=2)
    captured = capsys.readouterr()
    return trainer, captured.out, captured.err


def test_start_line_says_what_the_run_is(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _train(capsys)
    first = out.splitlines()[0]
    assert first == (
        "Starting training run: world size 1, device cpu, precision no, accumulation 2, "
        "batch 4/process (8 per update), 10 steps/epoch (5 updates), 3 epochs, "
        "parameters 9 trainable, 40 frozen"
    )


def test_one_compact_line_per_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    trainer, out, err = _train(capsys)
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3, out
    history = trainer.run_history
    for index, line in enumerate(lines):
        match = EPOCH_LINE.match(line)
        assert match is not None, line
        assert (int(match[1]), int(match[2])) == (index + 1, 3)
        for group, name in ((3, "train_loss_epoch"), (4, "eval_loss_epoch")):
            value = history.get_metric_values(name)[index]
            assert match[group] == format_value(value) and math.isclose(float(match[group]), value, rel_tol=1e-3)
        assert float(match[6].replace(",", "")) > 0  # samples/s
        assert (match[8] is not None) == (index < 2)  # time left, except after the last epoch
    assert out.splitlines()[-1].startswith("Finishing training run: 3 epochs in ")
    # captured streams are not terminals: no bar, no carriage returns, no blank padding lines
    assert "\r" not in out + err and "" not in out.splitlines()


def test_the_bar_shows_running_loss_and_eta_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    tty = TerminalStream()
    callbacks = [cb if cb is not ProgressBarCallback else ProgressBarCallback(loss_refresh_seconds=0.0, file=tty)
                 for cb in get_default_callbacks()]
    _train(capsys, epochs=2, callbacks=callbacks)
    drawn = tty.getvalue()
    assert "epoch 1/2" in drawn and "epoch 2/2" in drawn and "eval" in drawn
    assert re.search(r"loss \d", drawn) and "<" in drawn  # running loss and tqdm's elapsed<remaining


@pytest.mark.parametrize("terminal", [False, True])
def test_a_bar_is_made_only_where_one_is_drawn(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                               terminal: bool) -> None:
    made: list[str] = []

    def counting_tqdm(*args: Any, **kwargs: Any) -> Any:
        made.append(kwargs["desc"])
        return tqdm(*args, **kwargs)

    monkeypatch.setattr(progress, "tqdm", counting_tqdm)
    bar = ProgressBarCallback(file=TerminalStream() if terminal else None)  # None: stderr, captured here
    _train(capsys, epochs=2, callbacks=[cb if cb is not ProgressBarCallback else bar for cb in get_default_callbacks()])
    # a disabled tqdm made every epoch took its locks and registry for nothing (~200 µs an epoch)
    assert made == (["epoch 1/2", "eval", "epoch 2/2", "eval"] if terminal else [])
    assert bar.pbar.disable and bar.eval_pbar.disable  # closed bars, or none, as tqdm's disable says


def test_evaluate_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    trainer, _, _ = _train(capsys, epochs=1)
    trainer.evaluate(regression_data(8), per_device_batch_size=4)
    out = capsys.readouterr().out.splitlines()
    value = trainer.run_history.get_latest_metric("evaluation_loss")
    assert out[0].startswith(
        "Starting evaluation run: world size 1, device cpu, precision no, batch 4/process, 2 steps")
    assert re.fullmatch(rf"evaluation  evaluation_loss {re.escape(format_value(value))}  \|  [\d.]+s", out[1]), out


def test_log_metrics_gets_every_metric_of_the_epoch_once(capsys: pytest.CaptureFixture[str]) -> None:
    received: list[dict[str, Any]] = []

    class Recorder(LogMetricsCallback):
        @override
        def log_metrics(self, trainer: TrainerLike, metrics: dict[str, Any]) -> None:
            received.append(dict(metrics))

    class Accuracy(PrintProgressCallback):  # a metric another callback records after evaluation
        @override
        def on_eval_epoch_end(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kw: Any) -> None:
            trainer.run_history.update_metric("accuracy", 0.5)

    _train(capsys, epochs=2, callbacks=[Recorder(), Accuracy()])
    assert [sorted(m) for m in received] == [["accuracy", "eval_loss_epoch", "train_loss_epoch"]] * 2


@pytest.mark.parametrize(("value", "text"), [(0.10018181055784225, "0.1002"), (1234.5678, "1235"),
                                             (1.23456e-5, "1.235e-05"), (3, "3"), ("n/a", "n/a"),
                                             (0.155, "0.1550"), (2.0, "2.000")])
def test_values_have_four_significant_digits(value: object, text: str) -> None:
    assert format_value(value) == text


@pytest.mark.parametrize(("seconds", "text"), [(0.8412, "0.84s"), (12.34, "12.3s"), (185, "3m05s"), (7620, "2h07m")])
def test_durations(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.slow
def test_quickstart_log_is_readable(tmp_path: Path) -> None:
    """``python examples/quickstart.py > run.log``: plain lines, the start line first."""
    log, errors = tmp_path / "run.log", tmp_path / "err.log"
    with log.open("w") as out, errors.open("w") as err:
        subprocess.run([sys.executable, str(ROOT / "examples/quickstart.py"), "--epochs", "2"], stdout=out,
                       stderr=err, cwd=ROOT, timeout=300, check=True)
    text = log.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("Starting training run: world size 1, device cpu"), text
    assert [EPOCH_LINE.match(line) is not None for line in lines[1:3]] == [True, True], text
    assert "\r" not in text + errors.read_text()
