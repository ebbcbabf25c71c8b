"""GradAccumMixin alone on top of TrainerBase: what it adds.

``train(gradient_accumulation_steps=4)`` with batches of 8 makes the same optimizer updates as
batches of 32 without accumulation, to float precision, including the last, shorter window of the
epoch (1,437 samples: 44 windows of 32 and one of 29, weighted by its real size). The recorded
``train_loss_epoch`` is the true mean loss, not divided by the number of micro-batches.

    python examples/mixin_grad_accum.py
"""

from __future__ import annotations

import argparse

import torch
from quickstart import digits_datasets
from torch import nn
from torch.utils.data import TensorDataset

from pta import GradAccumMixin, TrainerBase, set_seed


class AccumulatingTrainer(GradAccumMixin, TrainerBase):
    """MRO: AccumulatingTrainer, GradAccumMixin, TrainerBase, TrainerHooks, Generic, object."""


def train_once(train_set: TensorDataset, epochs: int, batch_size: int, accumulation: int) -> tuple[nn.Module, float]:
    """Train a freshly initialised model (the same every call); returns it and its last train loss."""
    set_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))  # no dropout: deterministic
    trainer = AccumulatingTrainer(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.train(train_set, num_epochs=epochs, per_device_batch_size=batch_size,
                  gradient_accumulation_steps=accumulation, train_dataloader_kwargs={"shuffle": False})
    return model, float(trainer.run_history.get_latest_metric("train_loss_epoch"))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=4)
    args = parser.parse_args(argv)

    train_set, _ = digits_datasets()
    accumulated, loss_accumulated = train_once(train_set, args.epochs, args.micro_batch, args.accumulation)
    large, loss_large = train_once(train_set, args.epochs, args.micro_batch * args.accumulation, 1)
    pairs = zip(accumulated.parameters(), large.parameters(), strict=True)
    difference = max(float((a - b).detach().abs().max()) for a, b in pairs)
    result = {"max_weight_difference": difference, "train_loss_accumulated": loss_accumulated,
              "train_loss_large_batch": loss_large}
    print(f"{args.accumulation} x {args.micro_batch} accumulated vs batches of {args.micro_batch * args.accumulation}:")
    for name, value in result.items():
        print(f"  {name}: {value:.3g}")
    return result


if __name__ == "__main__":
    main()
