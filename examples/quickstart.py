"""Train a small network on scikit-learn's bundled handwritten digits (no download) with DefaultTrainer.

    python examples/quickstart.py                          # one process
    torchrun --nproc_per_node 2 examples/quickstart.py     # two CPU processes, no GPU needed
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from pta import DefaultTrainer, set_seed
from pta.callbacks import get_default_callbacks


def digits_datasets(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """80/20 split of the 1,797 8x8 digit images, pixels scaled to [0, 1]."""
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images, dtype=torch.float32) / 16.0
    y = torch.tensor(labels, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(x))
    train, test = order[:split], order[split:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--no-progress-bar", action="store_true")
    args = parser.parse_args(argv)

    set_seed(0)
    train_set, test_set = digits_datasets()
    model = make_model()
    trainer: DefaultTrainer = DefaultTrainer(
        model,
        loss_func=nn.CrossEntropyLoss(),
        optimizer=torch.optim.AdamW(model.parameters(), lr=args.lr),
        callbacks=get_default_callbacks(progress_bar=not args.no_progress_bar),
        seed=0,
    )
    trainer.train(train_set, num_epochs=args.epochs, eval_dataset=test_set, per_device_batch_size=args.batch_size)

    accuracy = test_accuracy(trainer, test_set)
    trainer.print(f"test accuracy: {accuracy:.4f}")
    return accuracy


def test_accuracy(trainer: DefaultTrainer, dataset: TensorDataset) -> float:
    """Accuracy over the whole dataset, each sample counted once across processes."""
    model = trainer.get_model().eval()
    x, y = dataset.tensors
    with torch.no_grad():
        predictions = model(x.to(trainer.device)).argmax(dim=1).cpu()
    return float((predictions == y).float().mean())


if __name__ == "__main__":
    main()
