"""A timm model and a Hugging Face transformers model trained with DefaultTrainer, no adapter needed.

Both are built from code (``pretrained=False``, a config object): nothing is downloaded.

* timm: a small ResNet from ``timm.create_model`` on the digits reshaped to 1x8x8 images
  (``in_chans=1``); DefaultTrainer's default ``(inputs, targets)`` handling is all it needs.
* transformers: a tiny ``BertForSequenceClassification`` from a ``BertConfig`` on random token
  sequences whose label is whether token 1 occurs more often than token 2. Its batches are dicts and
  the model computes its own loss, so the trainer overrides ``calculate_train_batch_loss`` and
  ``calculate_eval_batch_loss`` (``DefaultTrainer[TokenBatch]`` types the batch).

    pip install timm transformers
    python examples/timm_transformers.py                  # both
    python examples/timm_transformers.py --model timm     # or one of them
"""

from __future__ import annotations

import argparse

import torch
from quickstart import digits_datasets
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset
from typing_extensions import override

from pta import BatchOutput, DefaultTrainer, set_seed
from pta.callbacks import get_default_callbacks

TokenBatch = dict[str, Tensor]
"""A batch of ``input_ids``, ``attention_mask`` and ``labels``, as BERT takes them."""


def as_images(dataset: TensorDataset) -> TensorDataset:
    """Digits of 64 pixels as 1-channel 8x8 images."""
    pixels, labels = dataset.tensors
    return TensorDataset(pixels.reshape(-1, 1, 8, 8), labels)


def train_timm(epochs: int, progress_bar: bool, max_steps: int | None = None) -> float:
    """Train a small timm ResNet (about 0.3M parameters) on the digit images; returns the last eval loss."""
    import timm

    set_seed(0)
    model: nn.Module = timm.create_model("resnet10t", pretrained=False, num_classes=10, in_chans=1,
                                         stem_width=8, channels=(16, 32, 64, 128))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    trainer: DefaultTrainer = DefaultTrainer(model, nn.CrossEntropyLoss(), optimizer,
                                             callbacks=get_default_callbacks(progress_bar=progress_bar), seed=0)
    train_set, test_set = (as_images(dataset) for dataset in digits_datasets())
    trainer.train(train_set, num_epochs=epochs, eval_dataset=test_set, per_device_batch_size=32,
                  max_num_train_steps=max_steps)
    return float(trainer.run_history.get_latest_metric("eval_loss_epoch"))


class CountingTask(Dataset[TokenBatch]):
    """Random token sequences; the label is 1 when token 1 occurs more often than token 2."""

    def __init__(self, size: int, length: int = 16, vocab_size: int = 30, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(3, vocab_size, (size, length), generator=generator)
        marks = torch.randint(0, 3, (size, length), generator=generator)  # 0: keep, 1: token 1, 2: token 2
        self.input_ids = torch.where(marks > 0, marks, self.input_ids)
        self.labels = ((self.input_ids == 1).sum(1) > (self.input_ids == 2).sum(1)).long()

    def __len__(self) -> int:
        return len(self.labels)

    @override
    def __getitem__(self, index: int) -> TokenBatch:
        ids = self.input_ids[index]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[index]}


class SequenceClassificationTrainer(DefaultTrainer[TokenBatch]):
    """A transformers model computes its loss from ``labels``: the batch goes in as keyword arguments."""

    def _forward(self, batch: TokenBatch) -> BatchOutput:
        outputs = self.model(**batch)
        return {"loss": outputs.loss, "model_outputs": outputs.logits, "batch_size": batch["labels"].size(0)}

    @override
    def calculate_train_batch_loss(self, batch: TokenBatch) -> BatchOutput:
        return self._forward(batch)

    @override
    def calculate_eval_batch_loss(self, batch: TokenBatch) -> BatchOutput:
        return self._forward(batch)


def train_transformers(epochs: int, progress_bar: bool, max_steps: int | None = None) -> float:
    """Train a one-layer BERT (about 11k parameters) on the counting task; returns the last eval loss."""
    from transformers import BertConfig, BertForSequenceClassification

    set_seed(0)
    config = BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=16)
    config.num_labels = 2
    model = BertForSequenceClassification(config)
    trainer = SequenceClassificationTrainer(model, None, torch.optim.AdamW(model.parameters(), lr=1e-3),
                                            callbacks=get_default_callbacks(progress_bar=progress_bar), seed=0)
    trainer.train(CountingTask(1024), num_epochs=epochs, eval_dataset=CountingTask(256, seed=1),
                  per_device_batch_size=32, max_num_train_steps=max_steps)
    return float(trainer.run_history.get_latest_metric("eval_loss_epoch"))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["timm", "transformers", "both"], default="both")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer updates")
    parser.add_argument("--no-progress-bar", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    if args.model in ("timm", "both"):
        results["timm_eval_loss"] = train_timm(args.epochs, not args.no_progress_bar, args.max_steps)
    if args.model in ("transformers", "both"):
        results["transformers_eval_loss"] = train_transformers(args.epochs, not args.no_progress_bar, args.max_steps)
    print(results)
    return results


if __name__ == "__main__":
    main()
