"""The text the console callbacks print, exactly: the start line, metric values, durations and counts
(``pta.callbacks._console``). ``tests/test_console.py`` checks the lines of whole runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from pta.callbacks._console import (
    dataset_length,
    format_count,
    format_duration,
    format_metrics,
    format_value,
    parameter_counts,
    start_line,
)


@pytest.mark.parametrize(("value", "text"), [
    (0.155, "0.1550"),  # trailing zeros kept: columns line up
    (1000.0, "1000"),  # no trailing point
    (123456.0, "1.235e+05"),
    (7, "7"),
    (True, "1"),
    (torch.tensor(0.5), "0.5000"),
    (torch.tensor([1.0, 2.0]), "tensor([1., 2.])"),
    ("n/a", "n/a"),
])
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


def test_format_metrics_joins_names_and_values_with_two_spaces() -> None:
    assert format_metrics({"train_loss_epoch": 0.25, "epoch": 3}) == "train_loss_epoch 0.2500  epoch 3"


@pytest.mark.parametrize(("seconds", "text"), [
    (0.844, "0.84s"), (9.5, "9.50s"), (10.0, "10.0s"), (10.5, "10.5s"), (59.94, "59.9s"), (60.0, "1m00s"),
    (185.0, "3m05s"), (3599.0, "59m59s"), (3600.0, "1h00m"), (7620.0, "2h07m"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("number", "text"), [
    (12.25, "12.2"), (99.94, "99.9"), (100.0, "100"), (100.4, "100"), (812.0, "812"), (12345.0, "12,345"),
])
def test_format_count(number: float, text: str) -> None:
    assert format_count(number) == text


# ---------------------------------------------------------------------------------------------- start line
@dataclass
class Config:
    num_processes: int = 2
    mixed_precision: str = "bf16"
    gradient_accumulation_steps: int = 2
    train_per_device_batch_size: int | None = 4
    train_total_batch_size: int | None = 16
    num_update_steps_per_epoch: int = 617
    num_epochs: int = 3
    max_num_train_steps: int | None = None
    eval_per_device_batch_size: int = 8


class Loader:
    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


class Tied(nn.Module):
    """8 trainable values (one weight shared by two layers, counted once) and 3 frozen ones."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(2, 2)  # 6 values
        self.second = nn.Linear(2, 2)
        self.second.weight = self.first.weight  # tied: counted once
        self.frozen = nn.Linear(2, 1)  # 3 values
        self.frozen.requires_grad_(False)


class FakeTrainer:
    def __init__(self, config: Config, model: object, train_loader: object = None, eval_loader: object = None) -> None:
        self.run_config = config
        self.device = torch.device("cpu")
        self.model = model
        self.train_dataloader = train_loader
        self.eval_dataloader = eval_loader

    def get_model(self) -> object:
        return self.model


def test_parameter_counts_count_each_tensor_once() -> None:
    trainer: Any = FakeTrainer(Config(), Tied())
    assert parameter_counts(trainer) == (8, 3)  # first: 4 + 2, second's own bias: 2
    double: Any = FakeTrainer(Config(), object())  # a test double without a real model
    assert parameter_counts(double) == (0, 0)


def test_the_training_start_line() -> None:
    trainer: Any = FakeTrainer(Config(), Tied(), train_loader=Loader(1234), eval_loader=Loader(5))
    assert start_line(trainer, training=True) == (
        "Starting training run: world size 2, device cpu, precision bf16, accumulation 2, "
        "batch 4/process (16 per update), 1,234 steps/epoch (617 updates), 3 epochs, parameters 8 trainable, 3 frozen")


def test_the_training_start_line_of_an_unsized_single_epoch_run_with_a_limit() -> None:
    config = Config(num_processes=1, mixed_precision="no", gradient_accumulation_steps=1,
                    train_per_device_batch_size=None, num_update_steps_per_epoch=1000, num_epochs=1,
                    max_num_train_steps=2500)
    trainer: Any = FakeTrainer(config, nn.Linear(2, 1), train_loader=iter([]))
    assert start_line(trainer, training=True) == (
        "Starting training run: world size 1, device cpu, precision no, accumulation 1, batch ?, "
        "? steps/epoch (1,000 updates), 1 epoch, max 2,500 updates, parameters 3 trainable, 0 frozen")


def test_the_evaluation_start_line() -> None:
    trainer: Any = FakeTrainer(Config(), nn.Linear(2, 1), train_loader=Loader(1234), eval_loader=Loader(5))
    assert start_line(trainer, training=False) == (
        "Starting evaluation run: world size 2, device cpu, precision bf16, batch 8/process, 5 steps, "
        "parameters 3 trainable, 0 frozen")


class WithDataset:
    def __init__(self, dataset: object) -> None:
        self.dataset = dataset


def test_dataset_length() -> None:
    assert dataset_length(WithDataset(list(range(10)))) == 10
    assert dataset_length(WithDataset(iter(range(10)))) is None
    assert dataset_length(object()) is None
